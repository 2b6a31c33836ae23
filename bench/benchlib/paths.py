"""Where the benchmark's files live, all relative to the repository."""

import os

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
APPS = os.path.join(BENCH, "apps")
WRK_DIR = os.path.join(BENCH, "wrk")
VENV = os.path.join(BENCH, ".venv")
VENV_BIN = os.path.join(VENV, "bin")
OUT = os.path.join(BENCH, "out")  # gitignored: logs, raw JSON, per-run tables
DATA_FILE = os.path.join(OUT, "data", "1mib.bin")
REQUIREMENTS = os.path.join(BENCH, "requirements.txt")
RESULTS_MD = os.path.join(BENCH, "RESULTS.md")
STEPS_RESULTS_MD = os.path.join(BENCH, "RESULTS-steps.md")
# cargo puts its output in $CARGO_TARGET_DIR when that is set.
TARGET_RELEASE = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "release")
MINIGUN_BIN = os.path.join(TARGET_RELEASE, "minigun")


def venv_bin(name):
    """Path of an executable installed in the benchmark's venv."""
    return os.path.join(VENV_BIN, name)
