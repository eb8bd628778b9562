"""The numbers of `queuectl status`, at a cost that does not grow with the history."""

from datetime import datetime

from sqlalchemy import BigInteger, cast, func, literal_column, select

from queuectl.states import CLAIMABLE, JobState
from queuectl.store.jobs import PURGED_KEY, SEQ_KEY
from queuectl.store.models import CONFIG, DEAD_JOBS, JOBS, QUEUES, SETTLED
from queuectl.store.transitions import state_in


def _count(*where):
    return select(func.count()).select_from(JOBS).where(*where).scalar_subquery()


def _counter(key: str):
    return select(cast(CONFIG.c.value, BigInteger)).where(CONFIG.c.key == key).scalar_subquery()


def job_counts(conn, now: datetime | None = None) -> dict[str, int]:
    """Counts per state, at a cost that does not grow with the history.

    The live states are counted through their partial indexes and the DLQ with
    one count(*) (it holds failures until someone retries or purges them). Completed
    jobs are not counted at all: every job ever enqueued took a number from '_seq',
    and the only way out of the database is a DLQ purge ('_purged'), so completed =
    enqueued - purged - live - dead - cancelled. Cancelled jobs are counted through
    their own partial index (ix_jobs_cancelled), blocked ones through theirs
    (ix_jobs_blocked). One statement, so one snapshot on
    PostgreSQL too.

    With `now`, also "ready": the pending jobs due by then (the rest are scheduled
    later), counted through the same index (run_at is in it).
    """
    pending, failed, running = JobState.PENDING.value, JobState.FAILED.value, JobState.RUNNING.value
    cancelled, blocked = JobState.CANCELLED.value, JobState.BLOCKED.value
    row = conn.execute(
        select(
            # state_in(*CLAIMABLE) matches ix_jobs_claim's WHERE, so SQLite uses it.
            _count(state_in(*CLAIMABLE), state_in(pending)).label(pending),
            _count(state_in(*CLAIMABLE), state_in(failed)).label(failed),
            _count(state_in(running)).label(running),
            _count(state_in(cancelled)).label(cancelled),
            _count(state_in(blocked)).label(blocked),
            select(func.count()).select_from(DEAD_JOBS).scalar_subquery().label("dead"),
            _counter(SEQ_KEY).label("enqueued"),
            _counter(PURGED_KEY).label("purged"),
            (_count(state_in(*CLAIMABLE), state_in(pending), JOBS.c.run_at <= now) if now else literal_column("0")).label("ready"),
        )
    ).one()
    counts = {state.value: 0 for state in JobState}
    counts.update({pending: row.pending, failed: row.failed, running: row.running, JobState.DEAD.value: row.dead, cancelled: row.cancelled,
                   blocked: row.blocked})
    counts[JobState.COMPLETED.value] = (row.enqueued - row.purged - row.pending - row.failed - row.running - row.dead - row.cancelled
                                        - row.blocked)
    if now is not None:
        counts["ready"] = row.ready
    return counts


def per_queue(conn, now: datetime) -> dict[str, dict]:
    """Per queue: ready (pending, due by `now`), scheduled (pending, later), running,
    failed, dead, cancelled, the run_at of the longest-waiting ready job, and its
    controls (paused, max_running; store/queues.py). A paused or limited queue is
    listed even with no jobs.

    The live states are grouped through their partial indexes (ix_jobs_claim,
    ix_jobs_running, ix_jobs_cancelled), so completed jobs are never read; dead ones
    from the DLQ.
    """
    failed, running = JobState.FAILED.value, JobState.RUNNING.value
    figures: dict[str, dict] = {}

    def entry(queue: str) -> dict:
        return figures.setdefault(queue, {"ready": 0, "scheduled": 0, "running": 0, "failed": 0, "dead": 0, "cancelled": 0, "oldest_ready": None,
                                          "paused": False, "max_running": None})

    due = (JOBS.c.run_at <= now).label("due")
    claimable = conn.execute(
        select(JOBS.c.queue, JOBS.c.state, due, func.count(), func.min(JOBS.c.run_at))
        .where(state_in(*CLAIMABLE))
        .group_by(JOBS.c.queue, JOBS.c.state, due)
    ).all()
    for queue, state, is_due, count, oldest in claimable:
        figures_of = entry(queue)
        if state == failed:
            figures_of["failed"] += count
        elif is_due:
            figures_of["ready"] += count
            figures_of["oldest_ready"] = oldest
        else:
            figures_of["scheduled"] += count
    for queue, count in conn.execute(select(JOBS.c.queue, func.count()).where(state_in(running)).group_by(JOBS.c.queue)):
        entry(queue)["running"] = count
    for queue, count in conn.execute(select(DEAD_JOBS.c.queue, func.count()).group_by(DEAD_JOBS.c.queue)):
        entry(queue)["dead"] = count
    cancelled = JobState.CANCELLED.value
    for queue, count in conn.execute(select(JOBS.c.queue, func.count()).where(state_in(cancelled)).group_by(JOBS.c.queue)):
        entry(queue)["cancelled"] = count
    for name, paused, max_running in conn.execute(select(QUEUES.c.name, QUEUES.c.paused, QUEUES.c.max_running)):
        entry(name).update(paused=bool(paused), max_running=max_running)
    return dict(sorted(figures.items()))


