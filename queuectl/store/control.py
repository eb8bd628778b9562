"""Job control: cancelling active jobs; retrying and deleting finished ones.

A waiting job (pending or failed) is cancelled at once, in the same statement that
checks it still waits, so a cancel and a claim exclude each other. A running job
cannot be stopped from here (it may run on another host): it gets
cancel_requested_at, its worker reads it at its next heartbeat, stops the job's
process group (SIGTERM, SIGKILL after kill-grace) and records it cancelled. If that
worker dies first, whoever recovers its jobs finishes the cancel
(transitions.recover).

Retry and delete act on terminal jobs only (completed, cancelled, dead), after
locking them (like the DLQ's moves, store/dlq.py): two at once never act twice on
one job. Deleted jobs are counted in '_purged', which `status` relies on.
"""

from datetime import datetime

from sqlalchemy import and_, select, true, update
from sqlalchemy import delete as delete_rows

from queuectl.errors import NotFound, ValidationError
from queuectl.jobspec import lookup_id
from queuectl.states import ACTIVE, JobState
from queuectl.store import attempts
from queuectl.store.chunks import chunks
from queuectl.store.jobs import PURGED_KEY, bump_counter
from queuectl.store.models import DEAD_JOBS, JOBS
from queuectl.store.transitions import RUNNING, cancel_waiting, fresh_start, lock_jobs, move_jobs, request_cancel, state_in

_ACTIVE = ACTIVE


def cancel(conn, ids: list[str] | None, *, queue: str | None, state: JobState | None, now: datetime) -> tuple[list[str], list[str]]:
    """Cancel the named jobs (all or nothing: each must still be active), or every
    active job of `queue` and/or `state`. (cancelled at once, asked to stop)."""
    if ids is not None:
        chosen = _named(conn, ids)
    else:
        if state is not None and state.value not in _ACTIVE:
            raise ValidationError(f"{state.value} jobs cannot be cancelled (only pending, failed or running ones)")
        query = select(JOBS.c.id).where(state_in(*((state.value,) if state else _ACTIVE)))
        if queue is not None:
            query = query.where(JOBS.c.queue == queue)
        chosen = list(conn.execute(query.order_by(JOBS.c.seq)).scalars())
    cancelled = cancel_waiting(conn, chosen, now=now)
    done = set(cancelled)
    # Whatever did not wait any more is running, or was claimed a moment ago.
    asked = request_cancel(conn, [i for i in chosen if i not in done], now=now)
    return cancelled, asked


def _named(conn, ids: list[str]) -> list[str]:
    wanted = list(dict.fromkeys(lookup_id(i) for i in ids))
    states: dict[str, str] = {}
    for chunk in chunks(wanted):
        states.update(conn.execute(select(JOBS.c.id, JOBS.c.state).where(JOBS.c.id.in_(chunk))).all())
        states.update({i: JobState.DEAD.value for i in conn.execute(select(DEAD_JOBS.c.id).where(DEAD_JOBS.c.id.in_(chunk))).scalars()})
    for job_id in wanted:
        if job_id not in states:
            raise NotFound(f"no job with id {job_id!r}")
        if states[job_id] not in _ACTIVE:
            raise NotFound(f"job {job_id!r} is {states[job_id]}: only pending, failed or running jobs can be cancelled")
    return wanted


def still_running(conn, ids: list[str]) -> list[str]:
    """Those of `ids` still running (a cancel waits for them to stop)."""
    running: list[str] = []
    for chunk in chunks(ids):
        running += conn.execute(select(JOBS.c.id).where(JOBS.c.id.in_(chunk), state_in(RUNNING))).scalars().all()
    return running


# --- retry and delete: terminal jobs ---------------------------------------------------------

# Terminal states whose jobs stay in `jobs` (dead ones are in dead_jobs, the DLQ).
_FINISHED_LIVE = (JobState.COMPLETED.value, JobState.CANCELLED.value)
_TERMINAL = (*_FINISHED_LIVE, JobState.DEAD.value)


