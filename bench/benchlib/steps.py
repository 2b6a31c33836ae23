"""``--steps``: the book's step binaries against minigun, for the book's appendix.

Three steps of the book change how the server copes with load: step 03
serves one connection at a time, step 04 hands connections to a thread
pool, step 07 forks workers that share the listener. Each is measured like
minigun on two things:

- hello keep-alive req/s: wrk at 64 connections, server pinned to core 0 and
  wrk to core 1, as in the main benchmark;
- what a normal client sees while one slow client holds a connection open:
  the slow client connects and sends half a request head, then nothing; a
  normal client then makes a few requests, each on a new connection, and we
  record how long each took or whether it timed out.

A step that does not build or does not start yet is reported as such and
skipped; the steps are written alongside this harness.
"""

import datetime
import json
import os
import socket
import statistics
import sys
import time

from . import paths, procs, report, runner
from .workloads import BY_NAME as WORKLOADS

PACKAGES = ("step03-parser", "step04-thread-pool", "step07-prefork-wsgi")

#: How many requests the normal client makes, and the longest it waits for one.
NORMAL_REQUESTS = 5
PATIENCE_S = 8.0
#: The whole slow-client test gives up after this long.
SLOW_TEST_BUDGET_S = 15.0
#: --timeout for the steps that have one (03, 04): how long they wait for a
#: whole request head before answering 408. Their default, 30 s, is longer
#: than the test's patience; 5 s shows the same behaviour sooner.
STEP_TIMEOUT_S = "5"


def _step_bin(pkg):
    return os.path.join(paths.TARGET_RELEASE, pkg)


def candidates():
    """(name, cargo package, how it runs, argv builder) for each server in the comparison."""
    app = "bench_apps:hello"
    return [
        ("step 03", "step03-parser", f"one connection at a time, `--timeout {STEP_TIMEOUT_S}`",
         lambda port: [_step_bin("step03-parser"), "--bind", f"127.0.0.1:{port}",
                       "--timeout", STEP_TIMEOUT_S]),
        ("step 04", "step04-thread-pool", f"thread pool (default 4 threads), `--timeout {STEP_TIMEOUT_S}`",
         lambda port: [_step_bin("step04-thread-pool"), "--bind", f"127.0.0.1:{port}",
                       "--timeout", STEP_TIMEOUT_S]),
        ("step 07", "step07-prefork-wsgi", "prefork WSGI, `--workers 2`",
         lambda port: [_step_bin("step07-prefork-wsgi"), "--bind", f"127.0.0.1:{port}",
                       "--workers", "2", app]),
        ("minigun", "minigun", "`-w 1 --threads 1`",
         lambda port: [paths.MINIGUN_BIN, "-b", f"127.0.0.1:{port}", "-w", "1", "--threads", "1",
                       "--chdir", paths.APPS, app]),
    ]


def timed_get(port, timeout):
    """Seconds one GET on a new connection took, or None when it timed out or failed."""
    t0 = time.perf_counter()
    try:
        status, _ = runner.get(port, "/", timeout=timeout)
    except (OSError, Exception):
        return None
    return time.perf_counter() - t0 if status == 200 else None


def normal_client(port, deadline):
    """NORMAL_REQUESTS timed GETs, each within the time left before ``deadline``."""
    out = []
    for _ in range(NORMAL_REQUESTS):
        left = deadline - time.perf_counter()
        if left <= 0.1:
            out.append(None)
            continue
        out.append(timed_get(port, min(PATIENCE_S, left)))
    return out


def slow_client_test(port):
    """Latencies of a normal client alone, then while a slow client holds a connection."""
    alone = normal_client(port, time.perf_counter() + SLOW_TEST_BUDGET_S)
    slow = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        # Half a head: a slowloris. The server must wait for the rest, or time it out.
        slow.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
        time.sleep(0.2)  # let the server accept it and start reading
        with_slow = normal_client(port, time.perf_counter() + SLOW_TEST_BUDGET_S)
    finally:
        slow.close()
    return alone, with_slow


def _latency_summary(samples):
    ok = [s * 1000 for s in samples if s is not None]
    return {"p50_ms": statistics.median(ok) if ok else None, "max_ms": max(ok) if ok else None,
            "failed": sum(1 for s in samples if s is None), "of": len(samples)}


