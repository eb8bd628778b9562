"""Unique jobs: at most one active job (states.ACTIVE) per unique key, on every host.

The database enforces it: ix_jobs_unique_key is a unique index of the active jobs'
keys only, so a second active job with a key cannot be written whatever the timing,
and a job that finishes (completed, cancelled; a dead one leaves for dead_jobs)
frees its key in the same statement. The functions here look first, so that a
refusal can name the job that holds the key:

- enqueue (store/jobs.py) looks after taking the '_seq' counter's lock, which every
  enqueue takes, so two enqueues of one key look one after the other and the second
  sees the first (skip then returns that job);
- a retry (control.retry, dlq.retry) looks at the keys of the jobs it brings back.

A retry does not take that lock, so one racing an enqueue may still reach the
index: `guard` turns that refusal into KeyTaken too (enqueue tries again instead).
"""

from contextlib import contextmanager

from sqlalchemy import exc, select

from queuectl.errors import KeyTaken
from queuectl.states import ACTIVE
from queuectl.store.chunks import chunks
from queuectl.store.models import JOBS
from queuectl.store.transitions import state_in


def holders(conn, keys) -> dict[str, tuple[str, str]]:
    """The active job holding each of `keys` that one holds: {key: (id, state)}.
    Read through ix_jobs_unique_key (state_in matches its WHERE)."""
    found: dict[str, tuple[str, str]] = {}
    for chunk in chunks(list(dict.fromkeys(keys))):
        rows = conn.execute(select(JOBS.c.unique_key, JOBS.c.id, JOBS.c.state).where(state_in(*ACTIVE), JOBS.c.unique_key.in_(chunk)))
        found.update({row.unique_key: (row.id, row.state) for row in rows})
    return found


def keys_of(conn, table, ids: list[str]) -> list[tuple[str, str | None]]:
    """(id, unique key) of those of `ids` in `table` (jobs or dead_jobs) that have one."""
    found: list[tuple[str, str | None]] = []
    for chunk in chunks(ids):
        rows = conn.execute(select(table.c.id, table.c.unique_key).where(table.c.id.in_(chunk), table.c.unique_key.is_not(None)))
        found += [(row.id, row.unique_key) for row in rows]
    return found


def held_message(key: str, holder: str, state: str) -> str:
    return f"unique key {key!r} is held by job {holder} ({state}); it is free again once that job has finished"


def check_free(conn, keyed: list[tuple[str, str | None]]) -> None:
    """Jobs about to become active again, as (id, unique key): KeyTaken if an active
    job holds one of their keys, or if two of them share one."""
    with_keys = [(job_id, key) for job_id, key in keyed if key is not None]
    if not with_keys:
        return
    held = holders(conn, [key for _, key in with_keys])
    first: dict[str, str] = {}
    for job_id, key in with_keys:
        if key in held:
            holder, state = held[key]
            raise KeyTaken(f"job {job_id}: {held_message(key, holder, state)}", key=key, holder=holder)
        if key in first:
            raise KeyTaken(f"jobs {first[key]} and {job_id} share unique key {key!r}: only one of them can be active; retry one",
                           key=key, holder=first[key])
        first[key] = job_id


def is_clash(err: exc.IntegrityError) -> bool:
    """Whether the database refused a write for ix_jobs_unique_key (SQLite names the
    column, PostgreSQL the index)."""
    return "unique_key" in str(err.orig)


@contextmanager
def guard():
    """Writes that make jobs active: a refusal by ix_jobs_unique_key (a race with an
    enqueue, lost) becomes KeyTaken; the transaction is then abandoned."""
    try:
        yield
    except exc.IntegrityError as err:
        if not is_clash(err):
            raise
        raise KeyTaken("a unique key of these jobs was taken by a job enqueued meanwhile; nothing was retried",
                       key="", holder=None) from None
