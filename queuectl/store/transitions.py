"""The job state machine: every change a worker (or a reaper) makes to a running job.

Every function takes a connection inside a write transaction. Each change of a
running job is guarded by `state = 'running' AND worker_id = <owner>`: if a reaper
already recovered the job, or the job finished, the guard matches nothing and the
late writer learns it no longer owns the job. These are Core statements on the hot
path, so SQLAlchemy caches their compiled form.
"""

import functools
import math
import random
from datetime import datetime

from sqlalchemy import Integer, and_, bindparam, delete, exists, false, func, insert, literal, null, or_, select, true, update

from queuectl.states import CLAIMABLE, WAITING, JobState, Outcome
from queuectl.store import attempts, dependencies, tallies
from queuectl.store import queues as controls
from queuectl.store.chunks import chunks
from queuectl.store.models import ATTEMPTS, DEAD_JOBS, JOBS, QUEUES
from queuectl.timeutil import after

RUNNING = JobState.RUNNING.value
# What a claim returns to the worker: the whole job but what only its past attempts
# wrote (the output may be megabytes), so a new field reaches the worker by itself.
CLAIM_COLUMNS = tuple(c for c in JOBS.c if c.name not in ("output", "output_size", "last_error", "exit_code", "seq"))
WORKER_LOST = "worker lost"
CANCELLED = "cancelled"  # last_error of a cancelled job
STOPPED = "stopped: given back unrun (its worker was told to stop now)"  # error of such an attempt
# Every transition that ends a run counts it; the attempt row takes the new count as its number.
_ONE_MORE_RUN = JOBS.c.runs + 1


def state_in(*states: str):
    """`state IN (...)` with the states as SQL literals, never bound parameters: SQLite
    uses a partial index (ix_jobs_claim, ix_jobs_running) only when the query's WHERE
    visibly implies the index's WHERE. Use it for every query on job states."""
    name = "states_" + "_".join(states)
    if len(states) == 1:  # `state = 'x'`, the form a one-state index's WHERE has
        return JOBS.c.state == bindparam(name, states[0], literal_execute=True)
    return JOBS.c.state.in_(bindparam(name, states, expanding=True, literal_execute=True))


def _claimable():
    return state_in(*CLAIMABLE)


def _pick(queues: tuple[str, ...] | None, *, skipping):
    """The next runnable job's row, in ix_jobs_claim's order, of a queue not in `skipping`."""
    pick = select(JOBS.c.id, JOBS.c.queue).where(_claimable(), JOBS.c.run_at <= bindparam("now"), JOBS.c.queue.not_in(skipping))
    if queues:
        pick = pick.where(JOBS.c.queue.in_(queues))
    return pick.order_by(JOBS.c.priority.desc(), JOBS.c.run_at, JOBS.c.seq).limit(1).with_for_update(skip_locked=True)


@functools.lru_cache(maxsize=64)
def claim_statement(queues: tuple[str, ...] | None, *, after_ending: bool = False, slot_in_statement: bool = False):
    """Take the next runnable job atomically: UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING.

    On PostgreSQL the subquery renders FOR UPDATE SKIP LOCKED, so concurrent claimers
    skip each other's rows instead of waiting; SQLAlchemy's SQLite compiler drops that
    clause, and SQLite needs none: the write transaction (BEGIN IMMEDIATE) already
    holds the database's only write lock while it picks and updates the row. Built
    once per queue set, with the time and worker as parameters; its ORDER BY is
    ix_jobs_claim's order.

    Queue controls (store/queues.py): the pick skips paused and full queues. The
    claimed job's slot is then taken by the caller in the same transaction (SQLite:
    take_slot), or with slot_in_statement (PostgreSQL) here: a data-modifying CTE
    takes it, locking the queue's row and checking the limit again on its newest
    version, and the job is claimed only if its queue has no row or the slot was
    taken. after_ending: the claim beside the end of a run skips every controlled
    queue, so that no transaction holds two queue rows (no lock cycle) and the
    PostgreSQL hot path never updates one row twice in one statement.
    """
    skipping = controls.controlled() if after_ending else controls.closed()
    if not slot_in_statement or after_ending:
        picked = _pick(queues, skipping=skipping).with_only_columns(JOBS.c.id).scalar_subquery()
        where = [JOBS.c.id == picked, _claimable()]
    else:
        pick = _pick(queues, skipping=skipping).cte("picked")
        slot = controls.open_slot(select(pick.c.queue).scalar_subquery()).returning(QUEUES.c.name).cte("slot")
        uncontrolled = ~exists(select(QUEUES.c.name).where(QUEUES.c.name == JOBS.c.queue))
        where = [JOBS.c.id == select(pick.c.id).scalar_subquery(), _claimable(), or_(exists(select(slot.c.name)), uncontrolled)]
    return (
        update(JOBS)
        .where(*where)
        .values(
            state=RUNNING,
            worker_id=bindparam("claimer"),
            started_at=bindparam("now"),
            updated_at=bindparam("now"),
            finished_at=None,
            # The last attempt's output is in its attempt row (or was the job's
            # completed run, which only a person's retry, keeping it, brings back).
            output=None,
            output_size=None,
        )
        .returning(*CLAIM_COLUMNS, *(() if slot_in_statement or after_ending else (controls.has_controls(JOBS.c.queue),)))
    )