def main(args, setup):
    duration = args.duration
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = os.path.join(paths.OUT, "logs", "steps-" + stamp)
    os.makedirs(log_dir, exist_ok=True)
    runner.set_affinity({int(runner.WRK_CORE)})
    results = {}
    for rnd in range(1, args.rounds + 1):
        for name, package, how, build in candidates():
            res = results.setdefault(name, {"how": how, "runs": []})
            port = runner.free_port()
            argv = build(port)
            if package in setup.missing:
                # Never run a stale binary left by an earlier, successful build.
                res["error"] = setup.missing[package]
                continue
            if not os.path.exists(argv[0]):
                res["error"] = f"{os.path.relpath(argv[0], paths.REPO)} not built"
                continue
            if res.get("error", "").startswith("did not start"):
                continue  # it failed once: it will fail again
            log_path = os.path.join(log_dir, f"{name.replace(' ', '')}-{rnd}.log")
            proc = runner.spawn(argv, True, log_path)
            proc.spawned_at = time.perf_counter()
            try:
                try:
                    runner.wait_ready(proc, port, 10.0)
                except runner.NotReady as e:
                    res["error"] = f"did not start: {e}; {runner.tail(log_path)}"
                    print(f"round {rnd} {name}: {res['error']}", file=sys.stderr)
                    continue
                wrk = runner.run_wrk(port, "/", WORKLOADS["hello"], duration, args.connections, True)
                errors = (wrk["connect_errors"] + wrk["read_errors"] + wrk["write_errors"]
                          + wrk["timeouts"] + wrk["status_errors"])
                alone, with_slow = slow_client_test(port)
                run = {"round": rnd, "rps": wrk["requests"] / (wrk["duration_us"] / 1e6),
                       "errors": errors, "p99_ms": wrk["p99_us"] / 1000,
                       "alone": alone, "with_slow": with_slow}
                res["runs"].append(run)
                ws = _latency_summary(with_slow)
                print(f"round {rnd} {name:<8} {run['rps']:>9,.0f} req/s  with a slow client: "
                      f"max {ws['max_ms'] or 0:,.0f} ms, {ws['failed']}/{ws['of']} failed", file=sys.stderr)
            except (OSError, RuntimeError) as e:
                res["error"] = f"{type(e).__name__}: {e}"
            finally:
                procs.stop_tree(proc)
                runner.LIVE.pop(proc.pid, None)
    runner.set_affinity(None)
    md = render(results, args, setup, duration)
    print(md)
    base = os.path.join(paths.OUT, f"steps-{stamp}")
    with open(base + ".md", "w") as f:
        f.write(md)
    with open(base + ".json", "w") as f:
        json.dump(results, f, indent=1)
    full = not args.quick and args.rounds >= 3
    if args.results == "yes" or (args.results == "auto" and full):
        with open(paths.STEPS_RESULTS_MD, "w") as f:
            f.write(md)
        print(f"wrote {os.path.relpath(paths.STEPS_RESULTS_MD, paths.REPO)}", file=sys.stderr)
    return 0


def render(results, args, setup, duration):
    m = report.machine()
    lines = [
        "# Steps compared with minigun",
        "",
        "<!-- Written by `python3 bench/bench.py --steps`; rerun it rather than editing by hand. -->",
        "<!-- ANCHOR: results -->",
        f"Measured {datetime.datetime.now():%Y-%m-%d %H:%M} on {m['nproc']} × {m['cpu']}, Linux {m['kernel']}: "
        f"server pinned to core 0, wrk to core 1, {args.rounds} round(s) of {duration} s at "
        f"{args.connections} connections (median req/s). The slow client sends half a request head "
        f"and then nothing; meanwhile a normal client makes {NORMAL_REQUESTS} requests, each on a new "
        f"connection, waiting up to {PATIENCE_S:.0f} s for each.",
        "",
        "| server | how it serves | hello keep-alive req/s | errors | normal client alone: p50 ms "
        "| with one slow client: p50 ms | max ms | failed or timed out |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, res in results.items():
        runs = res["runs"]
        if not runs:
            lines.append(report._row([name, res["how"], "not yet measured: "
                                      + report._short(res.get("error", "?"), 120)], 8))
            continue
        rps = statistics.median(r["rps"] for r in runs)
        alone = _latency_summary([s for r in runs for s in r["alone"]])
        ws = _latency_summary([s for r in runs for s in r["with_slow"]])
        fmt = lambda v: "–" if v is None else f"{v:,.1f}"
        lines.append(f"| {name} | {res['how']} | {rps:,.0f} | {sum(r['errors'] for r in runs):,} "
                     f"| {fmt(alone['p50_ms'])} | {fmt(ws['p50_ms'])} | {fmt(ws['max_ms'])} "
                     f"| {ws['failed']} of {ws['of']} |")
    lines += ["<!-- ANCHOR_END: results -->", ""]
    return "\n".join(lines)
