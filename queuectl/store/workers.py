"""The `workers` table: registration, heartbeats, and declaring processes dead.

Supervisors and worker processes both have rows (role 'supervisor' / 'worker').
A row's state moves idle/busy/stopping -> stopped (clean exit) or dead (declared
so by a reaper); `state != 'dead'` guards every write a live process makes, so a
process that was declared dead learns it from its next heartbeat.
"""

import os
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, insert, or_, select, update

from queuectl.states import LIVE_WORKER_STATES, Role, WorkerState
from queuectl.store.models import WORKERS

# Rows of processes that ended are deleted after this long.
KEEP_ENDED = timedelta(days=1)


def register(conn, *, id: str, role: Role, host: str, pid_started: float, now: datetime, supervisor_id=None, supervisor_pid=None, queues=None) -> None:
    conn.execute(
        insert(WORKERS).values(
            id=id,
            role=Role(role).value,
            host=host,
            pid=os.getpid(),
            pid_started=pid_started,
            supervisor_id=supervisor_id,
            supervisor_pid=supervisor_pid,
            state=WorkerState.IDLE.value,
            queues=",".join(queues) if queues else None,
            started_at=now,
            last_heartbeat=now,
            processed=0,
            failed=0,
        )
    )


def heartbeat(conn, worker_id: str, now: datetime, **fields) -> bool:
    """Refresh last_heartbeat (and any fields); False if this process was declared dead."""
    result = conn.execute(
        update(WORKERS).where(WORKERS.c.id == worker_id, WORKERS.c.state.in_(LIVE_WORKER_STATES)).values(last_heartbeat=now, **fields)
    )
    return result.rowcount == 1


def heartbeat_many(conn, worker_ids: list[str], now: datetime) -> list[str]:
    """Refresh last_heartbeat of idle rows in one statement; the ids still alive (a
    reaper may have declared some dead). The rows read back are looked at only when
    one is missing."""
    result = conn.execute(
        update(WORKERS).where(WORKERS.c.id.in_(worker_ids), WORKERS.c.state.in_(LIVE_WORKER_STATES)).values(last_heartbeat=now)
    )
    if result.rowcount == len(worker_ids):
        return list(worker_ids)
    return list(conn.execute(select(WORKERS.c.id).where(WORKERS.c.id.in_(worker_ids), WORKERS.c.state.in_(LIVE_WORKER_STATES))).scalars())


def stop_request(conn, supervisor_id: str) -> str | None:
    return conn.execute(select(WORKERS.c.stop_request).where(WORKERS.c.id == supervisor_id)).scalar()


def end(conn, worker_id: str, state: WorkerState, now: datetime, *, silent_since: datetime | None = None) -> bool:
    """Mark a row stopped or dead; True only for the caller that ended it (reapers race).
    With `silent_since`, only if its last heartbeat is still older than that: a worker
    that beat again since a reaper read its row is alive after all."""
    still = [WORKERS.c.last_heartbeat < silent_since] if silent_since is not None else []
    result = conn.execute(
        update(WORKERS)
        .where(WORKERS.c.id == worker_id, WORKERS.c.state.in_(LIVE_WORKER_STATES), *still)
        .values(state=state.value, stopped_at=now, job_id=None, job_pgid=None)
    )
    return result.rowcount == 1


def suspects(conn, *, host: str, stale_before: datetime) -> list:
    """Live rows that may be dead: on this host (pids to check) or silent too long."""
    return conn.execute(
        select(WORKERS).where(
            WORKERS.c.state.in_(LIVE_WORKER_STATES),
            or_(WORKERS.c.host == host, WORKERS.c.last_heartbeat < stale_before),
        )
    ).all()


def live_supervisors(conn) -> list:
    return conn.execute(
        select(WORKERS).where(WORKERS.c.role == Role.SUPERVISOR.value, WORKERS.c.state.in_(LIVE_WORKER_STATES))
    ).all()


def worker_rows(conn) -> list:
    """Every worker process's row (not supervisors'), oldest first: what `status` shows."""
    return conn.execute(select(WORKERS).where(WORKERS.c.role == Role.WORKER.value).order_by(WORKERS.c.started_at, WORKERS.c.id)).all()


def request_stop(conn, supervisor_ids: list[str], mode: str) -> None:
    conn.execute(update(WORKERS).where(WORKERS.c.id.in_(supervisor_ids)).values(stop_request=mode))


def prune(conn, now: datetime) -> None:
    conn.execute(
        delete(WORKERS).where(
            and_(WORKERS.c.state.not_in(LIVE_WORKER_STATES), WORKERS.c.stopped_at < now - KEEP_ENDED)
        )
    )
