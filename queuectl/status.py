"""`queuectl status`: job counts, the next scheduled job and the workers."""

import time

from sqlalchemy import BigInteger, cast, func, select

from queuectl.jobs import PURGED_KEY, SEQ_KEY
from queuectl.models import ConfigEntry, Worker
from queuectl.states import CLAIMABLE, LIVE_WORKER_STATES, JobState
from queuectl.timeutil import iso, utcnow
from queuectl.transitions import dead_jobs, jobs, state_in

# Stopped or dead workers stay visible this long, then drop out of the list.
RECENT_SECONDS = 60


def _count(*where):
    return select(func.count()).select_from(jobs).where(*where).scalar_subquery()


def _counter(key: str):
    config = ConfigEntry.__table__
    return select(cast(config.c.value, BigInteger)).where(config.c.key == key).scalar_subquery()


def job_counts(conn) -> dict[str, int]:
    """Counts per state, at a cost that does not grow with the history.

    The live states are counted through their partial indexes and the DLQ with
    one count(*) (it holds failures until someone retries or purges them). Completed
    jobs are not counted at all: every job ever enqueued took a number from '_seq',
    and the only way out of the database is a DLQ purge ('_purged'), so completed =
    enqueued - purged - live - dead. One statement, so one snapshot on PostgreSQL too.
    """
    pending, failed, running = JobState.PENDING.value, JobState.FAILED.value, JobState.RUNNING.value
    row = conn.execute(
        select(
            # state_in(*CLAIMABLE) matches ix_jobs_claim's WHERE, so SQLite uses it.
            _count(state_in(*CLAIMABLE), state_in(pending)).label(pending),
            _count(state_in(*CLAIMABLE), state_in(failed)).label(failed),
            _count(state_in(running)).label(running),
            select(func.count()).select_from(dead_jobs).scalar_subquery().label("dead"),
            _counter(SEQ_KEY).label("enqueued"),
            _counter(PURGED_KEY).label("purged"),
        )
    ).one()
    counts = {state.value: 0 for state in JobState}
    counts.update({pending: row.pending, failed: row.failed, running: row.running, JobState.DEAD.value: row.dead})
    counts[JobState.COMPLETED.value] = row.enqueued - row.purged - row.pending - row.failed - row.running - row.dead
    return counts


def report(db, now=None, hostname: str | None = None) -> dict:
    from queuectl.worker.identity import default_hostname

    clock_given = now is not None
    now = now or utcnow()
    hostname = hostname or default_hostname()
    with db.read() as conn:
        counts = job_counts(conn)
        nxt = conn.execute(
            select(jobs.c.id, jobs.c.run_at)
            .where(state_in(*CLAIMABLE), jobs.c.run_at > now)
            .order_by(jobs.c.run_at, jobs.c.seq)
            .limit(1)
        ).first()
        rows = conn.execute(select(Worker.__table__).where(Worker.role == "worker").order_by(Worker.started_at, Worker.id)).all()
    if not clock_given:
        # Ages are measured from after the read: every heartbeat it saw was committed
        # before this moment, so none looks younger than zero.
        now = utcnow()
    workers = []
    for row in rows:
        live = row.state in LIVE_WORKER_STATES
        if not live and (row.stopped_at is None or (now - row.stopped_at).total_seconds() > RECENT_SECONDS):
            continue
        entry = {
            "id": row.id,
            "host": row.host,
            "pid": row.pid,
            "supervisor_pid": row.supervisor_pid,
            "state": row.state,
            "job_id": row.job_id,
            "started_at": iso(row.started_at),
            "last_heartbeat": iso(row.last_heartbeat),
            "heartbeat_age": round((now - row.last_heartbeat).total_seconds(), 3),
            "processed": row.processed,
            "failed": row.failed,
            "queues": row.queues.split(",") if row.queues else None,
        }
        if live:
            entry.update(_local_process_stats(row, hostname))
        workers.append(entry)
    return {
        "jobs": counts,
        "next_scheduled": {"id": nxt.id, "run_at": iso(nxt.run_at)} if nxt else None,
        "workers": workers,
    }


def _local_process_stats(row, hostname: str) -> dict:
    """CPU and RSS of a worker on this machine (psutil), when its pid is really it."""
    import psutil

    from queuectl.worker.identity import local_process

    proc = local_process(row.pid, row.pid_started) if row.host == hostname else None
    if proc is None:
        return {}
    try:
        with proc.oneshot():
            times = proc.cpu_times()
            age = max(1e-3, time.time() - proc.create_time())
            # Average over the process's life: a one-shot command has no earlier sample.
            return {"cpu_percent": 100.0 * (times.user + times.system) / age, "rss_bytes": proc.memory_info().rss}
    except psutil.Error:  # the process exited while we looked
        return {}
