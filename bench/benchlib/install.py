"""Sets up everything the benchmark needs, idempotently, from a fresh clone.

Each piece that fails is reported and skipped rather than stopping the run:
the benchmark still compares whatever did install. ``Setup`` records what is
missing and why, and the report prints it.
"""

import os
import shutil
import subprocess
import sys

from . import paths

# Debian packages: wrk is the load generator, libev-dev lets pip build bjoern,
# nginx is the optional static reference.
APT_PACKAGES = ["wrk", "libev-dev", "nginx"]


class Setup:
    """What is available after set-up, and why anything is not."""

    def __init__(self):
        #: server or tool name -> reason it is unavailable
        self.missing = {}
        #: name -> version string, for the report header
        self.versions = {}

    def note_missing(self, name, reason):
        self.missing[name] = reason
        log(f"  {name}: unavailable ({reason})")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def _run(cmd, **kw):
    """Runs a set-up command, its output going to a log file; returns (ok, tail of output)."""
    os.makedirs(os.path.join(paths.OUT, "logs"), exist_ok=True)
    logname = os.path.join(paths.OUT, "logs", "setup-" + os.path.basename(cmd[0]) + ".log")
    with open(logname, "a") as f:
        f.write("\n$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, **kw)
    with open(logname) as f:
        tail = f.read()[-2000:]
    return rc == 0, tail


def _dpkg_installed(pkg):
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
    )
    return out.returncode == 0 and "install ok installed" in out.stdout


def ensure_apt(setup, packages=APT_PACKAGES):
    """Installs the Debian packages that are missing (apt-get update first, once)."""
    if not shutil.which("dpkg-query"):
        log(f"  not a Debian system: install {', '.join(packages)} yourself")
        return
    missing = [p for p in packages if not _dpkg_installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        log(f"  not root: cannot apt-get install {' '.join(missing)}")
        return
    log(f"  apt-get install {' '.join(missing)}")
    _run(["apt-get", "update"])
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # One package at a time, so nginx failing does not cost us wrk.
    for pkg in missing:
        ok, tail = _run(["apt-get", "install", "-y", "--no-install-recommends", pkg], env=env)
        if not ok:
            log(f"  apt-get install {pkg} failed:\n{tail[-500:]}")


def ensure_venv(setup):
    """Creates bench/.venv and installs each pinned peer that is not there yet."""
    if not os.path.exists(paths.venv_bin("python")):
        log(f"  creating {paths.VENV}")
        ok, tail = _run([sys.executable, "-m", "venv", paths.VENV])
        if not ok:
            setup.note_missing("venv", "python -m venv failed: " + tail[-300:])
            return
    pip = [paths.venv_bin("python"), "-m", "pip"]
    for line in open(paths.REQUIREMENTS):
        req = line.split("#")[0].strip()
        if not req:
            continue
        name = req.split("==")[0]
        wanted = req.split("==")[1] if "==" in req else None
        have = _pip_version(name)
        if have and (wanted is None or have == wanted):
            continue
        log(f"  pip install {req}" + (" (builds from source, takes a minute)" if name == "uwsgi" else ""))
        ok, tail = _run(pip + ["install", "--disable-pip-version-check", "-q", req])
        if not ok:
            # Keep only the last lines: pip's build errors are long.
            setup.note_missing(name, "pip install failed: " + " | ".join(tail.strip().splitlines()[-3:]))


def _pip_version(name):
    """Version of a package in the venv, or None (reads the dist-info, no pip call)."""
    out = subprocess.run(
        [paths.venv_bin("python"), "-c",
         "import importlib.metadata as m, sys\n"
         "try: print(m.version(sys.argv[1]))\n"
         "except m.PackageNotFoundError: pass", name],
        capture_output=True, text=True,
    )
    return out.stdout.strip() or None


def build_minigun(setup, packages=("minigun",)):
    """cargo build --release -p each package; returns the set that built."""
    built = set()
    if not shutil.which("cargo"):
        for p in packages:
            setup.note_missing(p, "cargo not found")
        return built
    for pkg in packages:
        log(f"  cargo build --release -p {pkg}")
        ok, tail = _run(["cargo", "build", "--release", "-p", pkg], cwd=paths.REPO)
        if ok:
            built.add(pkg)
        else:
            lines = [l for l in tail.splitlines() if l.startswith("error")]
            setup.note_missing(pkg, "cargo build failed: " + (lines[0] if lines else tail[-200:]))
    return built


def make_data_file():
    """The 1 MiB file the file_1m app serves (same bytes every time)."""
    os.makedirs(os.path.dirname(paths.DATA_FILE), exist_ok=True)
    if os.path.exists(paths.DATA_FILE) and os.path.getsize(paths.DATA_FILE) == 1 << 20:
        return
    block = bytes(range(256)) * 256  # 64 KiB
    with open(paths.DATA_FILE + ".tmp", "wb") as f:
        for _ in range(16):
            f.write(block)
    os.replace(paths.DATA_FILE + ".tmp", paths.DATA_FILE)


def collect_versions(setup):
    """Versions of every server and of wrk, for the report header."""
    for line in open(paths.REQUIREMENTS):
        name = line.split("#")[0].strip().split("==")[0]
        if name:
            v = _pip_version(name) if os.path.exists(paths.venv_bin("python")) else None
            if v:
                setup.versions[name] = v
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        setup.versions["wrk"] = (out.stdout + out.stderr).split()[1] if (out.stdout + out.stderr).split() else "?"
    if shutil.which("nginx"):
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
        setup.versions["nginx"] = out.stderr.strip().split("/")[-1]
    # "-dirty" when the work tree has uncommitted changes: the figures then
    # belong to code no commit has.
    out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=paths.REPO,
                         capture_output=True, text=True)
    if out.returncode == 0:
        setup.versions["minigun"] = "git " + out.stdout.strip()
    # The servers run the venv's Python (minigun the one it was built against).
    if os.path.exists(paths.venv_bin("python")):
        out = subprocess.run([paths.venv_bin("python"), "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True)
        setup.versions["python"] = out.stdout.strip()


def ensure_all(setup, build=("minigun",)):
    """The whole set-up; returns the packages cargo built."""
    log("setup:")
    ensure_apt(setup)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is required (apt-get install wrk)")
    ensure_venv(setup)
    make_data_file()
    built = build_minigun(setup, build)
    collect_versions(setup)
    return built
