#!/usr/bin/env python3
"""minigun's benchmark: minigun and the WSGI servers people would pick instead, side by side.

    python3 bench/bench.py            # the full run (~25 min), rewrites bench/RESULTS.md
    python3 bench/bench.py --quick    # smoke test: 1 round, 2 s runs, 4 servers
    python3 bench/bench.py --only minigun,bjoern,hello,1w --duration 3
    python3 bench/bench.py --steps    # the book's steps 03/04/07 against minigun
    python3 bench/bench.py --book     # every figure the book quotes (~6 min)

It sets itself up first (Debian's wrk/libev-dev/nginx, the peers in
bench/.venv, ``cargo build --release``), then runs every server on every
workload, interleaved: rounds 1..N, and inside each round every
configuration, workload and server once, so that drift on a shared machine
hits every server alike. Tables are medians of the rounds. See
bench/README.md for what each figure means.
"""

import argparse
import datetime
import fnmatch
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import book, install, paths, report, runner, servers, steps, workloads  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="servers: " + ", ".join(s.name for s in servers.SERVERS)
                                + "\nworkloads: " + ", ".join(w.name for w in workloads.WORKLOADS)
                                + "\nconfigurations: " + ", ".join(c.name for c in workloads.CONFIGS))
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round, 2 s runs, only " + ", ".join(servers.QUICK))
    p.add_argument("--only", default="",
                   help="comma-separated server, workload and configuration names (globs allowed), "
                        "e.g. 'minigun*,bjoern,hello,1w'; each kind not named runs in full")
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 3, --quick 2)")
    p.add_argument("--rounds", type=int, help="rounds; tables show the median (default 3, --quick 1)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--reference", default="bjoern", help="server the ratios divide by (default bjoern)")
    p.add_argument("--steps", action="store_true",
                   help="compare the step binaries 03, 04, 07 with minigun instead (req/s, slow client)")
    p.add_argument("--book", action="store_true",
                   help="measure every figure the book quotes (steps 03-07, release builds) and "
                        "rewrite book/figures.md and book/figures.json")
    p.add_argument("--no-setup", action="store_true", help="skip apt/pip/cargo (use what is there)")
    p.add_argument("--results", choices=("auto", "yes", "no"), default="auto",
                   help="rewrite bench/RESULTS.md (auto: only for a full default run)")
    p.add_argument("--report", metavar="RUN.json",
                   help="measure nothing: redo the tables from a raw bench/out/run-*.json "
                        "(e.g. with another --reference); with --book, book/figures.md from "
                        "book/figures.json")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (2 if args.quick else 3)
    # wrk takes whole seconds.
    args.duration = max(1, int(round(args.duration)))
    return args


