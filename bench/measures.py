"""The measurements. Each takes the run Context and a backend and returns plain data
(JSON-ready); run.py turns them into the table. Every timed figure is paired with a
reference measured beside it in the same run, because the machine is shared."""

import json
import os
import random
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import exit_peaks
from common import REPO, job_counts, mean, median, p95

TSP = shutil.which("tsp")


def write_lines(path: Path, n: int, line: str = "true") -> Path:
    path.write_text((line + "\n") * n)
    return path


# --- 1, 2, 7: drain throughput, its physical limit, task-spooler, memory ----------------------


def drain_memory(peaks: dict) -> dict:
    """One drain's peaks (kB) from bench/exit_peaks.py's records: the supervisor, each
    worker, the workers that never reported, and the kernel's own figure for the
    largest of the supervisor's children (RUSAGE_CHILDREN when it exited)."""
    root = peaks["root"]
    return {
        "supervisor_kb": root["hwm_kb"] if root else None,
        "workers_kb": [child["hwm_kb"] for child in peaks["children"]],
        "workers_titles": [child["title"] for child in peaks["children"]],
        "unreported_pids": peaks["unreported"],
        "children_maxrss_kb": root["children_maxrss_kb"] if root else None,
    }


def memory_summary(memory: list, width: int) -> dict:
    """The largest peaks over the sampled drains (memory: one entry per drain, None if
    it was not sampled). A figure that some drain did not measure is left out, and
    `<figure>_not_measured` says why: never a 0 or the largest of what was seen."""
    sampled = [m for m in memory if m is not None]
    skipped = [f"{len(memory) - len(sampled)} of {len(memory)} drains not sampled"] if len(sampled) < len(memory) else []
    supervisor_gaps = skipped + (["the supervisor left no exit record"] if any(m["supervisor_kb"] is None for m in sampled) else [])
    worker_gaps = list(skipped)
    unreported = [pid for m in sampled for pid in m["unreported_pids"]]
    if unreported:
        worker_gaps.append(f"no exit record from worker pid {', '.join(map(str, unreported))}")
    fewest = min(len(m["workers_kb"]) for m in sampled)
    if fewest < width:
        worker_gaps.append(f"{fewest} of {width} workers recorded in a drain")
    summary = {"workers_seen": [len(m["workers_kb"]) for m in sampled]}
    for key, gaps, values in (
        ("supervisor_peak_kb", supervisor_gaps, [m["supervisor_kb"] for m in sampled]),
        ("children_maxrss_kb", supervisor_gaps, [m["children_maxrss_kb"] for m in sampled]),
        ("worker_peak_kb", worker_gaps, [kb for m in sampled for kb in m["workers_kb"]]),
    ):
        if gaps:
            summary[key.replace("_kb", "_not_measured")] = "; ".join(gaps)
        else:
            summary[key] = max(values)
    return summary


def xargs_drain(ctx, jobs_file: Path, width: int) -> float:
    """The physical limit: xargs -P W runs the same `sh -c true` commands."""
    with open(jobs_file, "rb") as stdin:
        return ctx.run(["xargs", "-P", str(width), "-n", "1", "-d", "\n", "sh", "-c"], stdin=stdin, name=f"xargs-P{width}")