@functools.lru_cache(maxsize=64)
def _due_statement(queues: tuple[str, ...] | None):
    due = select(JOBS.c.id).where(_claimable(), JOBS.c.run_at <= bindparam("now"), JOBS.c.queue.not_in(controls.closed()))
    if queues:
        due = due.where(JOBS.c.queue.in_(queues))
    return select(exists(due))


def work_due(conn, queues: tuple[str, ...] | None, now: datetime) -> bool:
    """Whether a claim would find a job: the claim's read-only twin, through the same
    index, so an idle pool looks without taking the write lock. Paused and full
    queues are skipped, as the claim skips them: their jobs wake nobody."""
    return bool(conn.execute(_due_statement(tuple(queues) if queues else None), {"now": now}).scalar())


def first_due(conn, queues: tuple[str, ...] | None):
    """The earliest run_at of a claimable job in an open queue (None: none): at or
    before now, a claim would find a job (work_due); later, when one will. Through
    ix_jobs_claim's entries, which hold run_at, like work_due (whose EXISTS reads as
    many of them when none is due, the case it is asked in)."""
    query = select(func.min(JOBS.c.run_at)).where(_claimable(), JOBS.c.queue.not_in(controls.closed()))
    if queues:
        query = query.where(JOBS.c.queue.in_(queues))
    return conn.execute(query).scalar()


def drained(conn, queues: tuple[str, ...] | None, now: datetime) -> bool:
    """Nothing pending now, running, or failed awaiting a retry (burst mode's end).
    Two index-backed probes (ix_jobs_claim, ix_jobs_running), never a history scan.
    Jobs waiting in a paused queue do not hold a burst worker (nothing may take
    them); those of a full queue do not either, but its running jobs do."""
    waiting = select(JOBS.c.id).where(
        state_in(JobState.PENDING.value, JobState.FAILED.value),
        or_(JOBS.c.state == JobState.FAILED.value, JOBS.c.run_at <= now),
        JOBS.c.queue.not_in(controls.closed()),
    )
    running = select(JOBS.c.id).where(state_in(RUNNING))
    if queues:
        waiting = waiting.where(JOBS.c.queue.in_(queues))
        running = running.where(JOBS.c.queue.in_(queues))
    return not conn.execute(select(or_(exists(waiting), exists(running)))).scalar()


def claim(conn, worker_id: str, queues: tuple[str, ...] | None, now: datetime, *, slot_in_statement: bool = False):
    """The claimed job's row (CLAIM_COLUMNS) or None, from a queue neither paused
    nor full; its slot taken (see claim_statement). slot_in_statement: PostgreSQL's
    one-statement form (dialect.claim)."""
    statement = claim_statement(tuple(queues) if queues else None, slot_in_statement=slot_in_statement)
    job = conn.execute(statement, {"now": now, "claimer": worker_id}).first()
    if job is not None and not slot_in_statement and job.controlled:
        controls.take_slot(conn, job.queue)
    return job


def claim_after_ending(conn, worker_id: str, queues: tuple[str, ...] | None, now: datetime):
    """The claim in the transaction that ended a run: only from queues without controls
    (see claim_statement), so it takes no slot."""
    return conn.execute(claim_statement(tuple(queues) if queues else None, after_ending=True), {"now": now, "claimer": worker_id}).first()


def _owned(job_id: str, worker_id: str):
    return and_(JOBS.c.id == job_id, JOBS.c.state == RUNNING, JOBS.c.worker_id == worker_id)