def select(args):
    """Applies --quick and --only; returns (servers, workloads, configs) in run order."""
    s_names = [s.name for s in servers.SERVERS]
    w_names = [w.name for w in workloads.WORKLOADS]
    c_names = [c.name for c in workloads.CONFIGS]
    if args.quick:
        s_names = [n for n in s_names if n in servers.QUICK]
    if args.reference not in servers.BY_NAME:
        raise SystemExit(f"--reference {args.reference}: no such server")
    picked = {"s": [], "w": [], "c": []}
    for item in filter(None, (x.strip() for x in args.only.split(","))):
        hit = False
        for kind, names in (("s", [s.name for s in servers.SERVERS]), ("w", w_names), ("c", c_names)):
            for n in names:
                if fnmatch.fnmatch(n, item):
                    picked[kind].append(n)
                    hit = True
        if not hit:
            raise SystemExit(f"--only {item}: matches no server, workload or configuration")
    if picked["s"]:
        s_names = [n for n in [s.name for s in servers.SERVERS] if n in picked["s"]]
    if picked["w"]:
        w_names = [n for n in w_names if n in picked["w"]]
    if picked["c"]:
        c_names = [n for n in c_names if n in picked["c"]]
    return s_names, w_names, c_names


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # SIGTERM (and SIGHUP) unwind like Ctrl+C, through the finally below that
    # kills every process this harness started.
    def interrupted(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    os.makedirs(os.path.join(paths.OUT, "logs"), exist_ok=True)
    if args.report and args.book:
        return 1 if book.rerender() else 0
    if args.report:
        return rerender(args)
    setup = install.Setup()
    packages = ("minigun",) + (steps.PACKAGES if args.steps else ())
    if args.book:
        # Only wrk and the steps' release builds: none of the peer servers.
        if not args.no_setup:
            install.ensure_apt(setup, ["wrk"])
            install.build_minigun(setup, book.PACKAGES)
    elif not args.no_setup:
        install.ensure_all(setup, packages)
    else:
        install.make_data_file()
        install.collect_versions(setup)
    try:
        if args.book:
            return book.main(args, setup)
        if args.steps:
            return steps.main(args, setup)
        return run_peers(args, setup)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the servers this run started", file=sys.stderr)
        return 130
    finally:
        runner.kill_everything_started()


def run_peers(args, setup):
    s_names, w_names, c_names = select(args)
    for name in s_names:
        srv = servers.BY_NAME[name]
        if srv.package in setup.missing:
            continue
        why = srv.unavailable_reason()
        if why:
            setup.note_missing(name, why)
    # minigun's build failure is recorded under the package name.
    if "minigun" in setup.missing:
        for name in s_names:
            if name.startswith("minigun"):
                setup.missing.setdefault(name, setup.missing["minigun"])
    for name in s_names:
        pkg = servers.BY_NAME[name].package
        if pkg and pkg in setup.missing:
            setup.missing.setdefault(name, setup.missing[pkg])

    plan = []
    for rnd in range(1, args.rounds + 1):
        for cname in c_names:
            for wname in w_names:
                # Rotate the server order every round so no server always
                # runs first (on a cold cache) or last.
                k = (rnd - 1) % max(1, len(s_names))
                for sname in s_names[k:] + s_names[:k]:
                    if servers.BY_NAME[sname].runs(workloads.BY_NAME[wname]):
                        plan.append((rnd, cname, wname, sname))
    runnable = [p for p in plan if p[3] not in setup.missing]
    est = len(runnable) * (args.duration + 0.8)  # start-up, warm-up and stop: under a second
    print(f"plan: {len(runnable)} runs of {args.duration} s, {args.rounds} round(s), "
          f"about {est / 60:.0f} min", file=sys.stderr)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = os.path.join(paths.OUT, "logs", stamp)
    tmp_dir = os.path.join(paths.OUT, "tmp")
    os.makedirs(log_dir, exist_ok=True)
    os.makedirs(tmp_dir, exist_ok=True)
    started = datetime.datetime.now()
    runs = []
    try:
        measure_plan(args, plan, setup, runs, log_dir, tmp_dir)
    except KeyboardInterrupt:
        # Keep what was measured: write it (never to RESULTS.md), then stop.
        args.results = "no"
        args.interrupted = True
        write_outputs(args, setup, runs, s_names, w_names, c_names, started, stamp)
        raise
    return write_outputs(args, setup, runs, s_names, w_names, c_names, started, stamp)


def measure_plan(args, plan, setup, runs, log_dir, tmp_dir):
    """Runs the plan in order, appending one record per run to ``runs``."""
    gave_up = {}  # (server, config, workload) -> why it did not start: not retried
    t0 = time.monotonic()
    for i, (rnd, cname, wname, sname) in enumerate(plan, 1):
        if sname in setup.missing:
            continue
        if (sname, cname, wname) in gave_up:
            runs.append({"server": sname, "workload": wname, "config": cname, "round": rnd,
                         "threads": 0, "workers": 0, "error": gave_up[(sname, cname, wname)]})
            continue
        rec = runner.measure(servers.BY_NAME[sname], workloads.BY_NAME[wname],
                             workloads.CONFIG_BY_NAME[cname], duration=args.duration,
                             connections=args.connections, log_dir=log_dir, tmp_dir=tmp_dir,
                             round_no=rnd)
        rec["round"] = rnd
        runs.append(rec)
        if "error" in rec:
            msg = f"FAILED: {rec['error']}"
            if rec["error"].startswith("did not start"):
                # A server that does not start will not start next round
                # either; skip its remaining runs of this workload.
                gave_up[(sname, cname, wname)] = rec["error"]
        else:
            msg = (f"{rec['rps']:>9,.0f} req/s  p99 {rec['p99_ms']:7.2f} ms  "
                   f"errors {rec['errors']:<5} {rec['req_per_cpu_s'] or 0:>9,.0f} req/CPU-s  "
                   f"RSS {rec['peak_rss_kib'] / 1024:5.1f} MiB  start {rec['startup_s'] * 1000:4.0f} ms")
        print(f"[{i}/{len(plan)}] round {rnd} {cname} {wname:<11} {sname:<17} {msg}", file=sys.stderr)
    print(f"measured in {(time.monotonic() - t0) / 60:.1f} min", file=sys.stderr)


def rerender(args):
    """--report: the tables again from a raw JSON file, without measuring."""
    with open(args.report) as f:
        data = json.load(f)
    meta, runs = data["meta"], data["runs"]
    meta["reference"] = args.reference
    seen = lambda field, names: [n for n in names if any(r[field] == n for r in runs)
                                 or (field == "server" and n in meta["missing"])]
    s_names = seen("server", [s.name for s in servers.SERVERS])
    w_names = seen("workload", [w.name for w in workloads.WORKLOADS])
    c_names = seen("config", [c.name for c in workloads.CONFIGS])
    md = render(meta, report.summarize(runs), s_names, w_names, c_names, meta["missing"],
                args.reference)
    print(md)
    if args.results == "yes":
        with open(paths.RESULTS_MD, "w") as f:
            f.write(md)
        print(f"wrote {os.path.relpath(paths.RESULTS_MD, paths.REPO)}", file=sys.stderr)
    return 0


def write_outputs(args, setup, runs, s_names, w_names, c_names, started, stamp):
    summary = report.summarize(runs)
    loads = [r["loadavg_1m"] for r in runs if r.get("loadavg_1m") is not None]
    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M"),
        "machine": report.machine(),
        "versions": setup.versions,
        "missing": setup.missing,
        "command": "python3 bench/bench.py " + " ".join(sys.argv[1:]),
        "interrupted": getattr(args, "interrupted", False),
        "rounds": args.rounds, "duration_s": args.duration, "connections": args.connections,
        "reference": args.reference,
        "loadavg_1m": [min(loads), max(loads)] if loads else None,
    }
    md = render(meta, summary, s_names, w_names, c_names, setup.missing, args.reference)
    if meta.get("interrupted"):
        md = md.replace("<!-- ANCHOR: results -->", "<!-- ANCHOR: results -->\n**Interrupted: partial results.**\n", 1)
    print(md)
    base = os.path.join(paths.OUT, f"run-{stamp}")
    with open(base + ".md", "w") as f:
        f.write(md)
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "runs": runs}, f, indent=1)
    with open(os.path.join(paths.OUT, "latest.md"), "w") as f:
        f.write(md)
    print(f"\nwrote {os.path.relpath(base, paths.REPO)}.md and .json", file=sys.stderr)
    full = not args.quick and not args.only and args.rounds >= 3
    if args.results == "yes" or (args.results == "auto" and full):
        with open(paths.RESULTS_MD, "w") as f:
            f.write(md)
        print(f"wrote {os.path.relpath(paths.RESULTS_MD, paths.REPO)}", file=sys.stderr)
    return 0


