"""Job dependencies: `enqueue --after` and `--after-any`, and how they are settled.

A job enqueued with dependencies is 'blocked' (outside the claim index) and has one
row of job_dependencies per job it waits for: kind 'after' (that job must complete)
or 'after_any' (that job must end, in any terminal state). The job it waits for has
has_dependents set. There is no periodic scan: the transition that ends a job with
dependents (complete, move to the DLQ, cancel; store/transitions.py) calls settle()
in its own transaction, which looks at each blocked dependent again (evaluate()):

- pending, once every dependency is satisfied (deleted ones count as satisfied: only
  finished jobs can be deleted, and they were settled when they ended);
- cancelled, with last_error naming the dependency, as soon as an 'after' dependency
  is dead or cancelled; its own dependents are settled in turn, down the chain, in
  the same transaction;
- blocked still, otherwise.

Concurrency (PostgreSQL): two dependencies of one job may end in two transactions at
once, each seeing the other still running. evaluate() therefore first locks the
dependents (in enqueue order, like every mover), and reads the dependencies' states
in a later statement: under READ COMMITTED that statement sees whatever the
transaction it waited for committed, so the last of the two unblocks the job.
Enqueue sets has_dependents with an UPDATE of the dependency rows before reading
their states, for the same reason (see jobs.enqueue).
"""

from datetime import datetime

from sqlalchemy import and_, bindparam, insert, select, update

from queuectl.errors import NotFound, QueuectlError
from queuectl.states import JobState, Outcome
from queuectl.store import tallies
from queuectl.store.chunks import chunks
from queuectl.store.models import DEAD_JOBS, DEPENDENCIES, JOBS

AFTER = "after"  # the dependency must complete
AFTER_ANY = "after_any"  # the dependency must end, in any terminal state
KINDS = (AFTER, AFTER_ANY)
BLOCKED = JobState.BLOCKED.value
COMPLETED, DEAD, CANCELLED = JobState.COMPLETED.value, JobState.DEAD.value, JobState.CANCELLED.value
# last_error of a job cancelled because of a dependency: how `--with-dependents` knows it.
REASON_PREFIX = "dependency "
# conn.info key: jobs this transaction unblocked (the caller wakes idle workers).
UNBLOCKED_KEY = "queuectl_unblocked"


def reason(dependency: str, state: str) -> str:
    return f"{REASON_PREFIX}{dependency} ended {state}"


def _blocked_guard():
    # As transitions.state_in renders it (a literal, so SQLite sees ix_jobs_blocked's
    # WHERE); transitions imports this module, so not from there.
    return JOBS.c.state == bindparam("states_blocked", BLOCKED, literal_execute=True)


def _lock(conn, where) -> list[str]:
    """Lock the jobs matching `where`, in enqueue order (as transitions.lock_jobs)."""
    return list(conn.execute(select(JOBS.c.id).where(where).order_by(JOBS.c.seq).with_for_update()).scalars())


def add(conn, rows: list[tuple[str, str, str]]) -> None:
    """Record (job_id, depends_on, kind) rows."""
    # executemany: one round trip per batch of rows, whatever their number.
    for start in range(0, len(rows), 5000):
        conn.execute(insert(DEPENDENCIES), [{"job_id": j, "depends_on": d, "kind": k} for j, d, k in rows[start : start + 5000]])


def mark_depended_on(conn, ids: list[str]) -> dict[str, str]:
    """Set has_dependents on existing jobs, live or dead; their states (read after the
    UPDATE has locked them, see the module's docstring)."""
    states: dict[str, str] = {}
    for chunk in chunks(ids):
        for table in (JOBS, DEAD_JOBS):
            rows = conn.execute(
                update(table).where(table.c.id.in_(chunk)).values(has_dependents=True).returning(table.c.id, table.c.state)
            )
            states.update({row.id: row.state for row in rows})
    return states