# Built once: success is the hot path (bound parameters, compiled form cached).
# No parameter is named like a column: SQLAlchemy turns such execution parameters
# into extra SET clauses of an UPDATE (inside a CTE too, see complete_and_claim).
_COMPLETE = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("job_id"), JOBS.c.state == RUNNING, JOBS.c.worker_id == bindparam("owner"))
    .values(
        state=JobState.COMPLETED.value,
        finished_at=bindparam("now"),
        updated_at=bindparam("now"),
        exit_code=bindparam("result_code"),
        output=bindparam("result_output"),
        output_size=bindparam("result_size"),
        runs=_ONE_MORE_RUN,
        last_error=None,
    )
    .returning(*attempts.ENDED, JOBS.c.has_dependents, JOBS.c.queue, controls.has_controls(JOBS.c.queue))
)


# The hot path's completion on SQLite (dialect.complete_and_claim, on the driver's
# cursor): only a job with nothing more to settle, no dependents and no queue controls.
# Anything else is left running, and the caller completes it with complete().
COMPLETE_PLAIN = _COMPLETE.where(JOBS.c.has_dependents == false(), JOBS.c.queue.not_in(controls.controlled()))


def outcome_params(job_id: str, worker_id: str, *, exit_code: int, output: str | None, output_size: int | None, now: datetime) -> dict:
    """The parameters of _COMPLETE (also of the statement that claims beside it)."""
    return {"job_id": job_id, "owner": worker_id, "claimer": worker_id, "now": now, "result_code": exit_code,
            "result_output": output, "result_size": output_size}


def size_of(output: str | None, output_size: int | None) -> int | None:
    """Characters an output had in all: as the worker counted them, or all of it kept."""
    return output_size if output_size is not None or output is None else len(output)


def complete(conn, job_id: str, worker_id: str, *, exit_code: int, output: str | None, now: datetime, output_size: int | None = None) -> bool:
    """Record success and its attempt; False if this worker no longer owns the job."""
    params = outcome_params(job_id, worker_id, exit_code=exit_code, output=output, output_size=size_of(output, output_size), now=now)
    ended = conn.execute(_COMPLETE, params).first()
    if ended is None:
        return False
    if ended.controlled:
        controls.free_slot(conn, ended.queue)
    # The output stays the job's alone (see models.ATTEMPTS.c.output).
    attempts.record(conn, ended, finished_at=now, exit_code=exit_code, error=None, output=None)
    if ended.has_dependents:
        dependencies.settle(conn, [job_id], now=now)
    tallies.count(conn, ended.queue, Outcome.COMPLETED, now, worker_id)  # last: see tallies' lock order
    return True


@functools.lru_cache(maxsize=64)
def complete_and_claim_statement(kind, queues: tuple[str, ...] | None):
    """Success and the next claim as one statement (data-modifying CTEs, PostgreSQL),
    so a worker's write per job is one round trip. Both updates see the statement's
    snapshot; the finished job is 'running', never claimable, so they never touch
    the same row. The attempt row is inserted from what the completing update
    returned. Always one row: `owned` (1 if this worker still owned the finished job:
    its attempt was recorded) and the claimed job's columns (NULL when there was
    nothing to claim).

    A job with dependents (has_dependents) is not completed here: settling them
    takes more than a statement, so the guard makes `owned` 0 and the dialect
    completes it again in a transaction (complete, settle, claim if nothing was
    claimed here); see PostgresDialect.complete_and_claim.

    The completion's tally (store/tallies.py) is one more CTE, an upsert from what
    the completing update returned (parameters: tallies.cte_params); `kind` is the
    dialect class, whose upsert construct it uses."""
    done = _COMPLETE.where(JOBS.c.has_dependents == false()).cte("done")
    recorded = attempts.insert_from(
        done, finished_at=bindparam("now", type_=ATTEMPTS.c.finished_at.type), exit_code=bindparam("result_code", type_=Integer()),
        error=null(), output=null(),
    ).returning(ATTEMPTS.c.number).cte("recorded")
    # The finished job's slot back (a queue with controls), and a claim from queues
    # without any: see claim_statement's after_ending.
    freed = controls.free_statement(select(done.c.queue).scalar_subquery()).cte("freed")
    tallied = tallies.from_returning(kind, done, Outcome.COMPLETED).cte("tallied")
    claimed = claim_statement(queues, after_ending=True).cte("claimed")
    owned = select(func.count()).select_from(recorded).scalar_subquery().label("owned")
    one_row = select(literal(1).label("one")).subquery("one_row")
    return select(owned, *claimed.c).select_from(one_row.outerjoin(claimed, true())).add_cte(freed, tallied)


