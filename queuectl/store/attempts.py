"""Attempt history: one row of `attempts` per run of a job, written in the same
transaction as the transition that ends the run (transitions.py), so history and
state never disagree.

A job's `runs` column counts its ended attempts and numbers them: the transition
that ends a run increments it and the attempt row takes the new value. The owner's
guard on that transition (state running, worker_id) makes the number unique even
when a reaper and the worker race to end the same run: only one of them matches.
"""

import functools

from sqlalchemy import Integer, bindparam, case, delete, insert, literal, select, update

from queuectl.errors import NotFound
from queuectl.store.chunks import chunks
from queuectl.store.models import ATTEMPTS, DEAD_JOBS, JOBS, WORKERS

# What an ended run's RETURNING gives the attempt row.
ENDED = (JOBS.c.id, JOBS.c.runs, JOBS.c.worker_id, JOBS.c.started_at, JOBS.c.output_size)
COLUMNS = ["job_id", "number", "worker_id", "host", "started_at", "finished_at", "exit_code", "error", "output", "output_size"]


def _host(worker_id):
    return select(WORKERS.c.host).where(WORKERS.c.id == worker_id).scalar_subquery()


def insert_from(ended, *, finished_at, exit_code, error, output):
    """INSERT INTO attempts ... SELECT from `ended`, a CTE over an UPDATE's RETURNING
    of ENDED (PostgreSQL's hot path: one statement, see transitions)."""
    rows = select(
        ended.c.id, ended.c.runs, ended.c.worker_id, _host(ended.c.worker_id), ended.c.started_at,
        finished_at, exit_code, error, output, ended.c.output_size,
    )
    return insert(ATTEMPTS).from_select(COLUMNS, rows)


@functools.cache
def _record_statement():
    """record's INSERT, built once: one per ended run (on SQLite, every job), and a
    statement built per call costs SQLAlchemy a cache key each time. Parameters are
    named apart from the columns (see transitions: SQLAlchemy would read a parameter
    named like a column as one more value)."""
    def param(column):
        return bindparam(f"a_{column.name}", type_=column.type)

    values = {c.name: param(c) for c in ATTEMPTS.c if c.name != "host"}
    return insert(ATTEMPTS).values(host=_host(bindparam("a_host_of", type_=WORKERS.c.id.type)), **values)


def record(conn, ended, *, finished_at, exit_code: int | None, error: str | None, output: str | None) -> None:
    """The attempt row of a run that just ended; `ended`: its job's ENDED columns after
    the transition (runs already incremented). `conn`: a Connection, or the hot path's
    DriverTransaction (store/prepared.py)."""
    conn.execute(_record_statement(), {
        "a_job_id": ended.id, "a_number": ended.runs, "a_worker_id": ended.worker_id, "a_host_of": ended.worker_id,
        "a_started_at": ended.started_at, "a_finished_at": finished_at, "a_exit_code": exit_code, "a_error": error,
        "a_output": output, "a_output_size": ended.output_size,
    })


def of_job(conn, job_id: str) -> list:
    """A job's attempts, oldest first, without their outputs."""
    columns = [c for c in ATTEMPTS.c if c.name not in ("job_id", "output")]
    has_output = case((ATTEMPTS.c.output.is_(None), literal(0, Integer)), else_=literal(1, Integer)).label("has_own_output")
    return conn.execute(select(*columns, has_output).where(ATTEMPTS.c.job_id == job_id).order_by(ATTEMPTS.c.number)).all()


def one(conn, job_id: str, number: int) -> dict:
    """Attempt `number` of a job with its output; NotFound if there is none. A completed
    attempt keeps no output of its own: it is the job's."""
    row = conn.execute(select(*[c for c in ATTEMPTS.c if c.name != "job_id"]).where(
        ATTEMPTS.c.job_id == job_id, ATTEMPTS.c.number == number)).first()
    if row is None:
        raise NotFound(f"job {job_id!r} has no attempt {number}")
    found = dict(row._mapping)
    if found["output"] is None:
        for table in (JOBS, DEAD_JOBS):
            job = conn.execute(select(table.c.output).where(table.c.id == job_id)).first()
            if job is not None:
                found["output"] = job.output or ""
                break
    return found


def keep_outputs(conn, ids: list[str]) -> None:
    """Before a person's retry: a completed last attempt's output is the job's, which
    the next run replaces; give it to the attempt row."""
    job_output = select(JOBS.c.output).where(JOBS.c.id == ATTEMPTS.c.job_id).scalar_subquery()
    for chunk in chunks(ids):
        conn.execute(update(ATTEMPTS).where(ATTEMPTS.c.job_id.in_(chunk), ATTEMPTS.c.output.is_(None)).values(output=job_output))


def forget(conn, ids: list[str]) -> None:
    """The history of jobs deleted for good."""
    for chunk in chunks(ids):
        conn.execute(delete(ATTEMPTS).where(ATTEMPTS.c.job_id.in_(chunk)))