def _dependency_states(conn, ids: list[str]) -> dict[str, list[tuple[str, str, str | None]]]:
    """For each of `ids`: [(depends_on, kind, its state or None if deleted)]."""
    found: dict[str, list[tuple[str, str, str | None]]] = {}
    live, dead = JOBS.alias("dep"), DEAD_JOBS.alias("dead_dep")
    for chunk in chunks(ids):
        query = (
            select(DEPENDENCIES.c.job_id, DEPENDENCIES.c.depends_on, DEPENDENCIES.c.kind, live.c.state, dead.c.id.label("dead_id"))
            .select_from(
                DEPENDENCIES.outerjoin(live, live.c.id == DEPENDENCIES.c.depends_on).outerjoin(dead, dead.c.id == DEPENDENCIES.c.depends_on)
            )
            .where(DEPENDENCIES.c.job_id.in_(chunk))
        )
        for row in conn.execute(query):
            state = row.state if row.state is not None else (DEAD if row.dead_id is not None else None)
            found.setdefault(row.job_id, []).append((row.depends_on, row.kind, state))
    return found


def verdict(dependencies: list[tuple[str, str, str | None]]) -> tuple[str, str | None]:
    """(new state, reason): pending, cancelled (reason names the dependency) or blocked."""
    waiting = False
    for depends_on, kind, state in sorted(dependencies):
        if state is None:  # deleted: it had ended, and was settled then
            continue
        if kind == AFTER and state in (DEAD, CANCELLED):
            return CANCELLED, reason(depends_on, state)
        satisfied = state == COMPLETED if kind == AFTER else state in (COMPLETED, DEAD, CANCELLED)
        waiting = waiting or not satisfied
    return (BLOCKED, None) if waiting else (JobState.PENDING.value, None)


def evaluate(conn, ids: list[str], *, now: datetime) -> tuple[list[str], dict[str, str]]:
    """Look again at these jobs, those of them still blocked: unblock or cancel them
    (see the module's docstring), and settle the ones cancelled. (ids unblocked,
    {id cancelled: reason}), the chain below included."""
    unblocked: list[str] = []
    cancelled: dict[str, str] = {}
    todo = list(dict.fromkeys(ids))
    queues: list[str] = []  # of the jobs cancelled
    while todo:
        locked: list[str] = []
        for chunk in chunks(todo):
            locked += _lock(conn, and_(JOBS.c.id.in_(chunk), _blocked_guard()))
        decided = _dependency_states(conn, locked)
        ready, doomed = [], {}
        for job_id in locked:
            state, why = verdict(decided.get(job_id, []))
            if state == JobState.PENDING.value:
                ready.append(job_id)
            elif state == CANCELLED and why is not None:
                doomed[job_id] = why
        for chunk in chunks(ready):
            conn.execute(update(JOBS).where(JOBS.c.id.in_(chunk), _blocked_guard()).values(state=JobState.PENDING.value, updated_at=now))
        by_reason: dict[str, list[str]] = {}
        for job_id, why in doomed.items():
            by_reason.setdefault(why, []).append(job_id)
        for why, chosen in by_reason.items():
            for chunk in chunks(chosen):
                queues += conn.execute(
                    update(JOBS).where(JOBS.c.id.in_(chunk), _blocked_guard())
                    .values(state=CANCELLED, finished_at=now, updated_at=now, last_error=why)
                    .returning(JOBS.c.queue)
                ).scalars().all()
        unblocked += ready
        cancelled.update(doomed)
        # The cancelled ones' own dependents, in the same transaction.
        todo = blocked_dependents(conn, list(doomed))
    tallies.add(conn, tallies.of_queues(queues, Outcome.CANCELLED), now)  # after every job lock
    if unblocked:
        conn.info[UNBLOCKED_KEY] = conn.info.get(UNBLOCKED_KEY, 0) + len(unblocked)
    return unblocked, cancelled


def blocked_dependents(conn, ids: list[str]) -> list[str]:
    """The blocked jobs that wait for any of `ids` (through ix_job_dependencies_depends_on)."""
    found: list[str] = []
    for chunk in chunks(ids):
        found += conn.execute(
            select(DEPENDENCIES.c.job_id).distinct()
            .join(JOBS, JOBS.c.id == DEPENDENCIES.c.job_id)
            .where(DEPENDENCIES.c.depends_on.in_(chunk), _blocked_guard())
        ).scalars().all()
    return list(dict.fromkeys(found))


def settle(conn, ids: list[str], *, now: datetime) -> tuple[list[str], dict[str, str]]:
    """These jobs (with has_dependents) just ended: unblock or cancel what waits for
    them, down the chain. Call it in the transaction of their final transition."""
    if not ids:
        return [], {}
    return evaluate(conn, blocked_dependents(conn, ids), now=now)