def backoff_delay(attempts: int, cfg: dict, rng: random.Random | None = None) -> float:
    """min(backoff-max, backoff-base ** (attempts - 1)), plus up to backoff-jitter of itself."""
    cap = float(cfg["backoff-max"])
    try:
        delay = min(cap, math.pow(float(cfg["backoff-base"]), max(0, attempts - 1)))
    except OverflowError:
        delay = cap
    jitter = float(cfg["backoff-jitter"])
    if jitter:
        delay += delay * jitter * (rng or random).random()
    return delay


def fail(
    conn,
    job_id: str,
    worker_id: str,
    *,
    error: str,
    exit_code: int | None,
    output: str | None,
    now: datetime,
    cfg: dict,
    rng: random.Random | None = None,
    output_size: int | None = None,
) -> str | None:
    """Charge a failed attempt: schedule a retry ('failed') or move to the DLQ ('dead'),
    and record the attempt.

    Returns the new state, or None if this worker no longer owns the job.
    """
    row = conn.execute(
        select(JOBS.c.attempts, JOBS.c.max_retries, JOBS.c.has_dependents, JOBS.c.queue, controls.has_controls(JOBS.c.queue), *attempts.ENDED)
        .where(_owned(job_id, worker_id)).with_for_update()
    ).first()
    if row is None:
        return None
    if row.controlled:
        controls.free_slot(conn, row.queue)
    failed = row.attempts + 1
    output_size = size_of(output, output_size)
    outcome = dict(attempts=failed, runs=row.runs + 1, finished_at=now, updated_at=now, exit_code=exit_code, last_error=error,
                   output=output, output_size=output_size)
    attempts.record(conn, _Ended(row, runs=row.runs + 1, output_size=output_size), finished_at=now, exit_code=exit_code, error=error, output=output)
    if failed <= row.max_retries:
        run_at = after(now, backoff_delay(failed, cfg, rng))
        conn.execute(update(JOBS).where(_owned(job_id, worker_id)).values(state=JobState.FAILED.value, run_at=run_at, **outcome))
        tallies.add(conn, tallies.failure(row.queue, error, retried=True), now, worker_id)
        return JobState.FAILED.value
    # The row is locked (above) and the move itself is guarded by the owner too.
    dead = {"state": JobState.DEAD.value, **outcome, "dead_at": now}
    move_jobs(conn, JOBS, DEAD_JOBS, [job_id], values=dead, guard=_owned(job_id, worker_id))
    if row.has_dependents:
        dependencies.settle(conn, [job_id], now=now)
    tallies.add(conn, tallies.failure(row.queue, error, retried=False), now, worker_id)
    return JobState.DEAD.value


class _Ended:
    """A run's ENDED columns (attempts.record) from a row read before its transition."""

    def __init__(self, row, **changed):
        for column in attempts.ENDED:
            setattr(self, column.name, changed.get(column.name, getattr(row, column.name)))


def cancel_waiting(conn, ids: list[str], *, now: datetime) -> list[str]:
    """Cancel the jobs among `ids` that wait (pending, failed or blocked): no worker
    holds them, and the state guard makes this and a claim exclude each other. Their
    dependents are settled (cancelled down the chain, or unblocked if they waited
    --after-any). The ids cancelled."""
    cancelled, settling, queues = [], [], []
    for chunk in chunks(ids):
        rows = conn.execute(
            update(JOBS)
            .where(JOBS.c.id.in_(chunk), state_in(*WAITING))
            .values(state=JobState.CANCELLED.value, finished_at=now, updated_at=now, last_error=CANCELLED)
            .returning(JOBS.c.id, JOBS.c.has_dependents, JOBS.c.queue)
        ).all()
        cancelled += [row.id for row in rows]
        settling += [row.id for row in rows if row.has_dependents]
        queues += [row.queue for row in rows]
    dependencies.settle(conn, settling, now=now)
    tallies.add(conn, tallies.of_queues(queues, Outcome.CANCELLED), now)
    return cancelled


def request_cancel(conn, ids: list[str], *, now: datetime) -> list[str]:
    """Ask the workers running these jobs to cancel them (they see it at their next
    heartbeat, see cancel_requested); the ids asked."""
    asked = []
    for chunk in chunks(ids):
        asked += conn.execute(
            update(JOBS)
            .where(JOBS.c.id.in_(chunk), state_in(RUNNING))
            .values(cancel_requested_at=func.coalesce(JOBS.c.cancel_requested_at, now), updated_at=now)
            .returning(JOBS.c.id)
        ).scalars().all()
    return asked


