"""The dead-letter queue: jobs out of retries, kept with their last error and output."""

from sqlalchemy import delete, select, update

from queuectl.errors import NotFound, ValidationError
from queuectl.jobs import PURGED_KEY, bump_counter
from queuectl.jobspec import lookup_id
from queuectl.states import JobState
from queuectl.timeutil import utcnow
from queuectl.transitions import move_job, dead_jobs, jobs


def _select_ids(conn, ids: list[str] | None) -> list[str]:
    if ids is None:
        return list(conn.execute(select(dead_jobs.c.id).order_by(dead_jobs.c.seq)).scalars())
    if not ids:
        raise ValidationError("name job ids or use --all")
    wanted = [lookup_id(i) for i in ids]
    found = set(conn.execute(select(dead_jobs.c.id).where(dead_jobs.c.id.in_(wanted))).scalars())
    missing = [i for i in wanted if i not in found]
    if missing:
        raise NotFound(f"no dead job with id {missing[0]!r}")
    return list(dict.fromkeys(wanted))


def retry(db, ids: list[str] | None, now=None) -> list[str]:
    """Move dead jobs back to pending with attempts reset (None means all). All or nothing."""
    now = now or utcnow()
    with db.begin() as conn:
        chosen = _select_ids(conn, ids)
        for job_id in chosen:
            move_job(conn, dead_jobs, jobs, job_id, extra={})
        if chosen:
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(chosen))
                .values(state=JobState.PENDING.value, attempts=0, run_at=now, updated_at=now, started_at=None, finished_at=None, worker_id=None)
            )
            db.dialect.notify(conn)
    return chosen


def purge(db, ids: list[str] | None) -> list[str]:
    """Delete dead jobs for good (None means all)."""
    with db.begin() as conn:
        chosen = _select_ids(conn, ids)
        if chosen:
            conn.execute(delete(dead_jobs).where(dead_jobs.c.id.in_(chosen)))
            bump_counter(conn, PURGED_KEY, len(chosen))
    return chosen
