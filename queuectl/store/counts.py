"""The numbers of `queuectl status`, at a cost that does not grow with the history."""

from datetime import datetime

from sqlalchemy import BigInteger, cast, func, select

from queuectl.states import CLAIMABLE, JobState
from queuectl.store.jobs import PURGED_KEY, SEQ_KEY
from queuectl.store.models import CONFIG, DEAD_JOBS, JOBS
from queuectl.store.transitions import state_in


def _count(*where):
    return select(func.count()).select_from(JOBS).where(*where).scalar_subquery()


def _counter(key: str):
    return select(cast(CONFIG.c.value, BigInteger)).where(CONFIG.c.key == key).scalar_subquery()


def job_counts(conn) -> dict[str, int]:
    """Counts per state, at a cost that does not grow with the history.

    The live states are counted through their partial indexes and the DLQ with
    one count(*) (it holds failures until someone retries or purges them). Completed
    jobs are not counted at all: every job ever enqueued took a number from '_seq',
    and the only way out of the database is a DLQ purge ('_purged'), so completed =
    enqueued - purged - live - dead - cancelled. Cancelled jobs are counted through
    their own partial index (ix_jobs_cancelled). One statement, so one snapshot on
    PostgreSQL too.
    """
    pending, failed, running = JobState.PENDING.value, JobState.FAILED.value, JobState.RUNNING.value
    cancelled = JobState.CANCELLED.value
    row = conn.execute(
        select(
            # state_in(*CLAIMABLE) matches ix_jobs_claim's WHERE, so SQLite uses it.
            _count(state_in(*CLAIMABLE), state_in(pending)).label(pending),
            _count(state_in(*CLAIMABLE), state_in(failed)).label(failed),
            _count(state_in(running)).label(running),
            _count(state_in(cancelled)).label(cancelled),
            select(func.count()).select_from(DEAD_JOBS).scalar_subquery().label("dead"),
            _counter(SEQ_KEY).label("enqueued"),
            _counter(PURGED_KEY).label("purged"),
        )
    ).one()
    counts = {state.value: 0 for state in JobState}
    counts.update({pending: row.pending, failed: row.failed, running: row.running, JobState.DEAD.value: row.dead, cancelled: row.cancelled})
    counts[JobState.COMPLETED.value] = row.enqueued - row.purged - row.pending - row.failed - row.running - row.dead - row.cancelled
    return counts


def next_scheduled(conn, now: datetime):
    """The first job that becomes due after `now` (id, run_at), or None."""
    return conn.execute(
        select(JOBS.c.id, JOBS.c.run_at)
        .where(state_in(*CLAIMABLE), JOBS.c.run_at > now)
        .order_by(JOBS.c.run_at, JOBS.c.seq)
        .limit(1)
    ).first()