def cancel_requested(conn, job_id: str, worker_id: str) -> bool:
    """Whether `cancel` asked this worker's running job to stop."""
    return conn.execute(select(JOBS.c.cancel_requested_at).where(_owned(job_id, worker_id))).scalar() is not None


def cancels_requested(conn, running: list[tuple[str, str]]) -> set[str]:
    """Of these (job id, worker id) pairs, the running jobs `cancel` asked their worker
    to stop (one statement for all the slots of a worker process)."""
    owners = dict(running)
    rows = conn.execute(
        select(JOBS.c.id, JOBS.c.worker_id).where(JOBS.c.id.in_(owners), JOBS.c.state == RUNNING, JOBS.c.cancel_requested_at.is_not(None))
    )
    return {job_id for job_id, worker_id in rows if owners.get(job_id) == worker_id}


def finish_cancelled(conn, job_id: str, worker_id: str, *, exit_code: int | None, output: str | None, now: datetime,
                     output_size: int | None = None) -> bool:
    """A running job stopped because it was cancelled: cancelled, no retry."""
    output_size = size_of(output, output_size)
    ended = conn.execute(
        update(JOBS)
        .where(_owned(job_id, worker_id))
        .values(state=JobState.CANCELLED.value, finished_at=now, updated_at=now, exit_code=exit_code, output=output,
                output_size=output_size, runs=_ONE_MORE_RUN, last_error=CANCELLED)
        .returning(JOBS.c.queue, controls.has_controls(JOBS.c.queue), JOBS.c.has_dependents, *attempts.ENDED)
    ).first()
    if ended is None:
        return False
    if ended.controlled:
        controls.free_slot(conn, ended.queue)
    attempts.record(conn, ended, finished_at=now, exit_code=exit_code, error=CANCELLED, output=output)
    if ended.has_dependents:
        dependencies.settle(conn, [job_id], now=now)
    tallies.count(conn, ended.queue, Outcome.CANCELLED, now, worker_id)
    return True


def stream_output(conn, job_id: str, worker_id: str, *, output: str, output_size: int) -> bool:
    """The running attempt's output so far (its owner's, batched: worker/stream.py);
    False if this worker no longer owns the job."""
    return conn.execute(update(JOBS).where(_owned(job_id, worker_id)).values(output=output, output_size=output_size)).rowcount == 1


def fresh_start(now: datetime) -> dict:
    """What a job taken back to pending by a person (`retry`, `dlq retry`) is set to:
    a new start, attempts reset, nothing left of its last run or of a cancel asked of it."""
    return {
        "state": JobState.PENDING.value,
        "attempts": 0,
        "run_at": now,
        "updated_at": now,
        "started_at": None,
        "finished_at": None,
        "worker_id": None,
        "cancel_requested_at": None,
    }


def release(conn, job_id: str, worker_id: str, *, now: datetime, ran: dict | None = None) -> bool:
    """Give a job back unrun (an immediate stop): pending again, no attempt charged.
    ran: the outcome (exit_code, output, output_size) of a run that was killed for it,
    recorded as an attempt; None for a job claimed and never started."""
    before = None
    if ran is not None:
        before = conn.execute(select(*attempts.ENDED).where(_owned(job_id, worker_id)).with_for_update()).first()
        if before is None:
            return False
    values = dict(state=JobState.PENDING.value, started_at=None, updated_at=now, worker_id=None)
    if before is not None and ran is not None:
        values.update(runs=before.runs + 1, output=ran["output"], output_size=ran["output_size"])
    given_back = conn.execute(
        update(JOBS).where(_owned(job_id, worker_id)).values(**values).returning(JOBS.c.queue, controls.has_controls(JOBS.c.queue))
    ).first()
    if given_back is None:
        return False
    if given_back.controlled:
        controls.free_slot(conn, given_back.queue)
    if before is not None and ran is not None:
        ended = _Ended(before, runs=before.runs + 1, output_size=ran["output_size"])
        attempts.record(conn, ended, finished_at=now, exit_code=ran["exit_code"], error=STOPPED, output=ran["output"])
    return True


