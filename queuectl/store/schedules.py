"""The schedules table: defining recurring jobs and firing their ticks.

Every statement here takes a connection; the next tick of an expression is computed
by the caller (queuectl/cron.py), so this module knows nothing of cron syntax.

Exactly once across supervisors and hosts: a tick is fired by the transaction whose
guarded UPDATE moves next_run on from the tick it read (`WHERE next_run = tick`); it
enqueues the tick's job in that same transaction. Any other supervisor's UPDATE of
the same tick matches no row (on PostgreSQL it waits for the row's lock, then finds
next_run moved; on SQLite the write lock orders them), so it enqueues nothing.
"""

import json
from dataclasses import asdict
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update

from queuectl.errors import DuplicateSchedule, NotFound
from queuectl.jobspec import JobSpec
from queuectl.states import ACTIVE
from queuectl.store import jobs
from queuectl.store.models import DEAD_JOBS, JOBS, SCHEDULES
from queuectl.store.transitions import state_in

S = SCHEDULES
# What a due schedule's tick needs (the due query reads only these).
_DUE = (S.c.name, S.c.cron, S.c.tz, S.c.catch_up, S.c.next_run)
# Job spec fields a schedule keeps (an id, a delay or a run_at make no sense for a
# job enqueued at every tick).
_SPEC_KEYS = ("command", "max_retries", "priority", "timeout", "queue", "cwd")


def spec_json(spec: JobSpec) -> str:
    data = asdict(spec)
    return json.dumps({key: data[key] for key in _SPEC_KEYS})


def spec_of(text: str) -> JobSpec:
    """The job spec a schedule enqueues (validated when the schedule was added)."""
    return JobSpec(**json.loads(text))


def add(conn, *, name: str, cron: str, tz: str, catch_up: str, overlap: str, spec: JobSpec, next_run: datetime,
        now: datetime, replace: bool) -> bool:
    """Define a schedule; with `replace`, redefine an existing one (keeping its history,
    counters and pause). Whether it replaced one. DuplicateSchedule if it exists and
    not `replace`."""
    definition = dict(cron=cron, tz=tz, catch_up=catch_up, overlap=overlap, spec=spec_json(spec), next_run=next_run)
    exists = conn.execute(select(S.c.name).where(S.c.name == name)).first() is not None
    if exists and not replace:
        raise DuplicateSchedule(f"a schedule named {name!r} already exists (add --replace to redefine it)")
    if exists:
        conn.execute(update(S).where(S.c.name == name).values(**definition))
    else:
        conn.execute(insert(S).values(name=name, skipped=0, missed=0, created_at=now, **definition))
    return exists


def _with_last_state():
    """Schedules with the state of their last job (live, dead, or None if deleted)."""
    live = select(JOBS.c.state).where(JOBS.c.id == S.c.last_job).scalar_subquery()
    dead = select(DEAD_JOBS.c.state).where(DEAD_JOBS.c.id == S.c.last_job).scalar_subquery()
    return select(S, func.coalesce(live, dead).label("last_job_state"))


def listing(conn) -> list:
    return conn.execute(_with_last_state().order_by(S.c.name)).all()


def get(conn, name: str):
    row = conn.execute(_with_last_state().where(S.c.name == name)).first()
    if row is None:
        raise NotFound(f"no schedule named {name!r}")
    return row


def remove(conn, name: str) -> None:
    """Delete a schedule; its jobs stay (they keep its name)."""
    if conn.execute(delete(S).where(S.c.name == name)).rowcount == 0:
        raise NotFound(f"no schedule named {name!r}")


def pause(conn, name: str, now: datetime) -> bool:
    """Pause (leaving the due index); False if it already was."""
    get(conn, name)  # NotFound first
    return conn.execute(update(S).where(S.c.name == name, S.c.paused_at.is_(None)).values(paused_at=now)).rowcount == 1


def resume(conn, name: str, next_run: datetime) -> bool:
    """Resume from `next_run` (the ticks of the pause are not run); False if it was not paused."""
    get(conn, name)
    return conn.execute(update(S).where(S.c.name == name, S.c.paused_at.is_not(None)).values(paused_at=None, next_run=next_run)).rowcount == 1


def due(conn, now: datetime, limit: int) -> list:
    """Schedules whose tick has come, oldest tick first: one range of ix_schedules_due."""
    query = select(*_DUE).where(S.c.paused_at.is_(None), S.c.next_run <= now).order_by(S.c.next_run).limit(limit)
    return conn.execute(query).all()


def first_due(conn) -> datetime | None:
    """The earliest next_run of an unpaused schedule: the first entry of ix_schedules_due."""
    return conn.execute(select(S.c.next_run).where(S.c.paused_at.is_(None)).order_by(S.c.next_run).limit(1)).scalar()


def active_job(conn, name: str) -> str | None:
    """A job of the schedule not finished yet (see states.ACTIVE), if any: one probe of ix_jobs_schedule."""
    return conn.execute(select(JOBS.c.id).where(JOBS.c.schedule == name, state_in(*ACTIVE)).limit(1)).scalar()


def _enqueue(conn, dialect, name: str, spec: str, now: datetime) -> str:
    (row,) = jobs.add(conn, dialect, [spec_of(spec)], now, schedule=name)
    conn.execute(update(S).where(S.c.name == name).values(last_run=now, last_job=row["id"]))
    dialect.notify(conn)
    return row["id"]


def fire(conn, dialect, name: str, *, tick: datetime, next_run: datetime, run: bool, missed: int, now: datetime) -> tuple[str, str | None] | None:
    """Fire the tick `tick` of a schedule: move next_run on to `next_run`, and unless
    `run` is false (a tick missed with --catch-up none) enqueue its job, or with
    --overlap skip and a job of it still active, count the tick skipped.
    ("fired", new job id), ("skipped", the active job's id), ("missed", None), or
    None if this tick was no longer due (another supervisor fired it, or it was
    paused, removed or redefined meanwhile)."""
    claimed = conn.execute(
        update(S)
        .where(S.c.name == name, S.c.next_run == tick, S.c.paused_at.is_(None))
        .values(next_run=next_run, missed=S.c.missed + missed)
        .returning(S.c.overlap, S.c.spec)
    ).first()
    if claimed is None:
        return None
    if not run:
        return "missed", None
    if claimed.overlap == "skip":
        active = active_job(conn, name)
        if active is not None:
            conn.execute(update(S).where(S.c.name == name).values(skipped=S.c.skipped + 1, last_skipped=now))
            return "skipped", active
    return "fired", _enqueue(conn, dialect, name, claimed.spec, now)


def run_now(conn, dialect, name: str, now: datetime) -> str:
    """Enqueue one run of the schedule now (paused or not, whatever its overlap
    policy: a person asked for it); its job id. Its ticks are unchanged."""
    row = get(conn, name)
    return _enqueue(conn, dialect, name, row.spec, now)


def by_state(conn) -> dict[str, int]:
    """{"active": schedules firing, "paused": paused ones}: one grouped count."""
    paused = SCHEDULES.c.paused_at.is_not(None).label("paused")
    found = {"active": 0, "paused": 0}
    for is_paused, n in conn.execute(select(paused, func.count()).group_by(paused)):
        found["paused" if is_paused else "active"] = n
    return found
