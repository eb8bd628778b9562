"""A simulated fleet on one PostgreSQL database (issue #18): H supervisors with W
job slots each, every one with its own `--hostname`, all on this machine.

    python bench/fleet.py [--pg-url URL] [--hosts 10] [--slots 10] [--quick]
    make bench-fleet

Reports, in one run: the server connections the fleet holds (against the formula
P + 2 per host, P worker processes, and the former 2 x W + 1); its idle load
(transactions per second from pg_stat_database, and the CPU of the server processes
serving it, from /proc through psutil); what one enqueue costs the server beside the
idle fleet (transactions per enqueue: the enqueue's own and every claim it set off,
so a thundering herd would show); pickup latency with the whole fleet idle against
a lone `-c 1` pool on the same database; and the throughput of a mixed load (many
`sleep` jobs and short ones). Prints a table and one line of JSON.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from common import PostgresBackend, median, p95, wait_for  # noqa: E402


def _connections(admin, name: str) -> dict:
    with admin.connect() as conn:
        rows = conn.execute(text("SELECT pid, query FROM pg_stat_activity WHERE datname = :d AND backend_type = 'client backend'"), {"d": name}).all()
    return {"total": len(rows), "listen": sum(1 for _pid, q in rows if (q or "").startswith("LISTEN")), "pids": [pid for pid, _q in rows]}


def _xacts(admin, name: str) -> int:
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        return conn.execute(text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :d"), {"d": name}).scalar()


def _cpu(pids) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _tree_cpu(roots) -> float:
    procs = []
    for root in roots:
        try:
            p = psutil.Process(root)
            procs += [p, *p.children(recursive=True)]
        except psutil.Error:
            pass
    return _cpu(p.pid for p in procs)


def _idle_rows(db, count: int) -> bool:
    from queuectl.store.models import WORKERS

    with db.read() as conn:
        from sqlalchemy import func, select

        return conn.execute(select(func.count()).select_from(WORKERS).where(WORKERS.c.state == "idle", WORKERS.c.role == "worker")).scalar() >= count


def _start_pools(url: str, hosts: int, slots: int, tmp: Path, env: dict) -> list[subprocess.Popen]:
    pools = []
    for h in range(hosts):
        with open(tmp / f"host-{h}.log", "wb") as log:  # the pool keeps its own copy of the descriptor
            pools.append(subprocess.Popen(
                [sys.executable, "-m", "queuectl", "worker", "start", "-c", str(slots), "--hostname", f"fleet-{h:02d}"],
                env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            ))
    return pools


def _stop(pools) -> None:
    for pool in pools:
        if pool.poll() is None:
            pool.send_signal(signal.SIGUSR1)
    for pool in pools:
        try:
            pool.wait(60)
        except subprocess.TimeoutExpired:
            pool.kill()
            pool.wait()


def _pickup(db, tmp: Path, samples: int) -> list[float]:
    from queuectl import jobspec
    from queuectl.store import jobs

    out = tmp / f"pickup-{time.monotonic_ns()}"
    out.mkdir()
    rng = random.Random(1)
    latencies = []
    for i in range(samples + 1):  # the first is a warm-up
        target = out / f"job-{i}"
        spec = jobspec.build(f"date +%s.%N > {target}.tmp && mv {target}.tmp {target}", cwd=str(tmp))
        t0 = time.time()
        jobs.enqueue(db, [spec])
        done = float(wait_for(lambda target=target: target.exists() and target.read_text().strip(), 30, "a pickup job"))
        if i:
            latencies.append(done - t0)
        time.sleep(rng.uniform(0.1, 0.3))
    return latencies


def _mixed(db, sleeps: int, shorts: int, sleep_s: float) -> float:
    """Seconds from enqueueing the mix until every job has completed."""
    from sqlalchemy import func, select

    from queuectl import jobspec
    from queuectl.store import jobs
    from queuectl.store.models import JOBS

    def completed() -> int:
        with db.read() as conn:
            return conn.execute(select(func.count()).select_from(JOBS).where(JOBS.c.state == "completed")).scalar()

    specs = [jobspec.build(f"sleep {sleep_s}") for _ in range(sleeps)] + [jobspec.build("true") for _ in range(shorts)]
    random.Random(2).shuffle(specs)
    before = completed()  # the pickup samples'
    t0 = time.monotonic()
    jobs.enqueue(db, specs)

    def done():
        return completed() - before >= sleeps + shorts

    wait_for(done, 600, "the mixed load to finish")
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-url", default=os.environ.get("QUEUECTL_BENCH_PG_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from queuectl.store.database import Database

    samples = 10 if args.quick else 40
    idle_window = 3.0 if args.quick else 10.0
    backend = PostgresBackend(args.pg_url)
    admin = create_engine(make_url(args.pg_url), isolation_level="AUTOCOMMIT", pool_size=1)
    tmp = Path(tempfile.mkdtemp(prefix="fleet-"))
    os.chmod(tmp, 0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp), PYTHONPATH=str(REPO))
    result: dict = {"hosts": args.hosts, "slots_per_host": args.slots, "processes_per_host": min(args.slots, len(os.sched_getaffinity(0)))}
    try:
        # A lone one-slot pool first: the pickup every fleet figure is compared with.
        url = backend.fresh("fleet_one")
        env["QUEUECTL_DB"] = url
        db = Database(url)
        pools = _start_pools(url, 1, 1, tmp, env)
        try:
            wait_for(lambda: _idle_rows(db, 1), 60, "the lone worker")
            time.sleep(1.0)
            one = _pickup(db, tmp, samples)
        finally:
            _stop(pools)
            db.dispose()
        result["pickup_one_worker_ms"] = {"median": round(median(one) * 1000, 2), "p95": round(p95(one) * 1000, 2)}

        url = backend.fresh("fleet")
        name = make_url(url).database
        env["QUEUECTL_DB"] = url
        db = Database(url)
        pools = _start_pools(url, args.hosts, args.slots, tmp, env)
        try:
            wait_for(lambda: _idle_rows(db, args.hosts * args.slots), 120, f"{args.hosts * args.slots} idle workers")
            time.sleep(3.0)  # settled: every pool has beaten and looked
            db.dispose()  # the bench's own connection is not the fleet's
            conns = _connections(admin, name)
            result["connections"] = {
                "total": conns["total"], "listen": conns["listen"],
                "formula_now": args.hosts * (result["processes_per_host"] + 2),
                "formula_before": args.hosts * (2 * args.slots + 1),
                "target": args.hosts * (1 + args.slots) // 2,
            }
            fleet_pids = [p.pid for p in pools]
            x0, s0, f0, t0 = _xacts(admin, name), _cpu(conns["pids"]), _tree_cpu(fleet_pids), time.monotonic()
            time.sleep(idle_window)
            x1, s1, f1, t1 = _xacts(admin, name), _cpu(conns["pids"]), _tree_cpu(fleet_pids), time.monotonic()
            wall = t1 - t0
            idle_tps = (x1 - x0) / wall
            result["idle"] = {
                "seconds": round(wall, 1), "transactions_per_s": round(idle_tps, 1),
                "server_cpu_pct_of_one_core": round(100 * (s1 - s0) / wall, 2),
                "fleet_cpu_pct_of_one_core": round(100 * (f1 - f0) / wall, 2),
            }
            # Transactions one enqueue sets off beside the idle fleet: its own, and the
            # claims of every worker it woke (idle load subtracted).
            x0, t0 = _xacts(admin, name), time.monotonic()
            many = _pickup(db, tmp, samples)
            x1, t1 = _xacts(admin, name), time.monotonic()
            per_enqueue = ((x1 - x0) - idle_tps * (t1 - t0)) / (samples + 1)
            result["pickup_fleet_ms"] = {"median": round(median(many) * 1000, 2), "p95": round(p95(many) * 1000, 2)}
            result["transactions_per_enqueue"] = round(per_enqueue, 1)
            sleeps, shorts = (50, 500) if args.quick else (300, 3000)
            took = _mixed(db, sleeps, shorts, 1.0)
            result["mixed"] = {"sleep_1s_jobs": sleeps, "true_jobs": shorts, "seconds": round(took, 2), "jobs_per_s": round((sleeps + shorts) / took, 1),
                               "floor_s": round(sleeps * 1.0 / (args.hosts * args.slots), 2)}
            result["connections_busy"] = _connections(admin, name)["total"]
        finally:
            _stop(pools)
            db.dispose()
    finally:
        backend.close()
        admin.dispose()
    c, i = result["connections"], result["idle"]
    one, many = result["pickup_one_worker_ms"], result["pickup_fleet_ms"]
    rows = [
        (f"server connections, {args.hosts} hosts x {args.slots} slots, idle", f"{c['total']} ({c['listen']} LISTEN)",
         f"<= {c['target']} (hosts x (1 + workers) / 2)", c["total"] <= c["target"]),
        ("the same, formula: hosts x (processes + 2); before: hosts x (2 x workers + 1)", f"{c['formula_now']}; before {c['formula_before']}", "", None),
        ("server connections, busy (mixed load)", str(result["connections_busy"]), "", None),
        ("idle database load", f"{i['transactions_per_s']} transactions/s, server CPU {i['server_cpu_pct_of_one_core']}% of a core", "", None),
        ("idle fleet's own CPU (supervisors + workers)", f"{i['fleet_cpu_pct_of_one_core']}% of a core", "", None),
        ("transactions per enqueue beside the idle fleet (its own + the claims it woke)", f"{result['transactions_per_enqueue']}", "bounded (<= hosts + 2)",
         result["transactions_per_enqueue"] <= args.hosts + 2),
        ("pickup, one -c 1 pool: median / p95", f"{one['median']} / {one['p95']} ms", "", None),
        (f"pickup, {args.hosts * args.slots} idle workers: median / p95", f"{many['median']} / {many['p95']} ms", f"p95 <= 2 x {one['p95']} ms",
         many["p95"] <= 2 * one["p95"]),
        (f"mixed load: {result['mixed']['sleep_1s_jobs']} x sleep 1 + {result['mixed']['true_jobs']} x true",
         f"{result['mixed']['seconds']} s, {result['mixed']['jobs_per_s']} jobs/s (sleeps alone: >= {result['mixed']['floor_s']} s)", "", None),
    ]
    print("| measurement | figure | target | verdict |")
    print("|---|---|---|---|")
    for label, figure, target, ok in rows:
        print(f"| {label} | {figure} | {target} | {'' if ok is None else ('met' if ok else 'MISSED')} |")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