def render(meta, summary, s_names, w_names, c_names, missing, reference):
    m = meta["machine"]
    v = meta["versions"]
    lines = [
        "# Benchmark results",
        "",
        "<!-- Written by bench/bench.py; rerun it rather than editing by hand. -->",
        "<!-- ANCHOR: results -->",
        f"Measured {meta['date']} on {m['nproc']} × {m['cpu']}, {m['memory']} RAM, Linux {m['kernel']}, "
        f"with `{meta['command'].strip()}`: {meta['rounds']} interleaved round(s) of "
        f"{meta['duration_s']} s wrk runs at {meta['connections']} connections; each cell is the median "
        f"of the rounds. Ratios (× ref) divide by {reference} in the same table.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in sorted(v.items())) + ".",
        "",
    ]
    if meta.get("loadavg_1m"):
        lo, hi = meta["loadavg_1m"]
        lines += [f"Load average (1 min) when each run started: {lo:.1f} to {hi:.1f} on {m['nproc']} cores"
                  + (" — other work shared the machine, so read ratios and req/CPU-s rather than "
                     "absolute req/s." if hi > 1.5 else "."), ""]
    if missing:
        lines.append("Not measured: " + "; ".join(f"{k} ({report._short(val, 200)})"
                                                   for k, val in sorted(missing.items())) + ".")
        lines.append("")
    lines += ["## minigun's targets", "", report.targets(summary), "",
              "## All figures", "",
              report.tables(summary, s_names, w_names, c_names, reference, missing),
              "<!-- ANCHOR_END: results -->", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
