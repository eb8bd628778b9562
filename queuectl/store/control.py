"""Job control: cancelling jobs (and, as they come, deleting and retrying them).

A waiting job (pending or failed) is cancelled at once, in the same statement that
checks it still waits, so a cancel and a claim exclude each other. A running job
cannot be stopped from here (it may run on another host): it gets
cancel_requested_at, its worker reads it at its next heartbeat, stops the job's
process group (SIGTERM, SIGKILL after kill-grace) and records it cancelled. If that
worker dies first, whoever recovers its jobs finishes the cancel
(transitions.recover).
"""

from datetime import datetime

from sqlalchemy import select

from queuectl.errors import NotFound, ValidationError
from queuectl.jobspec import lookup_id
from queuectl.states import CLAIMABLE, JobState
from queuectl.store.models import DEAD_JOBS, JOBS
from queuectl.store.transitions import RUNNING, cancel_waiting, chunks, request_cancel, state_in

_ACTIVE = (*CLAIMABLE, RUNNING)


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