def woke(conn) -> bool:
    """Whether this transaction unblocked a job (and forget it): time to wake workers."""
    return bool(conn.info.pop(UNBLOCKED_KEY, 0))


def recheck(conn, ids: list[str], *, now: datetime) -> None:
    """Jobs just put back to pending by a person (`retry`, `dlq retry`) wait for their
    dependencies again: blocked while one has not ended, pending once all are
    satisfied. Refused (nothing done) if one of them would be cancelled at once, an
    --after dependency of it being dead or cancelled."""
    having = []
    for chunk in chunks(ids):
        having += conn.execute(select(DEPENDENCIES.c.job_id).distinct().where(DEPENDENCIES.c.job_id.in_(chunk))).scalars().all()
    if not having:
        return
    for chunk in chunks(having):
        conn.execute(update(JOBS).where(JOBS.c.id.in_(chunk), JOBS.c.state == JobState.PENDING.value).values(state=BLOCKED))
    _, cancelled = evaluate(conn, having, now=now)
    for job_id in having:
        if job_id in cancelled:
            raise QueuectlError(
                f"job {job_id!r} would be cancelled again: its {cancelled[job_id]}"
                " (retry that one with --with-dependents)"
            )


def reblock_dependents(conn, ids: list[str], *, now: datetime, fresh: dict) -> list[str]:
    """`--with-dependents`: the jobs cancelled because one of `ids` (or, down the chain,
    one of those) ended dead or cancelled are blocked again, waiting afresh; those
    still doomed by another dependency are cancelled again. The ids blocked again
    (and still blocked or pending). fresh: transitions.fresh_start's values."""
    revived: list[str] = []
    frontier = list(ids)
    seen = set(ids)
    while frontier:
        found: list[str] = []
        for chunk in chunks(frontier):
            found += conn.execute(
                select(JOBS.c.id).distinct()
                .join(DEPENDENCIES, DEPENDENCIES.c.job_id == JOBS.c.id)
                .where(DEPENDENCIES.c.depends_on.in_(chunk), JOBS.c.state == CANCELLED, JOBS.c.last_error.startswith(REASON_PREFIX))
                .order_by(JOBS.c.id)
            ).scalars().all()
        found = [i for i in dict.fromkeys(found) if i not in seen]
        seen.update(found)
        for chunk in chunks(found):
            conn.execute(update(JOBS).where(JOBS.c.id.in_(chunk), JOBS.c.state == CANCELLED).values(dict(fresh, state=BLOCKED, last_error=None)))
        revived += found
        frontier = found
    _, cancelled = evaluate(conn, revived, now=now)
    return [i for i in revived if i not in cancelled]


def of_job(conn, job_id: str) -> tuple[list[dict], list[dict]]:
    """A job's dependencies and dependents: [{id, kind, state}] each (state None: deleted)."""
    found = _dependency_states(conn, [job_id]).get(job_id, [])
    dependencies = [{"id": d, "kind": k, "state": s} for d, k, s in sorted(found)]
    ids = list(conn.execute(select(DEPENDENCIES.c.job_id, DEPENDENCIES.c.kind).where(DEPENDENCIES.c.depends_on == job_id)).all())
    dependents = []
    for dependent, kind in sorted(ids):
        state = conn.execute(select(JOBS.c.state).where(JOBS.c.id == dependent)).scalar()
        if state is None:
            state = DEAD if conn.execute(select(DEAD_JOBS.c.id).where(DEAD_JOBS.c.id == dependent)).scalar() else None
        dependents.append({"id": dependent, "kind": kind, "state": state})
    return dependencies, dependents


def forget(conn, ids: list[str]) -> None:
    """Deleted jobs wait for nothing any more (rows naming them as a dependency stay:
    `show` says that one was deleted)."""
    from sqlalchemy import delete

    for chunk in chunks(ids):
        conn.execute(delete(DEPENDENCIES).where(DEPENDENCIES.c.job_id.in_(chunk)))


def check_known(ids: list[str], known: set[str]) -> None:
    for job_id in ids:
        if job_id not in known:
            raise NotFound(f"no job with id {job_id!r} to wait for")
