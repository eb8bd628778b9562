#!/usr/bin/env python3
"""queuectl's benchmark suite (`make bench`). Never part of the test run.

    python bench/run.py [--quick] [--backend sqlite|postgresql|both] [--out PATH]

Measures, on SQLite and on PostgreSQL when it answers: drain throughput against
`xargs -P` and task-spooler, bulk and single enqueue, pickup latency, claim and
`status` cost with a large history, worker memory, and what a pool costs idle and
per job slot beside task-spooler. The machine may be shared, so every timed figure
is compared with a reference measured beside it in the same run. Prints a table (Markdown) and writes everything, raw samples included, to
bench/results/latest.json.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dashboard

import exit_peaks
import measures
import pool
from common import REPO, Context, PostgresBackend, SQLiteBackend, floor_rss_kb, postgres_answers

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

FULL = dict(
    drain_n=2000, rounds={1: 2, 2: 3}, bulk_n=100_000, bulk_rounds=2, single=20, pickup=50, small=1_000, big=1_000_000, pending=300, cycles=200, status_runs=5,
    flow_blocked=1_000_000, flow_schedules=1_000, flow_passes=20, web_jobs=1_000_000, web_rounds=40,
    idle_s=10, slot_widths=(1, 8, 16, 64),
)
QUICK = dict(
    drain_n=300, rounds={1: 1, 2: 1}, bulk_n=10_000, bulk_rounds=1, single=5, pickup=10, small=1_000, big=50_000, pending=300, cycles=40, status_runs=3,
    flow_blocked=50_000, flow_schedules=1_000, flow_passes=5, web_jobs=50_000, web_rounds=10,
    idle_s=3, slot_widths=(2, 8),  # 2 slots: as many processes as 8 on a 2-CPU machine
)

# Targets: (description, test on the figure)
TARGETS = {
    "drain_vs_xargs": (">= 60% of xargs -P2", lambda v: v >= 0.6),  # issue #15, target 4
    "drain_vs_tsp": ("ahead of tsp (> 1.00x)", lambda v: v > 1.0),
    "bulk": (">= 50,000 jobs/s", lambda v: v >= 50_000),
    "single": ("<= 1.25x import floor", lambda v: v <= 1.25),
    # Issue #15: from `enqueue` returning (its commit) to the job starting, on SQLite.
    "pickup_sqlite": ("median < 5 ms", lambda v: v < 0.005),
    "pickup_sqlite_p95": ("p95 < 20 ms", lambda v: v < 0.020),
    "pickup_pg_listen": ("median < 10 ms", lambda v: v < 0.010),
    "scale": ("1M/1k <= 1.5x", lambda v: v <= 1.5),
    "flow": ("<= 1.5x the empty case", lambda v: v <= 1.5),
    "worker_rss": ("each < 60 MB", lambda kb: kb < 60 * 1024),
    "web": ("p95 < 100 ms", lambda v: v < 0.100),
    "idle_cpu": ("< 1% of one core", lambda pct: pct < 1.0),
    "pool_pss": ("< 250 MB", lambda kb: kb < 250 * 1024),
    "slot_pss": ("< 2 MB", lambda kb: kb < 2 * 1024),
}


SECTIONS = ("drain", "bulk", "single", "pickup", "scale", "flow", "web", "pool")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N everywhere: a smoke run of a minute or two")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), help="default: both when PostgreSQL answers, else sqlite")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "latest.json"), help="where to write the JSON results")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("QUEUECTL_BENCH_PG_URL") or os.environ.get("PG_URL") or DEFAULT_PG_URL,
        help="a PostgreSQL URL whose role may CREATE DATABASE (scratch qbench_* databases are created and dropped)",
    )
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)")
    return parser.parse_args(argv)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "queuectl"], capture_output=True, text=True,
        ).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def warm_up(ctx: Context, backend) -> None:
    """Fill the bytecode cache and the page cache before anything is timed."""
    url = backend.fresh("warmup")
    try:
        ctx.run(ctx.queuectl(url, "status"), name="warmup-status")
        ctx.run(ctx.queuectl(url, "enqueue", "true"), name="warmup-enqueue")
        # under the memory recorder of the drains, which is then in the bytecode cache too
        ctx.run(exit_peaks.command(ctx.tmp / "warmup.peaks", ctx.queuectl(url, "worker", "start", "--burst", "-c", "1")), name="warmup-worker")
        ctx.run([ctx.py, "-c", "import sqlalchemy"], name="warmup-floor")
        lines = measures.write_lines(ctx.tmp / "warmup.txt", 10)
        ctx.run([ctx.py, str(REPO / "bench" / "floor_insert.py"), url, str(lines), "1000000"], name="warmup-floor-insert")
    finally:
        backend.drop(url)


def run_backend(ctx: Context, backend, p: dict, only, errors: list) -> dict:
    out: dict = {}
    sections = only or SECTIONS
    timings = out["section_s"] = {}

    def section(name, fn):
        if name not in sections:
            return
        print(f"  [{backend.name}] {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            out[name] = fn()
        except Exception as err:  # one broken measurement must not lose the others
            traceback.print_exc()
            out[name] = {"error": f"{type(err).__name__}: {err}"}
            errors.append(f"{backend.name} {name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"  [{backend.name}] {name} done in {timings[name]:.1f}s", flush=True)

    section("drain", lambda: measures.drain(ctx, backend, p["drain_n"], p["rounds"]))
    section("bulk", lambda: measures.bulk_enqueue(ctx, backend, p["bulk_n"], p["bulk_rounds"]))
    section("single", lambda: measures.single_enqueue(ctx, backend, p["single"]))

    def pickups():
        result = {"listen": measures.pickup(ctx, backend, p["pickup"], listen=True)}
        if backend.name == "postgresql":
            result["switch_present"] = measures.listen_switch_present()
            if result["switch_present"]:
                result["poll"] = measures.pickup(ctx, backend, p["pickup"], listen=False)
        return result

    section("pickup", pickups)
    section("scale", lambda: measures.scale(ctx, backend, p["small"], p["big"], p["pending"], p["cycles"], p["status_runs"]))
    section("flow", lambda: measures.flow(ctx, backend, p["flow_blocked"], p["flow_schedules"], p["pending"], p["cycles"], p["flow_passes"]))
    section("web", lambda: dashboard.measure(ctx, backend, p["web_jobs"], p["web_rounds"]))
    section("pool", lambda: pool.measure(ctx, backend, p["idle_s"], p["slot_widths"]))
    return out


# --- the table --------------------------------------------------------------------------------


def _rate(v):
    return f"{v:,.0f}/s"


def _ms(v):
    return f"{v * 1000:.1f} ms"


def _mb(kb):
    return f"{kb / 1024:.1f} MB"


def _pct(v):
    return f"{v:.2f}%"


def _pss_pair(pair):
    """(queuectl's, tsp's) {pss_kb, processes}: PSS side by side; tsp's None when
    it is not installed."""
    mine, theirs = pair
    return f"{_mb(mine['pss_kb'])} ({mine['processes']} proc) / " + (_mb(theirs["pss_kb"]) if theirs else "n/a, no tsp")


class NotMeasured(Exception):
    """A figure the run did not measure: `short` goes in its cell, the message (why)
    in the JSON and on stderr."""

    def __init__(self, reason: str, short: str):
        super().__init__(reason)
        self.short = short


def sampled(summary: dict, key: str):
    """summary[key], or NotMeasured with the reason the drain left under
    `<key without _kb>_not_measured` (see measures.memory_summary)."""
    reason = summary.get(key.replace("_kb", "_not_measured"))
    if reason:
        raise NotMeasured(reason, "not sampled")
    return summary[key]


def tsp_figure(drain: dict, width: str, key: str):
    """A task-spooler figure of the drain, or NotMeasured when tsp was not installed."""
    if not drain["tsp"]:
        raise NotMeasured("task-spooler (tsp) is not installed", "no tsp")
    return drain["widths"][width][key]


def tsp_pool(pool: dict, figure):
    """figure(pool), a task-spooler figure of the pool section, or NotMeasured when
    tsp was not installed."""
    if not pool["tsp"]:
        raise NotMeasured("task-spooler (tsp) is not installed", "no tsp")
    return figure(pool)


NOT_MEASURED = "NOT MEASURED"


def build_rows(results: dict, backends: list[str], p: dict) -> list[dict]:
    """One row per figure: label, a cell per backend, the target and a verdict per
    backend: met, MISSED, or NOT MEASURED when its section ran but left no figure.
    A figure that is absent is never a 0 and never met."""
    rows = []
    section = None  # the results key of the rows being added

    def row(label, getter, fmt, target=None, target_text=None):
        """target: a TARGETS key, or {backend: key} when each backend has its own."""
        cells, verdicts, reasons = {}, {}, {}
        for b in backends:
            key = target.get(b) if isinstance(target, dict) else target
            try:
                value = getter(results[b])
            except NotMeasured as err:
                value, cells[b], reasons[b] = None, f"n/a, {err.short}", str(err)
            except (KeyError, TypeError, IndexError, ZeroDivisionError):
                value = None
            if value is not None:
                cells[b] = fmt(value)
                if key:
                    verdicts[b] = "met" if TARGETS[key][1](value) else "MISSED"
            else:
                cells.setdefault(b, "n/a")
                if key and section in results[b]:  # ran (if only in error) but gave no figure
                    verdicts[b] = NOT_MEASURED
        text = target_text or (TARGETS[target][0] if isinstance(target, str) else "")
        rows.append({"label": label, "cells": cells, "target": text, "verdicts": verdicts, "reasons": reasons})

    def sep(key, title):
        nonlocal section
        section = key
        rows.append({"section": title})

    n = p["drain_n"]
    sep("drain", f"Drain {n:,} `true` jobs (`worker start --burst`); medians of interleaved rounds (W=1: {p['rounds'][1]}, W=2: {p['rounds'][2]})")
    for w in ("1", "2"):
        d = lambda r, w=w: r["drain"]["widths"][w]  # noqa: E731
        row(f"W={w} queuectl", lambda r, d=d: d(r)["queuectl_jobs_s"], _rate)
        row(f"W={w} of which fixed: `--burst` on an empty queue", lambda r, d=d: d(r)["empty_burst_s"], lambda v: f"{v:.2f} s")
        row(f"W={w} queuectl without that fixed cost / xargs", lambda r, d=d: d(r)["per_job_vs_xargs"], lambda v: f"{v:.0%}")
        row(f"W={w} xargs -P{w} (physical limit)", lambda r, d=d: d(r)["xargs_jobs_s"], _rate)
        row(f"W={w} queuectl / xargs", lambda r, d=d: d(r)["vs_xargs"], lambda v: f"{v:.0%}", "drain_vs_xargs" if w == "2" else None)
        row(f"W={w} ceiling: `import sqlalchemy` + a bare Popen loop, no queue / xargs", lambda r, d=d: d(r)["ceiling_vs_xargs"], lambda v: f"{v:.0%}")
        row(f"W={w} queuectl's writes alone (end + claim, nothing run): CPU per job", lambda r, d=d: d(r)["writes_cpu_ms_per_job"], lambda v: f"{v:.2f} ms")
        row(f"W={w} tsp -S {w} (enqueue + run)", lambda r, w=w: tsp_figure(r["drain"], w, "tsp_jobs_s"), _rate)
        row(f"W={w} queuectl / tsp", lambda r, w=w: tsp_figure(r["drain"], w, "vs_tsp"), lambda v: f"{v:.2f}x", "drain_vs_tsp" if w == "2" else None)
        row(f"W={w} queuectl enqueue --file + drain / tsp", lambda r, w=w: tsp_figure(r["drain"], w, "enqueue_plus_drain_vs_tsp"), lambda v: f"{v:.2f}x")
    sep("bulk", f"Bulk enqueue (`enqueue --file`, {p['bulk_n']:,} jobs, one process, wall)")
    row("queuectl", lambda r: r["bulk"]["queuectl_jobs_s"], _rate, "bulk")
    row("same rows by the bare driver's executemany (floor)", lambda r: r["bulk"]["floor_jobs_s"], _rate)
    row("queuectl / floor", lambda r: r["bulk"]["vs_floor"], lambda v: f"{v:.0%}")
    sep("single", f"Single enqueue (one process, median of {p['single']}, interleaved)")
    row('`queuectl enqueue "true"`', lambda r: r["single"]["enqueue_median_s"], _ms)
    row('`python -c "import sqlalchemy"` (floor)', lambda r: r["single"]["floor_median_s"], _ms)
    row('`python -c "import sqlalchemy, psycopg"` (driver floor)', lambda r: r["single"]["driver_floor_median_s"], _ms)
    # A queuectl on PostgreSQL cannot import less than SQLAlchemy and the driver.
    row("enqueue / floor (PostgreSQL: / driver floor)", lambda r: r["single"].get("driver_ratio", r["single"]["ratio"]), lambda v: f"{v:.2f}x", "single")
    sep("pickup", f"Pickup latency (idle `worker start -c 1`, enqueue -> job's timestamp, {p['pickup']} samples)")
    row(
        "median (LISTEN on PostgreSQL)",
        lambda r: r["pickup"]["listen"]["median_s"],
        _ms,
        {"postgresql": "pickup_pg_listen"},
        target_text="PG < 10 ms",
    )
    row("p95 (LISTEN on PostgreSQL)", lambda r: r["pickup"]["listen"]["p95_s"], _ms)
    row("of which the enqueue's own transaction (median)", lambda r: r["pickup"]["listen"]["enqueue_median_s"], _ms)
    row("from the enqueue's return (its commit) to the job's start, median", lambda r: r["pickup"]["listen"]["after_commit_median_s"], _ms,
        {"sqlite": "pickup_sqlite"}, target_text="SQLite < 5 ms")
    row("the same, p95", lambda r: r["pickup"]["listen"]["after_commit_p95_s"], _ms, {"sqlite": "pickup_sqlite_p95"}, target_text="SQLite < 20 ms")
    row("median, PostgreSQL with QUEUECTL_LISTEN=0", lambda r: r["pickup"]["poll"]["median_s"], _ms)
    row("p95, PostgreSQL with QUEUECTL_LISTEN=0", lambda r: r["pickup"]["poll"]["p95_s"], _ms)
    row("after the enqueue committed, QUEUECTL_LISTEN=0 (median)", lambda r: r["pickup"]["poll"]["after_commit_median_s"], _ms)
    row("QUEUECTL_LISTEN switch in queuectl/store/dialect.py", lambda r: r["pickup"]["switch_present"], lambda v: "present" if v else "ABSENT (not measured)")
    row(
        "LISTEN connections seen (default / QUEUECTL_LISTEN=0)",
        lambda r: (r["pickup"]["listen"]["listening_connections"], r["pickup"]["poll"]["listening_connections"]),
        lambda v: f"{v[0]} / {v[1]}",
    )
    row("spawn floor: same command started directly (median)", lambda r: r["pickup"]["listen"]["spawn_floor_median_s"], _ms)
    small, big = f"{p['small']:,}", f"{p['big']:,}"
    sep("scale", f"Scale: {small} vs {big} jobs in the table ({p['pending']} pending, rest completed)")
    row(f"claim+complete cycle, {small} (mean of {p['cycles']})", lambda r: r["scale"]["small"]["claim_cycle_mean_s"], _ms)
    row(f"claim+complete cycle, {big}", lambda r: r["scale"]["big"]["claim_cycle_mean_s"], _ms)
    row("claim cost big / small", lambda r: r["scale"]["claim_ratio"], lambda v: f"{v:.2f}x", "scale")
    row(f"status.report(), {small} (median of {p['status_runs']})", lambda r: r["scale"]["small"]["status_median_s"], _ms)
    row(f"status.report(), {big}", lambda r: r["scale"]["big"]["status_median_s"], _ms)
    row("status big / small", lambda r: r["scale"]["status_ratio"], lambda v: f"{v:.2f}x", "scale")
    row("idle worker's poll (Waiter.work_may_exist), big / small", lambda r: r["scale"]["idle_poll_ratio"], lambda v: f"{v:.2f}x")

    blocked, schedules = f"{p['flow_blocked']:,}", f"{p['flow_schedules']:,}"
    sep("flow", f"Flow control: {p['pending']} ready jobs alone, beside {blocked} blocked jobs, beside {schedules} schedules")
    row(f"claim+complete cycle, ready jobs alone (mean of {p['cycles']})", lambda r: r["flow"]["empty"]["claim_cycle_mean_s"], _ms)
    row(f"claim+complete cycle, beside {blocked} blocked", lambda r: r["flow"]["blocked"]["claim_cycle_mean_s"], _ms)
    row("claim cost blocked / alone", lambda r: r["flow"]["blocked_ratio"], lambda v: f"{v:.2f}x", "flow")
    row(f"claim+complete cycle, beside {schedules} schedules", lambda r: r["flow"]["schedules"]["claim_cycle_mean_s"], _ms)
    row("claim cost schedules / alone", lambda r: r["flow"]["schedules_ratio"], lambda v: f"{v:.2f}x", "flow")
    row(f"a supervisor's scheduler pass, {schedules} schedules, none due (median of {p['flow_passes']})",
        lambda r: r["flow"]["scheduler_pass_median_s"], _ms)
    sep("web", f"Dashboard (`queuectl web`, one keep-alive connection) with {p['web_jobs']:,} jobs: "
               f"p95 of {p['web_rounds']} interleaved rounds, and SQL statements per request")
    for label in [label for label, _ in dashboard.PAGES] + [dashboard.CURSOR_PAGE]:
        page = lambda r, label=label: r["web"]["pages"][label]  # noqa: E731
        row(f"{label}: p95", lambda r, page=page: page(r)["p95_s"], _ms, None if label in dashboard.UNTARGETED else "web")
        row(f"{label}: median, SQL statements", lambda r, page=page: (page(r)["median_s"], page(r)["queries"]),
            lambda v: f"{v[0] * 1000:.1f} ms, {v[1]}")
    idle, widths = p["idle_s"], p["slot_widths"]
    sep("pool", f"Pool: an idle pool over {idle:g} s (CPU of supervisor + workers, SQL statements), and PSS with N `sleep 30` jobs running; "
                "task-spooler beside it in the same run")
    row("`worker start -c 8`, idle: CPU of one core", lambda r: r["pool"]["idle"]["8"]["cpu_pct_of_one_core"], _pct, "idle_cpu")
    row("`tsp -S 8` server, idle, same window: CPU of one core",
        lambda r: tsp_pool(r["pool"], lambda pl: pl["idle"]["8"]["tsp"]["cpu_pct_of_one_core"]), _pct)
    row("`worker start -c 64`, idle: CPU of one core", lambda r: r["pool"]["idle"]["64"]["cpu_pct_of_one_core"], _pct)
    row("SQL statements/s while idle, -c 8 / -c 64",
        lambda r: (r["pool"]["idle"]["8"]["statements_per_s"], r["pool"]["idle"]["64"]["statements_per_s"]), lambda v: f"{v[0]:.1f}/s / {v[1]:.1f}/s")
    widest = widths[-1]
    row(f"PSS of queuectl's processes, {widest} slots", lambda r: r["pool"]["slots"][str(widest)]["queuectl"]["pss_kb"], _mb, "pool_pss")
    row(f"PSS per additional slot, (PSS({widest}) - PSS({widths[0]})) / {widest - widths[0]}", lambda r: r["pool"]["per_slot"]["queuectl_kb"], _mb, "slot_pss")
    row("same for tsp -S N (server + one client per job)", lambda r: tsp_pool(r["pool"], lambda pl: pl["per_slot"]["tsp_kb"]), _mb)
    for w in widths:
        row(f"{w} slot{'s' if w > 1 else ''}: PSS of queuectl (its processes) / of tsp -S {w}",
            lambda r, w=str(w): (r["pool"]["slots"][w]["queuectl"], r["pool"]["slots"][w]["tsp"]), _pss_pair)
    sep("drain", "Memory: peak RSS (VmHWM) of each process during the W=2 drains, read as it exits")
    row("supervisor", lambda r: sampled(r["drain"]["widths"]["2"], "supervisor_peak_kb"), _mb)
    row("each worker (the largest)", lambda r: sampled(r["drain"]["widths"]["2"], "worker_peak_kb"), _mb, "worker_rss")
    row("largest of the supervisor's children, by the kernel (cross-check)", lambda r: sampled(r["drain"]["widths"]["2"], "children_maxrss_kb"), _mb)
    row("python + sqlalchemy + psutil (floor)", lambda r: r["memory_floor_kb"], _mb)
    return rows


NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def not_measured(rows: list[dict]) -> list[str]:
    """The targets a run did not check: one line each, with the reason when known."""
    lines = []
    for r in rows:
        for b, verdict in r.get("verdicts", {}).items():
            if verdict == NOT_MEASURED:
                why = r["reasons"].get(b)
                lines.append(f"{b}: {r['label']} ({r['target']})" + (f": {why}" if why else ""))
    return lines


def render(rows: list[dict], backends: list[str]) -> str:
    headers = ["Measurement"] + [NAMES[b] for b in backends] + ["Target"]
    body = []
    for r in rows:
        if "section" in r:
            body.append([f"**{r['section']}**"] + [""] * (len(headers) - 1))
            continue
        cells = []
        for b in backends:
            cell = r["cells"][b]
            if b in r["verdicts"]:
                cell += f" ({r['verdicts'][b]})"
            cells.append(cell)
        body.append([r["label"]] + cells + [r["target"]])
    widths = [max(len(line[i]) for line in [headers] + body) for i in range(len(headers))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in body:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    p = dict(QUICK if args.quick else FULL)
    started = time.perf_counter()
    pg_problem = postgres_answers(args.pg_url) if args.backend in (None, "postgresql", "both") else "not requested"
    if args.backend in ("postgresql", "both") and pg_problem:
        print(f"bench: PostgreSQL does not answer at {args.pg_url}: {pg_problem}", file=sys.stderr)
        return 1
    if args.backend in ("sqlite", "postgresql"):
        backends = [args.backend]
    else:
        backends = ["sqlite"] + ([] if pg_problem else ["postgresql"])
    if args.backend is None and pg_problem:
        print(f"bench: PostgreSQL does not answer ({pg_problem}); SQLite only", flush=True)
    if not measures.TSP:
        print("bench: task-spooler (tsp) is not installed; its rows are n/a (`make bench` installs it)", flush=True)

    meta = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "quick": args.quick,
        "params": p,
        "backends": backends,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_before": os.getloadavg(),
        "tsp": measures.TSP,
    }
    try:
        import sqlalchemy

        meta["sqlalchemy"] = sqlalchemy.__version__
    except ImportError:
        pass
    print(
        f"queuectl benchmarks ({'quick' if args.quick else 'full'}): {', '.join(backends)}; "
        f"commit {meta['commit']}; load {meta['loadavg_before'][0]:.2f} on {meta['cpus']} CPUs",
        flush=True,
    )

    results: dict = {}
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qbench-") as tmp:
        ctx = Context(Path(tmp), args.quick)
        memory_floor = floor_rss_kb(ctx, "sqlalchemy, psutil")
        for name in backends:
            backend = SQLiteBackend(ctx.tmp) if name == "sqlite" else PostgresBackend(args.pg_url)
            try:
                warm_up(ctx, backend)
                results[name] = run_backend(ctx, backend, p, args.only, errors)
                results[name]["memory_floor_kb"] = memory_floor
            finally:
                backend.close()
    meta["loadavg_after"] = os.getloadavg()
    meta["duration_s"] = round(time.perf_counter() - started, 1)

    rows = build_rows(results, backends, p)
    table = render(rows, backends)
    print()
    print(table)
    print()
    notes = [
        "Ratios are medians of pairs measured side by side; jobs/s are medians of the rounds.",
        "tsp: wall time from the first `tsp` enqueue (a shell loop, one tsp client process per job) until a final",
        "  barrier job needing all W slots has run; its jobs run while the loop enqueues.",
        "Drain ceiling: the same commands started as a slot starts them, by a Python process that imports SQLAlchemy",
        "  and keeps no queue (bench/drain_ceiling.py): a queuectl drain can only be slower. Writes alone: the",
        "  drain's end + claim transactions in W processes, no command run; CPU of those processes per job",
        "  (PostgreSQL's server is not in it).",
        "Children import the source tree with a warmed bytecode cache (PYTHONPYCACHEPREFIX).",
        "Pickup: 0.1-0.3 s random pauses between samples, so enqueues do not phase-lock with a worker's poll cycle.",
        "Memory: each queuectl process of the W=2 drains appends its VmHWM to a file as it exits (bench/exit_peaks.py);",
        "  the cross-check is the supervisor's getrusage(RUSAGE_CHILDREN).ru_maxrss once it has reaped its workers.",
        "Pool: CPU is utime + stime of the pool's processes (the tsp server's) over one window opened 1 s after every",
        "  worker is up; statements are counted by a SQLAlchemy listener in the pool (bench/idle_cost.py). PSS sums",
        "  /proc/PID/smaps_rollup of queuectl's processes (its process group, not the jobs) and of tsp's server and",
        "  clients, 1 s after the last of N jobs started (bench/slot_cost.py).",
    ]
    print("\n".join(notes))
    print(f"\nload average {meta['loadavg_before'][0]:.2f} -> {meta['loadavg_after'][0]:.2f}; suite ran {meta['duration_s']:.0f}s")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    unmeasured = not_measured(rows)
    meta["errors"] = errors
    meta["not_measured"] = unmeasured
    out.write_text(json.dumps({"meta": meta, "results": results, "rows": rows, "table": table}, indent=2, default=str) + "\n")
    print(f"results: {out}")
    if errors:
        print("bench: some measurements failed (n/a above):\n  " + "\n  ".join(errors), file=sys.stderr)
    if unmeasured:
        print("bench: targets not checked (NOT MEASURED above):\n  " + "\n  ".join(unmeasured), file=sys.stderr)
    return 1 if errors or unmeasured else 0


if __name__ == "__main__":
    sys.exit(main())