def _lock_terminal(conn, ids: list[str] | None, state: JobState | None, finished_before: datetime | None) -> tuple[list[str], list[str]]:
    """Lock the terminal jobs to act on: the named ones (all or nothing: each must be
    terminal), or those of `state` finished before `finished_before`. (ids in jobs,
    ids in dead_jobs), in enqueue order."""
    if ids is None:
        if state is None or state.value not in _TERMINAL:
            raise ValidationError(f"--state must be one of {', '.join(_TERMINAL)}")
        if state is JobState.DEAD:
            where = DEAD_JOBS.c.dead_at < finished_before if finished_before else true()
            return [], lock_jobs(conn, DEAD_JOBS, where)
        where = and_(state_in(state.value), JOBS.c.finished_at < finished_before) if finished_before else state_in(state.value)
        return lock_jobs(conn, JOBS, where), []
    wanted = list(dict.fromkeys(lookup_id(i) for i in ids))
    live: dict[str, str] = {}
    dead: set[str] = set()
    for chunk in chunks(wanted):
        locked = lock_jobs(conn, JOBS, JOBS.c.id.in_(chunk))
        if locked:
            live.update(conn.execute(select(JOBS.c.id, JOBS.c.state).where(JOBS.c.id.in_(locked))).all())
        dead.update(lock_jobs(conn, DEAD_JOBS, DEAD_JOBS.c.id.in_(chunk)))
    for job_id in wanted:
        if job_id not in live and job_id not in dead:
            raise NotFound(f"no job with id {job_id!r}")
        if job_id in live and live[job_id] not in _FINISHED_LIVE:
            raise NotFound(f"job {job_id!r} is {live[job_id]}: only finished jobs (completed, dead, cancelled) qualify; cancel it first")
    return [i for i in wanted if i in live], [i for i in wanted if i in dead]


def retry(conn, ids: list[str] | None, *, state: JobState | None, now: datetime) -> list[str]:
    """Terminal jobs back to pending, same id, command and options, attempts reset;
    the ids retried."""
    live, dead = _lock_terminal(conn, ids, state, None)
    attempts.keep_outputs(conn, live)
    fresh = fresh_start(now)
    for chunk in chunks(live):
        done = conn.execute(update(JOBS).where(JOBS.c.id.in_(chunk), state_in(*_FINISHED_LIVE)).values(**fresh)).rowcount
        if done != len(chunk):  # they are locked: anything else is a bug, and nothing is retried
            raise RuntimeError(f"retrying {len(chunk)} jobs changed {done}")
    move_jobs(conn, DEAD_JOBS, JOBS, dead, values=fresh)
    return sorted_by_request(ids, live + dead)


def delete(conn, ids: list[str] | None, *, state: JobState | None, finished_before: datetime | None) -> list[str]:
    """Remove terminal jobs for good (counted in '_purged', so status stays exact);
    the ids deleted."""
    live, dead = _lock_terminal(conn, ids, state, finished_before)
    deleted = 0
    for table, chosen in ((JOBS, live), (DEAD_JOBS, dead)):
        for chunk in chunks(chosen):
            deleted += conn.execute(delete_rows(table).where(table.c.id.in_(chunk))).rowcount
    if deleted != len(live) + len(dead):  # they are locked: anything else is a bug
        raise RuntimeError(f"deleting {len(live) + len(dead)} jobs deleted {deleted}")
    attempts.forget(conn, live + dead)
    if deleted:
        bump_counter(conn, PURGED_KEY, deleted)
    return sorted_by_request(ids, live + dead)


def sorted_by_request(ids: list[str] | None, chosen: list[str]) -> list[str]:
    """The named order when ids were named, else as found."""
    if ids is None:
        return chosen
    order = {job_id: n for n, job_id in enumerate(dict.fromkeys(lookup_id(i) for i in ids))}
    return sorted(chosen, key=order.__getitem__)


# --- waiting for jobs to finish ----------------------------------------------------------------


def outcomes(conn, ids: list[str]) -> dict[str, tuple[str, int | None, str | None]]:
    """(state, exit code, last error) of each of `ids` that exists, live or dead."""
    found: dict[str, tuple[str, int | None, str | None]] = {}
    for chunk in chunks(ids):
        for table in (JOBS, DEAD_JOBS):
            rows = conn.execute(select(table.c.id, table.c.state, table.c.exit_code, table.c.last_error).where(table.c.id.in_(chunk)))
            found.update({row.id: (row.state, row.exit_code, row.last_error) for row in rows})
    return found


def active(conn, queue: str | None) -> list[str]:
    """Ids of the jobs not finished yet (pending, failed, running), in enqueue order."""
    query = select(JOBS.c.id).where(state_in(*_ACTIVE))
    if queue is not None:
        query = query.where(JOBS.c.queue == queue)
    return list(conn.execute(query.order_by(JOBS.c.seq)).scalars())
