"""Queue controls: a paused queue, and a limit of running jobs per queue, honoured by
every claim on every host.

Only queues someone paused or limited have a row in `queues`; every other queue
costs a claim one probe of an empty (or tiny) table. A row's `running` counts the
queue's running jobs: the claim that starts one takes it while it is below
max_running (transitions.claim_statement; on PostgreSQL in the claiming statement,
which locks the row, so two hosts cannot both take the last slot; on SQLite inside
the claim's write transaction), and every transition that ends a run gives it back
(free_slot). A claim in the same transaction as the end of a run takes jobs only from
queues without a row, so no transaction holds two queue rows (lock order: job rows,
then at most one queue row; recount takes them all, in name order, and no job row).

recount() sets each counter to the running jobs it should count: at supervisor
start, after a dead worker's jobs are recovered, and after every control change.
"""

from datetime import datetime

from sqlalchemy import and_, bindparam, delete, exists, false, func, insert, or_, select, true, update

from queuectl.jobspec import check_queue
from queuectl.states import JobState
from queuectl.store.models import JOBS, QUEUES


def closed():
    """The names of the queues no claim may take a job from now: paused, or running
    as many jobs as their limit allows."""
    full = and_(QUEUES.c.max_running.is_not(None), QUEUES.c.running >= QUEUES.c.max_running)
    return select(QUEUES.c.name).where(or_(QUEUES.c.paused == true(), full))


def controlled():
    """The names of every queue with controls (a claim beside the end of a run skips them)."""
    return select(QUEUES.c.name)


def has_controls(queue):
    """Whether `queue` (a job's column) has a row, as a column `controlled`: what a
    transition returns, so that only the runs of controlled queues cost a second
    statement (take_slot, free_slot)."""
    return exists(select(QUEUES.c.name).where(QUEUES.c.name == queue)).label("controlled")


def open_slot(queue):
    """`queue`'s counter, one more, if the queue is neither paused nor full; on a queue
    without a row it matches nothing (its jobs need no slot)."""
    below = or_(QUEUES.c.max_running.is_(None), QUEUES.c.running < QUEUES.c.max_running)
    return update(QUEUES).where(QUEUES.c.name == queue, QUEUES.c.paused == false(), below).values(running=QUEUES.c.running + 1)


_TAKE = open_slot(bindparam("slot_queue"))
_FREE = update(QUEUES).where(QUEUES.c.name == bindparam("slot_queue"), QUEUES.c.running > 0).values(running=QUEUES.c.running - 1)


def take_slot(conn, queue: str) -> None:
    """Count a job of `queue` just claimed (SQLite: inside the claim's write transaction,
    whose pick already skipped closed queues)."""
    conn.execute(_TAKE, {"slot_queue": queue})


def free_slot(conn, queue: str) -> None:
    """Give back the slot of a run of `queue` that just ended (no row: nothing to do)."""
    conn.execute(_FREE, {"slot_queue": queue})


def free_statement(queue):
    """free_slot as a statement over `queue` (an expression: PostgreSQL's hot path)."""
    return update(QUEUES).where(QUEUES.c.name == queue, QUEUES.c.running > 0).values(running=QUEUES.c.running - 1)


def recount(conn, names: list[str] | None = None) -> None:
    """Set `running` of each row (or of `names`) to its queue's running jobs, with the
    rows locked first (in name order) so no claim or end of a run changes them meanwhile;
    on PostgreSQL the count is then a new statement, which sees every run those
    committed before the lock was granted."""
    lock = select(QUEUES.c.name).order_by(QUEUES.c.name).with_for_update()
    if names is not None:
        lock = lock.where(QUEUES.c.name.in_(names))
    locked = list(conn.execute(lock).scalars())
    if not locked:
        return
    running = (
        select(func.count()).select_from(JOBS)
        .where(JOBS.c.state == JobState.RUNNING.value, JOBS.c.queue == QUEUES.c.name)
        .scalar_subquery()
    )
    conn.execute(update(QUEUES).where(QUEUES.c.name.in_(locked)).values(running=running))


def _upsert(conn, name: str, now: datetime, **values) -> None:
    if conn.execute(update(QUEUES).where(QUEUES.c.name == name).values(updated_at=now, **values)).rowcount == 0:
        row = {"paused": False, "max_running": None, **values}
        conn.execute(insert(QUEUES).values(name=name, running=0, updated_at=now, **row))


def _forget_if_plain(conn, name: str) -> None:
    """A queue neither paused nor limited loses its row: its claims cost nothing again."""
    conn.execute(delete(QUEUES).where(QUEUES.c.name == name, QUEUES.c.paused == false(), QUEUES.c.max_running.is_(None)))


def set_paused(conn, name: str, paused: bool, now: datetime) -> bool:
    """Pause or resume a queue; whether it was paused before."""
    check_queue(name)
    before = conn.execute(select(QUEUES.c.paused).where(QUEUES.c.name == name).with_for_update()).scalar()
    if paused:
        _upsert(conn, name, now, paused=True)
    elif before:
        conn.execute(update(QUEUES).where(QUEUES.c.name == name).values(paused=False, updated_at=now))
        _forget_if_plain(conn, name)
    return bool(before)


def set_limit(conn, name: str, limit: int | None, now: datetime) -> int | None:
    """Set (or with None clear) a queue's limit of running jobs; the limit it had."""
    check_queue(name)
    before = conn.execute(select(QUEUES.c.max_running).where(QUEUES.c.name == name).with_for_update()).scalar()
    if limit is not None:
        _upsert(conn, name, now, max_running=limit)
    else:
        conn.execute(update(QUEUES).where(QUEUES.c.name == name).values(max_running=None, updated_at=now))
        _forget_if_plain(conn, name)
    return before


def controls(conn) -> dict[str, dict]:
    """Each controlled queue's paused, max_running and running."""
    rows = conn.execute(select(QUEUES.c.name, QUEUES.c.paused, QUEUES.c.max_running, QUEUES.c.running).order_by(QUEUES.c.name))
    return {r.name: {"paused": bool(r.paused), "max_running": r.max_running, "running": r.running} for r in rows}
