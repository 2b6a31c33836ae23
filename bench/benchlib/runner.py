"""One measured run: start a server, wait for its first 200, drive wrk, stop it.

The sequence for every run, whatever the server:

1. pick a free port on 127.0.0.1 and spawn the server in its own session
   (so its process group is exactly what it forks), pinned to core 0 when the
   configuration asks for it;
2. poll the port with a real GET until the first 200, within a deadline: the
   time from spawn to that answer is the start-up time;
3. a few requests of warm-up, then CPU time of the tree, wrk (pinned to core 1
   when pinned), CPU time again, with an RSS sampler running alongside;
4. SIGKILL the process group (and any straggler seen in the tree), always,
   also on errors and Ctrl+C.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import time

from . import paths, procs

HOST = "127.0.0.1"
SERVER_CORE = "0"
WRK_CORE = "1"

#: Popen objects that must die if the harness is interrupted (servers and wrk)
LIVE = {}


def free_port():
    """A port nobody listens on right now (bound to 0, read back, released)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get(port, path="/", timeout=2.0):
    """One GET on a fresh connection; returns (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def spawn(argv, pinned, log_path, env=None):
    """Starts a server in a new session, its output to ``log_path``."""
    if pinned:
        argv = ["taskset", "-c", SERVER_CORE] + list(argv)
    full_env = dict(os.environ)
    # Every server imports bench_apps from bench/apps.
    full_env["PYTHONPATH"] = paths.APPS + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env["PYTHONDONTWRITEBYTECODE"] = "1"
    full_env.update(env or {})
    log = open(log_path, "wb")
    try:
        proc = subprocess.Popen(argv, cwd=paths.APPS, env=full_env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()
    LIVE[proc.pid] = proc
    return proc


def wait_ready(proc, port, deadline_s, path="/"):
    """Polls until the server answers 200; returns seconds since ``proc`` was spawned.

    Raises ``NotReady`` when the process exits, answers something else than
    200 for a whole second, or the deadline passes.
    """
    start = proc.spawned_at
    last = "no answer"
    first_bad = None
    while True:
        now = time.perf_counter()
        if proc.poll() is not None:
            raise NotReady(f"exited with code {proc.returncode} before answering")
        if now - start > deadline_s:
            raise NotReady(f"not answering 200 after {deadline_s:.0f} s ({last})")
        try:
            status, _ = get(port, path, timeout=1.0)
            if status == 200:
                return time.perf_counter() - start
            last = f"answered {status}"
            first_bad = first_bad or now
            if now - first_bad > 1.0:
                raise NotReady(last)
        except (OSError, http.client.HTTPException) as e:
            last = type(e).__name__
        time.sleep(0.005)


class NotReady(Exception):
    """The server did not start serving; the message says how it failed."""


def run_wrk(port, path, workload, duration, connections, pinned):
    """Runs wrk against the server; returns the parsed BENCH-JSON line plus wrk's text."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
            "--timeout", "5s"]
    if "-s" not in workload.wrk_args:
        argv += ["-s", "report.lua"]
    argv += list(workload.wrk_args) + [f"http://{HOST}:{port}{path}"]
    if pinned:
        argv = ["taskset", "-c", WRK_CORE] + argv
    # Its own session too, so stopping it (on a hang or Ctrl+C) is the same
    # process-group kill as for servers.
    proc = subprocess.Popen(argv, cwd=paths.WRK_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    LIVE[proc.pid] = proc
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    finally:
        if proc.poll() is None:
            procs.stop_tree(proc)
        LIVE.pop(proc.pid, None)
    for line in out.splitlines():
        if line.startswith("BENCH-JSON "):
            result = json.loads(line[len("BENCH-JSON "):])
            result["wrk_output"] = out
            return result
    raise RuntimeError("wrk printed no result:\n" + out[-1000:])


def measure(server, workload, config, duration=5, connections=64, log_dir=None, tmp_dir=None,
            round_no=1, ready_deadline=15.0):
    """One run of ``server`` on ``workload`` in ``config``; returns a dict of figures.

    On failure the dict has "error" and no figures.
    """
    port = free_port()
    argv = server.command(port, config.workers, workload, tmp_dir)
    log_path = os.path.join(log_dir, f"{round_no}-{config.name}-{workload.name}-{server.name}.log")
    record = {"server": server.name, "workload": workload.name, "config": config.name,
              "threads": server.threads_for(workload),
              "workers": 1 if server.single_process else config.workers,
              "argv": argv, "log": os.path.relpath(log_path, paths.BENCH)}
    # In the pinned configuration the harness itself keeps to wrk's core, so
    # its sampling never steals the server's core; unpinned, it may use both.
    record["loadavg_1m"] = load_average()
    set_affinity({int(WRK_CORE)} if config.pinned else None)
    proc = spawn(argv, config.pinned, log_path)
    proc.spawned_at = time.perf_counter()
    sampler = None
    try:
        try:
            record["startup_s"] = wait_ready(proc, port, ready_deadline)
        except NotReady as e:
            record["error"] = f"did not start: {e}; " + tail(log_path)
            return record
        for _ in range(20):  # warm-up: first requests may import, allocate, spawn threads
            get(port)
        tree = procs.process_tree(proc.pid)
        cpu_before = procs.cpu_seconds(tree)
        with procs.RssSampler(proc.pid) as sampler:
            wrk = run_wrk(port, "/", workload, duration, connections, config.pinned)
        cpu_after = procs.cpu_seconds(sampler.seen)
        if proc.poll() is not None:
            record["error"] = f"server exited with code {proc.returncode} during the run; " + tail(log_path)
        seconds = wrk["duration_us"] / 1e6
        errors = (wrk["connect_errors"] + wrk["read_errors"] + wrk["write_errors"]
                  + wrk["timeouts"] + wrk["status_errors"])
        cpu = cpu_after - cpu_before
        record.update(
            requests=wrk["requests"],
            rps=wrk["requests"] / seconds,
            p50_ms=wrk["p50_us"] / 1000, p99_ms=wrk["p99_us"] / 1000,
            max_ms=wrk["max_us"] / 1000,
            errors=errors,
            socket_errors={k: wrk[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")},
            non_2xx=wrk["status_errors"],
            cpu_s=cpu,
            # Requests answered per CPU-second the server's tree used: the
            # steadier figure when wrk and the server share a small machine.
            req_per_cpu_s=(wrk["requests"] / cpu) if cpu > 0 else None,
            # Cores the server kept busy: near 1.0 pinned means it was CPU-bound
            # and had its core; well below, it waited (on wrk, on neighbours).
            cpu_cores_used=cpu / seconds,
            peak_rss_kib=sampler.peak_tree_kib,
            peak_master_rss_kib=sampler.peak_root_kib,
            peak_worker_rss_kib=sampler.peak_worker_kib,
            processes=len(sampler.seen),
            wrk_output=wrk["wrk_output"],
        )
        return record
    except (OSError, RuntimeError, http.client.HTTPException) as e:
        record["error"] = f"{type(e).__name__}: {e}"
        return record
    finally:
        procs.stop_tree(proc, sampler.seen if sampler else None)
        LIVE.pop(proc.pid, None)


def tail(path, n=3):
    """The last lines of a server's log, for error messages."""
    try:
        with open(path, errors="replace") as f:
            lines = [l.strip() for l in f.read().splitlines() if l.strip()]
        return "log: " + " | ".join(lines[-n:]) if lines else "log empty"
    except OSError:
        return "no log"


def load_average():
    """The 1-minute load average: above ~1 on this 2-core machine means other work is running."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return None


def set_affinity(cores):
    """Pins the harness to ``cores`` (None = all cores of the machine)."""
    if cores is None:
        cores = set(range(os.cpu_count() or 1))
    try:
        os.sched_setaffinity(0, cores)
    except (AttributeError, OSError):
        pass


def kill_everything_started():
    """Last resort on Ctrl+C or a crash: kill what is still running of ours."""
    for pid, proc in list(LIVE.items()):
        if proc.poll() is None:
            try:
                procs.stop_tree(proc)
            except Exception as e:  # keep going: the others must die too
                print(f"could not stop {pid}: {e}", file=sys.stderr)
    LIVE.clear()
