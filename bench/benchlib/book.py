"""``--book``: every figure the book quotes, measured in one run on this machine.

The chapters' "What can still go wrong" sections compare the steps with each
other: keep-alive against a new connection per request, threads against
processes, a fork per connection against forking once. Each figure here is one
server command and one wrk command, both printed in the book next to the
figure, run against a release build. Like the main benchmark, the run is
interleaved: round 1 measures every figure once, then round 2, and so on, so
that other work on the machine slows every figure a little rather than one
figure a lot; the book shows the median of the rounds.

The run writes two files, which the book includes and the tests read:

- ``book/figures.md``: one table per chapter, between ``ANCHOR: chNN`` markers;
- ``book/figures.json``: the same figures, machine-readable.

``book/claims.json`` lists every comparison the book's prose makes ("keep-alive
is worth at least a factor of two"). After measuring, this module checks each
of them against the new figures and says which ones do not hold on this
machine; ``tests/book_figures.rs`` checks them against the committed figures.
"""

import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

from . import paths, procs, report, runner

PACKAGES = ("step03-parser", "step04-thread-pool", "step05-wsgi", "step06-fork",
            "step07-prefork-wsgi")

BOOK = os.path.join(paths.REPO, "book")
FIGURES_MD = os.path.join(BOOK, "figures.md")
FIGURES_JSON = os.path.join(BOOK, "figures.json")
CLAIMS_JSON = os.path.join(BOOK, "claims.json")

#: How long each wrk run lasts, as printed in the book's commands.
DURATION_S = 3
#: A silent client connects this often while wrk runs (chapters 3 and 4).
SILENT_EVERY_S = 1.5
#: When the late client of chapter 4 makes its request, after wrk has started.
LATE_AFTER_S = 0.5


class Figure:
    """One measured figure: a server started one way, loaded by one wrk command."""

    def __init__(self, fid, label, package, args, connections, path="/", close=False,
                 app_dir=None, silent=False, late=False):
        self.fid = fid
        self.label = label
        self.package = package
        self.args = list(args)
        self.connections = connections
        self.path = path
        self.close = close
        #: The step folder whose tests/ holds fixture_app.py, for the WSGI steps.
        self.app_dir = app_dir
        self.silent = silent
        #: Whether one more client makes a request LATE_AFTER_S into the run, and is timed.
        self.late = late

    def server_argv(self, port):
        binary = os.path.join(paths.TARGET_RELEASE, self.package)
        if self.app_dir:
            # Run from steps/NN/tests, as the book does, so fixture_app imports.
            binary = os.path.relpath(binary, self.cwd())
        return [binary, "--bind", f"127.0.0.1:{port}"] + self.args

    def cwd(self):
        return os.path.join(paths.REPO, "steps", self.app_dir, "tests") if self.app_dir else paths.REPO

    def server_command(self):
        """The server command as the book prints it."""
        argv = self.server_argv("PORT")
        argv[0] = os.path.relpath(os.path.join(paths.TARGET_RELEASE, self.package),
                                  self.cwd())
        text = " ".join(argv)
        if self.app_dir:
            text = f"cd steps/{self.app_dir}/tests && {text}"
        return text

    def wrk_argv(self, port):
        argv = ["wrk", "-t1", f"-c{self.connections}", f"-d{DURATION_S}s"]
        if self.close:
            argv += ["-H", "Connection: close"]
        return argv + [f"http://127.0.0.1:{port}{self.path}"]

    def load_command(self):
        """The wrk command as the book prints it."""
        return " ".join(f"'{a}'" if " " in a else a for a in self.wrk_argv("PORT"))

    def meanwhile(self):
        """What else happens during the run, or None."""
        if self.silent:
            return f"a client that connects and sends nothing arrives every {SILENT_EVERY_S} s"
        if self.late:
            return (f"{LATE_AFTER_S} s into the run, one more client connects and makes one "
                    "request")
        return None


STEP_TIMEOUT = ["--timeout", "2"]