def next_scheduled(conn, now: datetime):
    """The first job that becomes due after `now` (id, run_at), or None."""
    return conn.execute(
        select(JOBS.c.id, JOBS.c.run_at)
        .where(state_in(*CLAIMABLE), JOBS.c.run_at > now)
        .order_by(JOBS.c.run_at, JOBS.c.seq)
        .limit(1)
    ).first()


def recently_finished(conn, limit: int) -> list:
    """The `limit` jobs that ended last (completed, cancelled or dead), newest first:
    rows of id, state, finished_at, exit_code, command.

    Completed and cancelled jobs are read backwards along ix_jobs_finished (the
    state_in below matches its WHERE, so SQLite uses it), so the history is never
    sorted; dead jobs from the DLQ, by when they entered it (as `status` counts it
    whole, it is no bigger a read).
    """
    columns = (JOBS.c.id, JOBS.c.state, JOBS.c.finished_at, JOBS.c.exit_code, JOBS.c.command)
    settled = conn.execute(
        select(*columns).where(state_in(*SETTLED), JOBS.c.finished_at.is_not(None)).order_by(JOBS.c.finished_at.desc()).limit(limit)
    ).all()
    dead = conn.execute(
        select(DEAD_JOBS.c.id, DEAD_JOBS.c.state, DEAD_JOBS.c.dead_at.label("finished_at"), DEAD_JOBS.c.exit_code, DEAD_JOBS.c.command)
        .order_by(DEAD_JOBS.c.dead_at.desc())
        .limit(limit)
    ).all()
    return sorted(settled + dead, key=lambda row: row.finished_at, reverse=True)[:limit]


def recently_completed(conn, since: datetime, limit: int) -> list:
    """The jobs completed at or after `since`, newest first, at most `limit` of them:
    rows of queue, created_at, run_at, started_at, finished_at. Read backwards along
    ix_jobs_finished (state_in(*SETTLED) is its WHERE, so SQLite uses it), so only the
    window is read, never the history."""
    return conn.execute(
        select(JOBS.c.queue, JOBS.c.created_at, JOBS.c.run_at, JOBS.c.started_at, JOBS.c.finished_at)
        .where(state_in(*SETTLED), JOBS.c.finished_at >= since, JOBS.c.state == JobState.COMPLETED.value)
        .order_by(JOBS.c.finished_at.desc())
        .limit(limit)
    ).all()


def timings(rows) -> dict[str, dict[str, list[float]]]:
    """Per queue, from recently_completed's rows: "durations" (finished_at - started_at:
    the last attempt's run) and "waits" (started_at - when the job became ready to
    run: the later of created_at and run_at, so a delay or a retry's backoff is not
    waiting), in seconds, each list sorted."""
    found: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row.started_at is None or row.finished_at is None:
            continue
        entry = found.setdefault(row.queue, {"durations": [], "waits": []})
        entry["durations"].append(max(0.0, (row.finished_at - row.started_at).total_seconds()))
        ready = max(row.created_at, row.run_at)
        entry["waits"].append(max(0.0, (row.started_at - ready).total_seconds()))
    for entry in found.values():
        entry["durations"].sort()
        entry["waits"].sort()
    return found


def blocked_per_queue(conn) -> dict[str, int]:
    """{queue: blocked jobs}, through ix_jobs_blocked (never the history)."""
    blocked = JobState.BLOCKED.value
    return dict(conn.execute(select(JOBS.c.queue, func.count()).where(state_in(blocked)).group_by(JOBS.c.queue)).all())