def record(conn, job_id: str, worker_id: str, *, stopped: bool, error: str | None, exit_code: int | None,
           output: str | None, now: datetime, cfg: dict, cancelled: bool = False, output_size: int | None = None) -> str | None:
    """A finished attempt's outcome, off the hot path: cancelled, given back unrun
    (`stopped`), completed, or failed. The job's new state, or None if this worker no
    longer owns it."""
    size = size_of(output, output_size)
    if cancelled:
        done = finish_cancelled(conn, job_id, worker_id, exit_code=exit_code, output=output, output_size=size, now=now)
        return JobState.CANCELLED.value if done else None
    if stopped:
        ran = {"exit_code": exit_code, "output": output, "output_size": size}
        return JobState.PENDING.value if release(conn, job_id, worker_id, now=now, ran=ran) else None
    if error is None:
        done = complete(conn, job_id, worker_id, exit_code=0, output=output, output_size=size, now=now)
        return JobState.COMPLETED.value if done else None
    return fail(conn, job_id, worker_id, error=error, exit_code=exit_code, output=output, output_size=size, now=now, cfg=cfg)


def held(conn, worker_id: str) -> list[str]:
    """The ids of the jobs a worker is running (normally one), by queue: recovering
    them frees their queues' slots in name order, the order recount locks them in."""
    return conn.execute(
        select(JOBS.c.id).where(state_in(RUNNING), JOBS.c.worker_id == worker_id).order_by(JOBS.c.queue, JOBS.c.id)
    ).scalars().all()


def recover(conn, worker_id: str, *, now: datetime, cfg: dict, error: str = WORKER_LOST) -> list[tuple[str, str]]:
    """Charge a failed attempt to every job a dead worker still holds; [(job id, new state)]."""
    results = []
    for job_id in held(conn, worker_id):
        # What the run had printed by its last flush (worker/stream.py) is its output.
        streamed = conn.execute(select(JOBS.c.output, JOBS.c.output_size).where(_owned(job_id, worker_id))).first()
        kept = dict(output=streamed.output, output_size=streamed.output_size) if streamed else dict(output=None, output_size=None)
        if cancel_requested(conn, job_id, worker_id):  # its cancel outlived the worker
            done = finish_cancelled(conn, job_id, worker_id, exit_code=None, now=now, **kept)
            state = JobState.CANCELLED.value if done else None
        else:
            state = fail(conn, job_id, worker_id, error=error, exit_code=None, now=now, cfg=cfg, **kept)
        if state:
            results.append((job_id, state))
    return results


def lock_jobs(conn, table, where) -> list[str]:
    """Lock the rows of `table` (jobs or dead_jobs) that match `where`; their ids, in
    enqueue order. What a move may move: only rows its own transaction locked.

    On PostgreSQL, a transaction that wants a row another one has locked waits for it
    to end; if that one deleted (moved) the row, the row is no longer returned: the
    loser of a race learns that it has nothing to move, instead of moving it a second
    time or failing on the winner's copy. Locking in enqueue order (seq) makes two
    movers wait for each other rather than deadlock. SQLite needs no row lock: a write
    transaction holds the database's only write lock (SQLAlchemy drops FOR UPDATE).
    """
    return list(conn.execute(select(table.c.id).where(where).order_by(table.c.seq).with_for_update()).scalars())


def move_jobs(conn, source, target, ids: list[str], values: dict, guard=None) -> None:
    """Move rows between jobs and dead_jobs, keeping every shared column except the
    ones `values` sets. `ids` must be rows this transaction has locked (lock_jobs, or
    fail's SELECT ... FOR UPDATE); `guard` is a condition each must still meet (its owner).

    One copy and one delete per chunk, in the database: outputs never travel to the
    client. Both must touch every row: anything else would mean a row changed under
    its lock, and the transaction is abandoned rather than half-moved.
    """
    names = [c.name for c in source.columns if c.name in target.c and c.name not in values]
    copied = [source.c[n] for n in names] + [literal(v, target.c[k].type) for k, v in values.items()]
    for chunk in chunks(ids):
        match = source.c.id.in_(chunk) if guard is None else and_(source.c.id.in_(chunk), guard)
        copy = insert(target).from_select(names + list(values), select(*copied).where(match))
        # preserve_rowcount: SQLAlchemy reports no rowcount for an INSERT unless asked (psycopg).
        inserted = conn.execute(copy.execution_options(preserve_rowcount=True)).rowcount
        deleted = conn.execute(delete(source).where(match)).rowcount
        if inserted != len(chunk) or deleted != len(chunk):
            raise RuntimeError(f"moving {len(chunk)} jobs copied {inserted} and deleted {deleted}; nothing was moved")