#: Every figure the book quotes, in the order a round measures them.
FIGURES = [
    Figure("step03", "step 03, one connection at a time", "step03-parser", STEP_TIMEOUT, 4),
    Figure("step03-silent", "step 03, with silent clients", "step03-parser", STEP_TIMEOUT, 4,
           silent=True),
    Figure("step04-close", "step 04, `Connection: close`", "step04-thread-pool", STEP_TIMEOUT, 4,
           close=True),
    Figure("step04-keepalive", "step 04, keep-alive", "step04-thread-pool", STEP_TIMEOUT, 4,
           late=True),
    Figure("step04-keepalive-c3", "step 04, keep-alive, 3 connections", "step04-thread-pool",
           STEP_TIMEOUT, 3, late=True),
    Figure("step04-silent", "step 04, 3 connections, with silent clients", "step04-thread-pool",
           STEP_TIMEOUT, 3,
           silent=True),
    Figure("step04-flood", "step 04, 100 connections", "step04-thread-pool", STEP_TIMEOUT, 100),
    Figure("step05-cpu", "step 05, 4 threads, `/cpu`", "step05-wsgi", ["fixture_app:app"], 8,
           path="/cpu", close=True, app_dir="05-wsgi"),
    Figure("step05-cpu-1thread", "step 05, 1 thread, `/cpu`", "step05-wsgi",
           ["--threads", "1", "fixture_app:app"], 8, path="/cpu", close=True, app_dir="05-wsgi"),
    Figure("step05-hello", "step 05, 4 threads, `/`", "step05-wsgi", ["fixture_app:app"], 8,
           close=True, app_dir="05-wsgi"),
    Figure("step06-hello", "step 06, `/`", "step06-fork", ["fixture_app:app"], 8, close=True,
           app_dir="06-fork"),
    Figure("step06-hello-keepalive", "step 06, `/`, keep-alive", "step06-fork",
           ["fixture_app:app"], 8, app_dir="06-fork"),
    Figure("step07-w1-hello", "step 07, 1 worker, `/`", "step07-prefork-wsgi",
           ["--workers", "1", "fixture_app:app"], 8, close=True, app_dir="07-prefork-wsgi"),
    Figure("step07-w2-hello", "step 07, 2 workers, `/`", "step07-prefork-wsgi",
           ["--workers", "2", "fixture_app:app"], 8, close=True, app_dir="07-prefork-wsgi"),
    Figure("step07-w4-hello", "step 07, 4 workers, `/`", "step07-prefork-wsgi",
           ["--workers", "4", "fixture_app:app"], 8, close=True, app_dir="07-prefork-wsgi"),
    Figure("step07-w1-cpu", "step 07, 1 worker, `/cpu`", "step07-prefork-wsgi",
           ["--workers", "1", "fixture_app:app"], 8, path="/cpu", close=True,
           app_dir="07-prefork-wsgi"),
    Figure("step07-w2-cpu", "step 07, 2 workers, `/cpu`", "step07-prefork-wsgi",
           ["--workers", "2", "fixture_app:app"], 8, path="/cpu", close=True,
           app_dir="07-prefork-wsgi"),
]
BY_ID = {f.fid: f for f in FIGURES}

#: The table each chapter includes, and the figures in it (earlier chapters' figures
#: may appear again for comparison; later ones never do).
CHAPTERS = {
    "ch03": ["step03", "step03-silent"],
    "ch04": ["step03", "step04-close", "step04-keepalive", "step04-keepalive-c3",
             "step03-silent", "step04-silent", "step04-flood"],
    "ch05": ["step05-cpu", "step05-cpu-1thread", "step05-hello"],
    "ch06": ["step05-hello", "step06-hello", "step06-hello-keepalive"],
    "ch07": ["step05-hello", "step06-hello", "step07-w1-hello", "step07-w2-hello",
             "step07-w4-hello", "step05-cpu", "step07-w1-cpu", "step07-w2-cpu"],
}


def silent_clients(port, stop):
    """Connects a client that sends nothing every SILENT_EVERY_S until ``stop`` is set."""
    held = []
    try:
        while not stop.is_set():
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                pass
            stop.wait(SILENT_EVERY_S)
    finally:
        for s in held:
            s.close()


def late_client(port, out):
    """After LATE_AFTER_S, one GET on a new connection; stores how long it took in ``out``."""
    time.sleep(LATE_AFTER_S)
    t0 = time.perf_counter()
    try:
        status, _ = runner.get(port, "/", timeout=DURATION_S + 10)
        out["late_wait_s"] = time.perf_counter() - t0 if status == 200 else None
    except OSError:
        out["late_wait_s"] = None


