"""The dead-letter queue: jobs out of retries, kept with their last error and output.

`retry` and `purge` may run at the same time as each other and as themselves (two
`dlq retry --all` at once, on several hosts): each first locks the dead rows it will
act on (transitions.lock_jobs), then moves or deletes exactly those. So every dead
job is retried or purged once, and the loser of a race touches nothing the winner
took: it never resets a retried job that a worker has meanwhile claimed, and never
counts a purge twice. With `--all`, each command acts on the dead jobs it could lock
and reports them (the loser may report none). Named ids are all or nothing: if one
of them is no longer dead (another command took it first), nothing is done and the
error names it.
"""

from sqlalchemy import delete, select, true

from queuectl.errors import NotFound, ValidationError
from queuectl.jobspec import lookup_id
from queuectl.store import attempts, dependencies, unique
from queuectl.store.chunks import chunks
from queuectl.store.jobs import PURGED_KEY, bump_counter
from queuectl.store.models import DEAD_JOBS, JOBS
from queuectl.store.transitions import fresh_start, lock_jobs, move_jobs
from queuectl.timeutil import utcnow


def _lock(conn, ids: list[str] | None) -> list[str]:
    """Lock the dead jobs to act on (None means all); their ids. Named ids: all or none."""
    if ids is None:
        return lock_jobs(conn, DEAD_JOBS, true())
    if not ids:
        raise ValidationError("name job ids or use --all")
    wanted = list(dict.fromkeys(lookup_id(i) for i in ids))
    locked: set[str] = set()
    for chunk in chunks(wanted):
        locked.update(lock_jobs(conn, DEAD_JOBS, DEAD_JOBS.c.id.in_(chunk)))
    missing = next((i for i in wanted if i not in locked), None)
    if missing is not None:
        raise NotFound(_not_dead(conn, missing))
    return wanted


def _not_dead(conn, job_id: str) -> str:
    state = conn.execute(select(JOBS.c.state).where(JOBS.c.id == job_id)).scalar()
    return f"no dead job with id {job_id!r}" + (f" (it is {state})" if state else "")


def retry(db, ids: list[str] | None, now=None, with_dependents: bool = False) -> list[str]:
    """Move dead jobs back to pending with attempts reset (None means all); the ids moved.
    A job with dependencies waits for them again; with_dependents: the jobs cancelled
    because these died are blocked again (see store/dependencies.py)."""
    now = now or utcnow()
    fresh = fresh_start(now)
    with db.begin() as conn:
        chosen = _lock(conn, ids)
        # Active again, each must find its unique key free (KeyTaken names the holder).
        unique.check_free(conn, unique.keys_of(conn, DEAD_JOBS, chosen))
        with unique.guard():
            move_jobs(conn, DEAD_JOBS, JOBS, chosen, values=fresh)
            dependencies.recheck(conn, chosen, now=now)
            if with_dependents:
                dependencies.reblock_dependents(conn, chosen, now=now, fresh=fresh)
        dependencies.woke(conn)
        if chosen:
            db.dialect.notify(conn)
    return chosen


def purge(db, ids: list[str] | None) -> list[str]:
    """Delete dead jobs for good (None means all); the ids deleted, counted in '_purged'."""
    with db.begin() as conn:
        chosen = _lock(conn, ids)
        deleted = 0
        for chunk in chunks(chosen):
            deleted += conn.execute(delete(DEAD_JOBS).where(DEAD_JOBS.c.id.in_(chunk))).rowcount
        if deleted != len(chosen):  # they are locked: anything else is a bug, and nothing is purged
            raise RuntimeError(f"purging {len(chosen)} dead jobs deleted {deleted}")
        attempts.forget(conn, chosen)
        dependencies.forget(conn, chosen)
        if deleted:
            bump_counter(conn, PURGED_KEY, deleted)
    return chosen
