"""Turns the raw runs into medians, ratios and markdown.

Each cell of a table is the median over the rounds of one (configuration,
workload, server); ratios divide by the reference server's median in the
same table, so they compare runs made in the same session, interleaved.
"""

import os
import platform
import statistics

from .servers import BY_NAME as SERVERS
from .workloads import BY_NAME as WORKLOADS, CONFIG_BY_NAME as CONFIGS


def summarize(runs):
    """{(config, workload, server): summary dict} from the list of raw runs."""
    groups = {}
    for r in runs:
        groups.setdefault((r["config"], r["workload"], r["server"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        s = {"runs": len(rs), "ok": len(ok), "threads": rs[0]["threads"],
             "workers": rs[0]["workers"], "errors_text": [r["error"] for r in rs if "error" in r]}
        if ok:
            def med(field):
                vals = [r[field] for r in ok if r.get(field) is not None]
                return statistics.median(vals) if vals else None
            for field in ("rps", "p50_ms", "p99_ms", "req_per_cpu_s", "startup_s",
                          "peak_rss_kib", "peak_master_rss_kib", "peak_worker_rss_kib"):
                s[field] = med(field)
            s["errors"] = sum(r["errors"] for r in ok)
            s["requests"] = sum(r["requests"] for r in ok)
        out[key] = s
    return out


def _fmt_int(v):
    return "–" if v is None else f"{v:,.0f}"


def _fmt_ratio(v, ref):
    if v is None or not ref:
        return "–"
    return f"{v / ref:.2f}"


def _fmt_ms(v):
    if v is None:
        return "–"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _fmt_mib(kib):
    return "–" if not kib else f"{kib / 1024:.1f}"


def tables(summary, server_order, workload_order, config_order, reference, missing):
    """Markdown: one table per configuration and workload."""
    lines = []
    for cname in config_order:
        config = CONFIGS[cname]
        lines.append(f"### {config.title}\n")
        for wname in workload_order:
            rows = [(s, summary.get((cname, wname, s))) for s in server_order]
            rows = [(s, v) for s, v in rows if v is not None or
                    (s in missing and SERVERS[s].runs(WORKLOADS[wname]))]
            if not rows:
                continue
            ref = summary.get((cname, wname, reference)) or {}
            lines.append(f"**{wname}**: {WORKLOADS[wname].title}. Ratios against {reference}.\n")
            lines.append("| server | workers × threads | req/s | × ref | p50 ms | p99 ms | errors "
                         "| req/CPU-s | × ref | peak RSS MiB | start-up ms |")
            lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
            for sname, s in rows:
                if s is None or not s["ok"]:
                    why = missing.get(sname) or (s["errors_text"][0] if s else "not run")
                    lines.append(_row([sname, "not measured: " + _short(why)], 11))
                    continue
                wt = f"{s['workers']} × {s['threads'] or 1}"
                start = None if s["startup_s"] is None else s["startup_s"] * 1000
                failed = f" ({s['runs'] - s['ok']} failed)" if s["ok"] < s["runs"] else ""
                lines.append(
                    f"| {sname}{failed} | {wt} | {_fmt_int(s['rps'])} | {_fmt_ratio(s['rps'], ref.get('rps'))} "
                    f"| {_fmt_ms(s['p50_ms'])} | {_fmt_ms(s['p99_ms'])} | {s['errors']:,} "
                    f"| {_fmt_int(s['req_per_cpu_s'])} | {_fmt_ratio(s['req_per_cpu_s'], ref.get('req_per_cpu_s'))} "
                    f"| {_fmt_mib(s['peak_rss_kib'])} | {_fmt_int(start)} |")
            lines.append("")
    return "\n".join(lines)


def _row(cells, width):
    """A markdown table row of ``width`` cells, the missing ones left empty."""
    cells = list(cells) + [""] * (width - len(cells))
    return "| " + " | ".join(cells) + " |"


def _short(text, n=140):
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 1] + "…"


def targets(summary):
    """minigun's targets, each with the measured ratio (1 worker, pinned).

    Returns markdown rows; a target whose figures are missing says "not yet
    measured" rather than guessing.
    """
    def get(workload, server, field="rps", config="1w"):
        s = summary.get((config, workload, server))
        return s.get(field) if s and s.get("ok") else None

    def best_peer(workload, field="rps"):
        # A peer whose runs had errors (uwsgi closing streamed responses it cannot frame,
        # say) served something other than the workload: it is no yardstick.
        def clean(n):
            s = summary.get(("1w", workload, n))
            return bool(s) and not s.get("errors")
        cands = [(get(workload, n, field), n) for n in SERVERS
                 if not n.startswith("minigun") and n != "nginx" and clean(n)]
        cands = [c for c in cands if c[0] is not None]
        return max(cands) if cands else (None, None)

    rows = []

    def ratio_row(what, mine, theirs, goal, label):
        if mine is None or theirs is None:
            rows.append(f"| {what} | ≥ {goal} × {label} | not yet measured | – |")
            return
        r = mine / theirs
        rows.append(f"| {what} | ≥ {goal} × {label} | {r:.2f} | {'met' if r >= goal else 'not met'} |")

    m = lambda w, f="rps", s="minigun": get(w, s, f)
    ratio_row("hello keep-alive, `--threads 1`: req/s", m("hello"), get("hello", "bjoern"), 1.1, "bjoern")
    ratio_row("hello keep-alive, `--threads 1`: req/CPU-s", m("hello", "req_per_cpu_s"),
              get("hello", "bjoern", "req_per_cpu_s"), 1.25, "bjoern")
    ratio_row("hello keep-alive, `--threads 1`: req/s", m("hello"), get("hello", "granian"), 1.4, "granian")
    ratio_row("hello keep-alive, `--threads 1`: req/s", m("hello"), get("hello", "gunicorn-sync"), 15, "gunicorn sync")
    ratio_row("hello keep-alive, `--threads 8`: req/s", m("hello", s="minigun-t8"), m("hello"), 0.9,
              "minigun `--threads 1`")
    ratio_row("hello, new connection per request: req/s", m("hello-close"), get("hello-close", "bjoern"), 1.0, "bjoern")
    ratio_row("10 KiB GET: req/s", m("get-10k"), get("get-10k", "bjoern"), 1.0, "bjoern")
    for w in ("echo-10k", "stream", "file-1m"):
        v, name = best_peer(w)
        ratio_row(f"{w}: req/s", m(w), v, 1.0, f"best peer ({name or '?'})")
    ratio_row("sleep 10 ms, `--threads 32`: req/s", m("sleep-10ms"), 3200, 0.9, "ideal 3,200 req/s")

    mw, gw = m("hello", "peak_worker_rss_kib"), get("hello", "gunicorn-sync", "peak_worker_rss_kib")
    if mw is None or gw is None:
        rows.append("| worker RSS, hello | within 1 MiB of gunicorn sync's worker | not yet measured | – |")
    else:
        d = (mw - gw) / 1024
        rows.append(f"| worker RSS, hello | within 1 MiB of gunicorn sync's worker ({gw / 1024:.1f} MiB) "
                    f"| {mw / 1024:.1f} MiB ({d:+.1f}) | {'met' if d <= 1.0 else 'not met'} |")
    mm = m("hello", "peak_master_rss_kib")
    rows.append("| master RSS, hello | < 5 MiB | " + ("not yet measured | – |" if mm is None else
                f"{mm / 1024:.1f} MiB | {'met' if mm < 5 * 1024 else 'not met'} |"))
    st = m("hello", "startup_s")
    rows.append("| start-up to first 200, hello | < 150 ms | " + ("not yet measured | – |" if st is None else
                f"{st * 1000:.0f} ms | {'met' if st < 0.150 else 'not met'} |"))
    head = ["| target (1 worker, pinned) | goal | measured | |", "|---|---|--:|---|"]
    return "\n".join(head + rows)


def machine():
    """nproc, CPU model, kernel and memory: the header of every results file."""
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "memory": mem}