def run_wrk(fig, port):
    """wrk as the book prints it, plus report.lua for exact counts; returns its JSON."""
    argv = fig.wrk_argv(port)
    argv[1:1] = ["-s", os.path.join(paths.WRK_DIR, "report.lua")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    runner.LIVE[proc.pid] = proc
    try:
        out, _ = proc.communicate(timeout=DURATION_S + 30)
    finally:
        if proc.poll() is None:
            procs.stop_tree(proc)
        runner.LIVE.pop(proc.pid, None)
    for line in out.splitlines():
        if line.startswith("BENCH-JSON "):
            return json.loads(line[len("BENCH-JSON "):])
    raise RuntimeError("wrk printed no result:\n" + out[-1000:])


def measure(fig, log_dir, rnd):
    """One run of one figure; returns a dict with rps and wrk's counts, or an error."""
    port = runner.free_port()
    log_path = os.path.join(log_dir, f"{rnd}-{fig.fid}.log")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("VIRTUAL_ENV", None)  # the fixture app needs only the standard library
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(fig.server_argv(port), cwd=fig.cwd(), env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    runner.LIVE[proc.pid] = proc
    proc.spawned_at = time.perf_counter()
    stop = threading.Event()
    silent = None
    late = {}
    late_thread = None
    try:
        runner.wait_ready(proc, port, 20.0)
        for _ in range(10):  # warm-up: the first requests import, allocate, start threads
            runner.get(port)
        if fig.silent:
            silent = threading.Thread(target=silent_clients, args=(port, stop), daemon=True)
            silent.start()
        if fig.late:
            late_thread = threading.Thread(target=late_client, args=(port, late), daemon=True)
            late_thread.start()
        wrk = run_wrk(fig, port)
        if late_thread:
            late_thread.join(timeout=15)
        seconds = wrk["duration_us"] / 1e6
        return {"round": rnd, "rps": wrk["requests"] / seconds, "requests": wrk["requests"],
                "non_2xx": wrk["status_errors"], "answered_200": wrk["requests"] - wrk["status_errors"],
                "timeouts": wrk["timeouts"],
                "socket_errors": wrk["connect_errors"] + wrk["read_errors"] + wrk["write_errors"],
                "late_wait_s": late.get("late_wait_s"), "loadavg_1m": runner.load_average()}
    except (OSError, RuntimeError, runner.NotReady) as e:
        return {"round": rnd, "error": f"{type(e).__name__}: {e}; {runner.tail(log_path)}"}
    finally:
        stop.set()
        if silent:
            silent.join(timeout=5)
        procs.stop_tree(proc)
        runner.LIVE.pop(proc.pid, None)


def main(args, setup):
    missing = [p for p in PACKAGES if p in setup.missing]
    if missing:
        raise SystemExit("cannot measure the book's figures: " + "; ".join(
            f"{p}: {setup.missing[p]}" for p in missing))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = os.path.join(paths.OUT, "logs", "book-" + stamp)
    os.makedirs(log_dir, exist_ok=True)
    started = datetime.datetime.now()
    runs = {f.fid: [] for f in FIGURES}
    total = args.rounds * len(FIGURES)
    n = 0
    for rnd in range(1, args.rounds + 1):
        # Rotate the order every round, so no figure always runs first or last.
        k = (rnd - 1) % len(FIGURES)
        for fig in FIGURES[k:] + FIGURES[:k]:
            n += 1
            rec = measure(fig, log_dir, rnd)
            runs[fig.fid].append(rec)
            shown = rec.get("error") or (f"{rec['rps']:>10,.1f} req/s  non-2xx {rec['non_2xx']}"
                                         f"  timeouts {rec['timeouts']}")
            print(f"[{n}/{total}] round {rnd} {fig.fid:<24} {shown}", file=sys.stderr)
    data = summarize(runs, args, started)
    with open(FIGURES_JSON, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    with open(FIGURES_MD, "w") as f:
        f.write(render(data))
    print(f"wrote {os.path.relpath(FIGURES_MD, paths.REPO)} and "
          f"{os.path.relpath(FIGURES_JSON, paths.REPO)}", file=sys.stderr)
    failed = check_claims(data)
    return 1 if failed else 0


def summarize(runs, args, started):
    loads = [r["loadavg_1m"] for rs in runs.values() for r in rs if r.get("loadavg_1m") is not None]
    figures = {}
    for fig in FIGURES:
        ok = [r for r in runs[fig.fid] if "error" not in r]
        entry = {"label": fig.label, "server": fig.server_command(), "load": fig.load_command(),
                 "meanwhile": fig.meanwhile(), "build": "release", "rounds": len(ok),
                 "errors": [r["error"] for r in runs[fig.fid] if "error" in r]}
        for key in ("rps", "requests", "non_2xx", "answered_200", "timeouts", "socket_errors",
                    "late_wait_s"):
            values = [r[key] for r in ok if r.get(key) is not None]
            entry[key] = statistics.median(values) if values else None
        figures[fig.fid] = entry
    m = report.machine()
    return {
        "meta": {"date": started.strftime("%Y-%m-%d %H:%M"), "machine": m,
                 "command": "python3 bench/bench.py --book", "rounds": args.rounds,
                 "duration_s": DURATION_S,
                 "loadavg_1m": [min(loads), max(loads)] if loads else None},
        "figures": figures,
    }


def _fmt(value):
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def render(data):
    meta = data["meta"]
    m = meta["machine"]
    load = meta["loadavg_1m"]
    busy = load and load[1] > 0.75 * m["nproc"]
    where = (f"Measured {meta['date']} on {m['nproc']} × {m['cpu']}, Linux {m['kernel']}"
             + (f", load average {load[0]:.1f} to {load[1]:.1f}" if load else "")
             + (" (other work shared the machine)" if busy else "")
             + f", by `{meta['command']}`: release builds (`cargo build --release`), the median "
             f"of {meta['rounds']} interleaved rounds of {meta['duration_s']} s wrk runs, server "
             "and wrk sharing the machine's cores.")
    lines = ["# Figures quoted in the book", "",
             "<!-- Written by `python3 bench/bench.py --book`; rerun it rather than editing by "
             "hand. The chapters include the tables by anchor; tests/book_figures.rs checks "
             "book/claims.json against book/figures.json. -->", ""]
    for chapter, ids in CHAPTERS.items():
        notes = {fid: notes_of(data["figures"][fid]) for fid in ids}
        extra = any(notes.values())
        lines += [f"<!-- ANCHOR: {chapter} -->",
                  "| figure | requests/s |" + (" also measured |" if extra else ""),
                  "|---|--:|" + ("---|" if extra else "")]
        for fid in ids:
            fig = data["figures"][fid]
            failed = "" if fig["rps"] is not None else " (failed: " + "; ".join(fig["errors"])[:200] + ")"
            lines.append(f"| {fig['label']}{failed} | {_fmt(fig['rps'])} |"
                         + (f" {notes[fid]} |" if extra else ""))
        lines += ["", "How each figure was measured: the server, in one terminal, then the load, "
                  "in another (`PORT` is any free port):", ""]
        for fid in ids:
            fig = data["figures"][fid]
            meanwhile = f"; meanwhile {fig['meanwhile']}" if fig["meanwhile"] else ""
            lines.append(f"- {fig['label']}: `{fig['server']}`, then `{fig['load']}`{meanwhile}.")
        lines += ["", where, f"<!-- ANCHOR_END: {chapter} -->", ""]
    return "\n".join(lines)


def notes_of(fig):
    """What a figure measured besides its rate, in words (or "")."""
    also = []
    if fig["non_2xx"]:
        also.append(f"{fig['non_2xx']:,.0f} of {fig['requests']:,.0f} answers were 503")
    if fig["late_wait_s"] is not None:
        also.append(f"the late client waited {fig['late_wait_s'] * 1000:,.1f} ms")
    return "; ".join(also)


def rerender():
    """Writes figures.md again from figures.json, measuring nothing (after a wording change)."""
    with open(FIGURES_JSON) as f:
        data = json.load(f)
    with open(FIGURES_MD, "w") as f:
        f.write(render(data))
    return check_claims(data)


def figure_value(data, ref):
    """The number a claim names: a constant, or ``figure-id.field``."""
    if isinstance(ref, (int, float)):
        return ref
    fid, field = ref.rsplit(".", 1)
    return data["figures"][fid][field]


def check_claims(data):
    """Prints each claim of book/claims.json that the figures in ``data`` do not support."""
    if not os.path.exists(CLAIMS_JSON):
        return 0
    with open(CLAIMS_JSON) as f:
        claims = json.load(f)
    failed = 0
    for claim in claims:
        left = figure_value(data, claim["left"])
        right = figure_value(data, claim["right"])
        factor = claim.get("factor", 1)
        if left is None or right is None:
            holds = False
        elif claim["op"] == ">=":
            holds = left >= factor * right
        else:
            holds = left <= factor * right
        if not holds:
            failed += 1
            print(f"on this machine the book's claim does not hold: {claim['chapter']}: "
                  f"\"{claim['says']}\" ({claim['left']} = {left} {claim['op']} {factor} × "
                  f"{claim['right']} = {right})", file=sys.stderr)
    print(f"{len(claims) - failed} of {len(claims)} claims of the book hold on this machine",
          file=sys.stderr)
    return failed