def queuectl_drain(ctx, backend, jobs_file: Path, n: int, width: int, sample_memory: bool) -> dict:
    url = backend.fresh("drain")
    try:
        enqueue_s = ctx.run(ctx.queuectl(url, "enqueue", "--file", jobs_file), name="enqueue-file")
        log = ctx.log_file(f"drain-w{width}")
        argv = ctx.queuectl(url, "worker", "start", "--burst", "--concurrency", width)
        peaks = log.with_suffix(".peaks")
        if sample_memory:  # the same command, each process recording its peak as it ends
            argv = exit_peaks.command(peaks, argv)
        with open(log, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, env=ctx.env, cwd=ctx.work, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            try:
                code = proc.wait(timeout=600)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            drain_s = time.perf_counter() - start
        memory = drain_memory(exit_peaks.read(peaks, proc.pid)) if sample_memory else None
        if code != 0:
            raise RuntimeError(f"worker start --burst exited {code}:\n{log.read_text(errors='replace')[-2000:]}")
        counts = job_counts(url)
        if counts.get("completed") != n:
            raise RuntimeError(f"drain W={width}: expected {n} completed jobs, found {counts}")
        return {"enqueue_s": enqueue_s, "drain_s": drain_s, "memory": memory}
    finally:
        backend.drop(url)


def ceiling_drain(ctx, jobs_file: Path, width: int) -> float:
    """The same commands, started as a queuectl slot starts them, by a Python process that
    imports SQLAlchemy and keeps no queue (bench/drain_ceiling.py): no drain can be faster."""
    return ctx.run([ctx.py, str(REPO / "bench" / "drain_ceiling.py"), "spawn", jobs_file, str(width)], name=f"ceiling-w{width}")


def writes_alone(ctx, backend, jobs_file: Path, n: int, width: int) -> dict:
    """queuectl's own writes for a drain of n jobs (end one, claim the next), in width
    processes, no command run (bench/drain_ceiling.py): wall and CPU per job."""
    url = backend.fresh("writes")
    try:
        ctx.run(ctx.queuectl(url, "enqueue", "--file", jobs_file), name="enqueue-file")
        out = ctx.tmp / f"writes-w{width}.json"
        wall = ctx.run([ctx.py, str(REPO / "bench" / "drain_ceiling.py"), "writes", url, str(width), out], name=f"writes-w{width}")
        shares = json.loads(out.read_text())["shares"]
        if sum(share["jobs"] for share in shares) != n:
            raise RuntimeError(f"writes W={width}: ended {[share['jobs'] for share in shares]} jobs, expected {n} in all")
        return {"writes_s": wall, "writes_cpu_s": sum(share["cpu_s"] for share in shares)}
    finally:
        backend.drop(url)


def empty_burst(ctx, backend, width: int) -> float:
    """The fixed cost of a drain: `worker start --burst` on an empty queue, start to exit."""
    url = backend.fresh("empty")
    try:
        return ctx.run(ctx.queuectl(url, "worker", "start", "--burst", "--concurrency", width), name=f"empty-burst-w{width}")
    finally:
        backend.drop(url)


TSP_SCRIPT = """
# One tsp client process per job (that is how task-spooler enqueues), then a barrier
# job that needs all W slots: it starts only when every earlier job has finished.
while IFS= read -r c; do tsp -n sh -c "$c" >/dev/null || exit 1; done < "$1"
b=$(tsp -N "$2" true) || exit 1   # (without -n: tsp -n prints no job id)
[ -n "$b" ] && tsp -w "$b"
"""


def tsp_drain(ctx, jobs_file: Path, width: int) -> float:
    """Wall time from the first `tsp` enqueue until the last job has finished.

    task-spooler cannot hold more than ~1000 queued jobs (each queued job is a
    waiting client process), so its jobs are enqueued while the server runs them:
    the figure necessarily includes one `tsp` client process per job.
    """
    sock_dir = ctx.tmp / f"tsp-{time.monotonic_ns()}"
    sock_dir.mkdir()
    env = dict(ctx.env, TS_SOCKET=str(sock_dir / "socket"), TMPDIR=str(sock_dir))
    subprocess.run([TSP, "-S", str(width)], env=env, check=True, cwd=ctx.work, stdout=subprocess.DEVNULL)  # starts the server
    try:
        return ctx.run(["sh", "-c", TSP_SCRIPT, "sh", str(jobs_file), str(width)], env=env, name=f"tsp-S{width}")
    finally:
        subprocess.run([TSP, "-K"], env=env, cwd=ctx.work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(sock_dir, ignore_errors=True)


def drain(ctx, backend, n: int, rounds: dict) -> dict:
    """rounds: {width: how many interleaved rounds}."""
    jobs_file = write_lines(ctx.tmp / f"drain-{n}.txt", n)
    result = {"n": n, "rounds": rounds, "tsp": bool(TSP), "widths": {}}
    for width, count in rounds.items():
        runs = []
        for r in range(count):
            order = ["xargs", "queuectl", "tsp", "empty", "ceiling", "writes"]
            order = order[r % 6 :] + order[: r % 6]  # rotate, so no contender always runs first
            run = {}
            for what in order:
                if what == "empty":
                    run["empty_s"] = empty_burst(ctx, backend, width)
                elif what == "xargs":
                    run["xargs_s"] = xargs_drain(ctx, jobs_file, width)
                elif what == "ceiling":
                    run["ceiling_s"] = ceiling_drain(ctx, jobs_file, width)
                elif what == "writes":
                    run.update(writes_alone(ctx, backend, jobs_file, n, width))
                elif what == "queuectl":
                    run.update(queuectl_drain(ctx, backend, jobs_file, n, width, sample_memory=width == 2))
                elif TSP:
                    run["tsp_s"] = tsp_drain(ctx, jobs_file, width)
            runs.append(run)
            print(f"    drain W={width} round {r + 1}: " + ", ".join(f"{k}={v:.2f}s" for k, v in run.items() if k.endswith("_s")), flush=True)
        summary = {
            "empty_burst_s": median([r["empty_s"] for r in runs]),
            "per_job_jobs_s": median([n / (r["drain_s"] - r["empty_s"]) for r in runs]),
            "per_job_vs_xargs": median([r["xargs_s"] / (r["drain_s"] - r["empty_s"]) for r in runs]),
            "queuectl_jobs_s": median([n / r["drain_s"] for r in runs]),
            "xargs_jobs_s": median([n / r["xargs_s"] for r in runs]),
            "vs_xargs": median([r["xargs_s"] / r["drain_s"] for r in runs]),
            "enqueue_plus_drain_jobs_s": median([n / (r["enqueue_s"] + r["drain_s"]) for r in runs]),
            "ceiling_vs_xargs": median([r["xargs_s"] / r["ceiling_s"] for r in runs]),
            "writes_s": median([r["writes_s"] for r in runs]),
            "writes_cpu_ms_per_job": median([r["writes_cpu_s"] / n * 1000 for r in runs]),
        }
        if TSP:
            summary.update(
                tsp_jobs_s=median([n / r["tsp_s"] for r in runs]),
                vs_tsp=median([r["tsp_s"] / r["drain_s"] for r in runs]),
                enqueue_plus_drain_vs_tsp=median([r["tsp_s"] / (r["enqueue_s"] + r["drain_s"]) for r in runs]),
            )
        if any(r["memory"] is not None for r in runs):
            summary.update(memory_summary([r["memory"] for r in runs], width))
        result["widths"][str(width)] = {"runs": runs, **summary}
    return result


# --- 3: bulk enqueue -------------------------------------------------------------------------


def bulk_enqueue(ctx, backend, n: int, rounds: int) -> dict:
    """`queuectl enqueue --file` of n jobs (one process, wall time), beside the same rows
    inserted by the bare database driver (bench/floor_insert.py)."""
    jobs_file = write_lines(ctx.tmp / f"bulk-{n}.txt", n)
    runs = []
    for r in range(rounds):
        run = {}
        for what in (("queuectl", "floor") if r % 2 == 0 else ("floor", "queuectl")):
            url = backend.fresh("bulk")
            try:
                if what == "queuectl":
                    run["queuectl_s"] = ctx.run(ctx.queuectl(url, "enqueue", "--file", jobs_file), name="bulk-enqueue")
                else:
                    run["floor_s"] = ctx.run([ctx.py, str(REPO / "bench" / "floor_insert.py"), url, str(jobs_file), "1"], name="bulk-floor")
                counts = job_counts(url)
                if counts.get("pending") != n:
                    raise RuntimeError(f"bulk {what}: expected {n} pending jobs, found {counts}")
            finally:
                backend.drop(url)
        runs.append(run)
        print(f"    bulk round {r + 1}: queuectl={run['queuectl_s']:.2f}s floor={run['floor_s']:.2f}s", flush=True)
    return {
        "n": n,
        "runs": runs,
        "queuectl_jobs_s": median([n / r["queuectl_s"] for r in runs]),
        "floor_jobs_s": median([n / r["floor_s"] for r in runs]),
        "vs_floor": median([r["floor_s"] / r["queuectl_s"] for r in runs]),
    }


# --- 4: single enqueue latency ----------------------------------------------------------------


def single_enqueue(ctx, backend, samples: int) -> dict:
    """One `queuectl enqueue "true"` process vs `python -c "import sqlalchemy"`,
    interleaved. On PostgreSQL a third process also imports the driver (psycopg):
    the floor there, since queuectl cannot import less."""
    url = backend.fresh("single")
    contenders = {
        "enqueue": ctx.queuectl(url, "enqueue", "true"),
        "floor": [ctx.py, "-c", "import sqlalchemy"],
    }
    if backend.name == "postgresql":
        contenders["driver_floor"] = [ctx.py, "-c", "import sqlalchemy, psycopg"]
    times = {key: [] for key in contenders}
    try:
        for _ in range(2):  # warm-up: page cache, bytecode cache
            for key, argv in contenders.items():
                ctx.run(argv, name=f"single-warmup-{key}")
        for i in range(samples):
            order = list(contenders.items())
            for key, argv in order if i % 2 == 0 else reversed(order):
                times[key].append(ctx.run(argv, name=f"single-{key}"))
    finally:
        backend.drop(url)
    result = {"samples": samples}
    for key, values in times.items():
        result[f"{key}_s"] = values
        result[f"{key}_median_s"] = median(values)
    result["ratio"] = median(times["enqueue"]) / median(times["floor"])
    result["pair_ratio_median"] = median([a / b for a, b in zip(times["enqueue"], times["floor"])])
    if "driver_floor" in times:
        result["driver_ratio"] = median(times["enqueue"]) / median(times["driver_floor"])
    return result


# --- 5: pickup latency ------------------------------------------------------------------------


def _wait_file(path: Path, timeout: float = 15.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = path.read_text().strip()
            if text:
                return float(text)
        except FileNotFoundError:
            pass
        time.sleep(0.0005)
    raise RuntimeError(f"{path} was not written within {timeout}s")


def _wait_idle_worker(db, timeout: float = 60.0) -> None:
    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.read() as conn:
            if conn.execute(text("SELECT count(*) FROM workers WHERE role = 'worker' AND state = 'idle'")).scalar():
                return
        time.sleep(0.05)
    raise RuntimeError("no idle worker appeared")


def pickup(ctx, backend, samples: int, listen: bool = True) -> dict:
    """An idle pool (`worker start -c 1`); time from just before an in-process
    jobs.enqueue() to the `date +%s.%N` the job wrote. Beside each sample: the
    same command spawned directly by this process (the floor any runner pays)."""
    from sqlalchemy import text

    from queuectl import jobspec
    from queuectl.store import jobs
    from queuectl.store.database import Database

    url = backend.fresh("pickup")
    env = dict(ctx.env)
    if not listen:
        env["QUEUECTL_LISTEN"] = "0"
    out_dir = ctx.tmp / f"pickup-{time.monotonic_ns()}"
    out_dir.mkdir()
    log = ctx.log_file("pickup-worker")
    db = Database(url)  # durable, like `queuectl enqueue`
    proc = None
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ctx.queuectl(url, "worker", "start", "-c", "1"), env=env, cwd=ctx.work, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        _wait_idle_worker(db)
        time.sleep(0.5)
        listening = None
        if backend.name == "postgresql":
            with db.read() as conn:
                listening = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'")
                ).scalar()
        latencies, floors, commits = [], [], []
        # Random pauses (0.2 s on average): a fixed pause would phase-lock the enqueues
        # with the worker's poll cycle and always hit the same point of it.
        rng = random.Random(1)
        for i in range(samples + 1):  # the first is a warm-up (compiled statements, page cache)
            target = out_dir / f"job-{i}"
            command = f"date +%s.%N > {target}.tmp && mv {target}.tmp {target}"
            spec = jobspec.build(command, cwd=str(ctx.work))
            t0 = time.time()
            jobs.enqueue(db, [spec])
            committed = time.time()
            done = _wait_file(target)
            if i:
                latencies.append(done - t0)
                commits.append(committed - t0)
            time.sleep(rng.uniform(0.05, 0.15))
            target = out_dir / f"floor-{i}"
            argv = ["/bin/sh", "-c", f"date +%s.%N > {target}.tmp && mv {target}.tmp {target}"]
            t0 = time.time()
            subprocess.Popen(argv, cwd=ctx.work, stdin=subprocess.DEVNULL).wait()
            done = _wait_file(target)
            if i:
                floors.append(done - t0)
            time.sleep(rng.uniform(0.05, 0.15))
        if proc.poll() is not None:
            raise RuntimeError(f"the worker pool exited early:\n{log.read_text(errors='replace')[-2000:]}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        db.dispose()
        backend.drop(url)
        shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "samples": samples,
        "listen": listen,
        "listening_connections": listening,
        "latency_s": latencies,
        "median_s": median(latencies),
        "p95_s": p95(latencies),
        "enqueue_s": commits,
        "enqueue_median_s": median(commits),
        "after_commit_median_s": median([a - b for a, b in zip(latencies, commits)]),
        "after_commit_p95_s": p95([a - b for a, b in zip(latencies, commits)]),
        "spawn_floor_s": floors,
        "spawn_floor_median_s": median(floors),
    }


def listen_switch_present() -> bool:
    """Whether queuectl/store/dialect.py reads QUEUECTL_LISTEN."""
    try:
        return "QUEUECTL_LISTEN" in (REPO / "queuectl" / "store" / "dialect.py").read_text()
    except OSError:
        return False


# --- 6: scale ---------------------------------------------------------------------------------

_SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy's SQLite DATETIME stores a value

_COLUMNS = (
    "id, seq, command, state, attempts, max_retries, priority, queue, run_at, timeout, cwd, "
    "created_at, updated_at, started_at, finished_at, exit_code, last_error, output, worker_id"
)
# x: 1..n; the last `pending` rows are pending (the newest jobs), the rest completed history.
_SELECT = """
    {id}, x, 'true',
    CASE WHEN x > :done THEN 'pending' ELSE :history END,
    CASE WHEN x > :done THEN 0 ELSE 1 END,
    3, 0, 'default', :ts, NULL, :cwd, :ts, :ts,
    CASE WHEN x > :done THEN NULL ELSE :ts END,
    CASE WHEN x > :done THEN NULL ELSE :ts END,
    CASE WHEN x > :done THEN NULL ELSE 0 END,
    NULL,
    CASE WHEN x > :done THEN NULL ELSE '' END,
    CASE WHEN x > :done THEN NULL ELSE 'w-history' END
"""


def build_table(backend, url: str, total: int, pending: int, cwd: str, history: str = "completed") -> float:
    """Fill `jobs` with `total` rows (total - pending in state `history`, completed by
    default, then pending) through the real schema, and set the `_seq` counter to the
    highest seq. Returns seconds."""
    from sqlalchemy import create_engine, text

    start = time.perf_counter()
    ts = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    params = {"n": total, "done": total - pending, "cwd": cwd, "history": history}
    if backend.name == "sqlite":
        import sqlite3

        path = url[len("sqlite:///") :]
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA synchronous = OFF")  # setup only; nothing timed depends on it
        conn.execute("BEGIN")
        conn.execute(
            f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) "
            f"INSERT INTO jobs ({_COLUMNS}) SELECT {_SELECT.format(id='CAST(x AS TEXT)')} FROM c",
            dict(params, ts=ts.strftime(_SQLITE_TS)),
        )
        conn.execute("UPDATE config SET value = :n WHERE key = '_seq'", {"n": str(total)})
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        # synchronous=OFF left the whole build in the OS's dirty pages: flush it now, or
        # the first checkpoint of the timed part (an fsync) would pay for writing it.
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(
                text(f"INSERT INTO jobs ({_COLUMNS}) SELECT {_SELECT.format(id='x::text')} FROM generate_series(1, :n) AS x"),
                dict(params, ts=ts),
            )
            conn.execute(text("UPDATE config SET value = :n WHERE key = '_seq'"), {"n": str(total)})
            # What autovacuum does after a bulk load; a long-lived queue has statistics.
            conn.execute(text("VACUUM ANALYZE jobs"))
            # Written out now, not by a checkpoint in the middle of the timed part.
            conn.execute(text("CHECKPOINT"))
        engine.dispose()
    return time.perf_counter() - start


def scale(ctx, backend, small: int, big: int, pending: int, cycles: int, status_runs: int) -> dict:
    """Claim+complete cycles and `status` with `small` vs `big` jobs in the table,
    alternating between the two databases so that both see the same machine."""
    from queuectl import status
    from queuectl.store import Store, transitions
    from queuectl.store.database import Database
    from queuectl.timeutil import utcnow
    from queuectl.worker.waiter import Waiter

    sizes = {"small": small, "big": big}
    urls, dbs, build_s = {}, {}, {}
    try:
        for key, total in sizes.items():
            urls[key] = backend.fresh(f"scale{key}")
            build_s[key] = build_table(backend, urls[key], total, pending, str(ctx.work))
            dbs[key] = Database(urls[key], durable=False)  # as a worker opens it
            print(f"    scale: built {total:,} rows in {build_s[key]:.1f}s", flush=True)

        def cycle(db, worker_id):
            t0 = time.perf_counter()
            with db.begin() as conn:
                job = transitions.claim(conn, worker_id, None, utcnow())
            if job is None:
                raise RuntimeError("scale: nothing left to claim")
            with db.begin() as conn:
                if not transitions.complete(conn, job.id, worker_id, exit_code=0, output="", now=utcnow()):
                    raise RuntimeError("scale: lost the claimed job")
            return time.perf_counter() - t0

        def status_once(db):
            t0 = time.perf_counter()
            status.report(Store(db))
            return time.perf_counter() - t0

        def idle_poll(waiter):
            waiter.found(False)
            t0 = time.perf_counter()
            waiter.work_may_exist()
            return time.perf_counter() - t0

        waiters = {key: Waiter(Store(db), ()) for key, db in dbs.items()}
        claim_t = {key: [] for key in sizes}
        status_t = {key: [] for key in sizes}
        poll_t = {key: [] for key in sizes}
        for key in sizes:  # warm-up: connections, compiled statements, page cache
            for _ in range(5):
                cycle(dbs[key], "w-bench")
            status_once(dbs[key])
            idle_poll(waiters[key])
        blocks = 4
        for b in range(blocks):
            for key in (("small", "big") if b % 2 == 0 else ("big", "small")):
                claim_t[key] += [cycle(dbs[key], "w-bench") for _ in range(cycles // blocks)]
        for i in range(status_runs):
            for key in (("small", "big") if i % 2 == 0 else ("big", "small")):
                status_t[key].append(status_once(dbs[key]))
                poll_t[key].append(idle_poll(waiters[key]))
    finally:
        for db in dbs.values():
            db.dispose()
        for url in urls.values():
            backend.drop(url)
    result = {"sizes": sizes, "pending": pending, "build_s": build_s, "cycles": len(claim_t["small"]), "status_runs": status_runs}
    for key in sizes:
        result[key] = {
            "claim_cycle_mean_s": mean(claim_t[key]),
            "claim_cycle_s": claim_t[key],
            "status_median_s": median(status_t[key]),
            "status_s": status_t[key],
            "idle_poll_median_s": median(poll_t[key]),
            "idle_poll_s": poll_t[key],
        }
    result["claim_ratio"] = result["big"]["claim_cycle_mean_s"] / result["small"]["claim_cycle_mean_s"]
    result["status_ratio"] = result["big"]["status_median_s"] / result["small"]["status_median_s"]
    result["idle_poll_ratio"] = result["big"]["idle_poll_median_s"] / result["small"]["idle_poll_median_s"]
    return result


# --- 8: flow control: blocked jobs and schedules ---------------------------------------------


def flow(ctx, backend, blocked: int, schedules: int, pending: int, cycles: int, passes: int) -> dict:
    """Claim+complete cycles against three databases, alternating: `pending` ready jobs
    alone ("empty"), the same beside `blocked` blocked jobs that all wait for one job
    not yet due (each with its job_dependencies row), and beside `schedules` schedules
    (none due). Also a supervisor's scheduler pass over those schedules."""
    from sqlalchemy import create_engine, insert, text

    from queuectl import cron, jobspec
    from queuectl.store import Store, transitions
    from queuectl.store import schedules as schedule_rows
    from queuectl.store.database import Database
    from queuectl.store.models import JOBS
    from queuectl.timeutil import utcnow
    from queuectl.worker.scheduler import Scheduler

    kinds = ("empty", "blocked", "schedules")
    urls, dbs, build_s = {}, {}, {}
    try:
        for key in kinds:
            urls[key] = backend.fresh(f"flow{key}")
            total = pending + (blocked if key == "blocked" else 0)
            t0 = time.perf_counter()
            build_table(backend, urls[key], total, pending, str(ctx.work), history="blocked")
            engine = create_engine(urls[key])
            with engine.begin() as conn:
                now = utcnow()
                if key == "blocked":
                    # The job they all wait for: pending, due in a year (never claimed here).
                    conn.execute(insert(JOBS).values(
                        id="gate", seq=total + 1, command="true", state="pending", attempts=0, max_retries=3, priority=0,
                        queue="default", run_at=now + timedelta(days=365), cwd=str(ctx.work), created_at=now, updated_at=now,
                        runs=0, has_dependents=True,
                    ))
                    conn.execute(text("UPDATE config SET value = :n WHERE key = '_seq'"), {"n": str(total + 1)})
                    conn.execute(text(
                        "INSERT INTO job_dependencies (job_id, depends_on, kind) SELECT id, 'gate', 'after' FROM jobs WHERE state = 'blocked'"
                    ))
                if key == "schedules":
                    spec = jobspec.build("true")
                    for n in range(schedules):
                        expr = f"{n % 60} {n % 24} * * *"
                        schedule_rows.add(conn, name=f"s{n}", cron=expr, tz="UTC", catch_up="one", overlap="skip", spec=spec,
                                          next_run=cron.next_tick(expr, "UTC", now + timedelta(days=1)), now=now, replace=False)
            if backend.name == "postgresql":
                with create_engine(urls[key], isolation_level="AUTOCOMMIT").connect() as conn:
                    conn.execute(text("VACUUM ANALYZE"))
            engine.dispose()
            build_s[key] = time.perf_counter() - t0
            dbs[key] = Database(urls[key], durable=False)  # as a worker opens it
            print(f"    flow: built {key} in {build_s[key]:.1f}s", flush=True)

        def cycle(db):
            t0 = time.perf_counter()
            with db.begin() as conn:
                job = transitions.claim(conn, "w-bench", None, utcnow())
            if job is None:
                raise RuntimeError("flow: nothing left to claim")
            with db.begin() as conn:
                if not transitions.complete(conn, job.id, "w-bench", exit_code=0, output="", now=utcnow()):
                    raise RuntimeError("flow: lost the claimed job")
            return time.perf_counter() - t0

        scheduler = Scheduler(Store(dbs["schedules"]))

        def scheduler_pass():
            t0 = time.perf_counter()
            if scheduler.run_once():
                raise RuntimeError("flow: a schedule fired")
            return time.perf_counter() - t0

        claim_t: dict[str, list[float]] = {key: [] for key in kinds}
        for key in kinds:  # warm-up
            for _ in range(5):
                cycle(dbs[key])
        scheduler_pass()
        blocks = 8
        for b in range(blocks):
            for key in (kinds if b % 2 == 0 else tuple(reversed(kinds))):
                claim_t[key] += [cycle(dbs[key]) for _ in range(cycles // blocks)]
        pass_t = [scheduler_pass() for _ in range(passes)]
        with dbs["blocked"].read() as conn:
            still_blocked = conn.execute(text("SELECT COUNT(*) FROM jobs WHERE state = 'blocked'")).scalar()
        if still_blocked != blocked:
            raise RuntimeError(f"flow: {still_blocked} blocked jobs left of {blocked}")
    finally:
        for db in dbs.values():
            db.dispose()
        for url in urls.values():
            backend.drop(url)
    result: dict = {"blocked": blocked, "schedules": schedules, "pending": pending, "build_s": build_s,
                    "cycles": len(claim_t["empty"])}
    for key in kinds:
        result[key] = {"claim_cycle_mean_s": mean(claim_t[key]), "claim_cycle_s": claim_t[key]}
    result["blocked_ratio"] = result["blocked"]["claim_cycle_mean_s"] / result["empty"]["claim_cycle_mean_s"]
    result["schedules_ratio"] = result["schedules"]["claim_cycle_mean_s"] / result["empty"]["claim_cycle_mean_s"]
    result["scheduler_pass_median_s"] = median(pass_t)
    result["scheduler_pass_s"] = pass_t
    return result
