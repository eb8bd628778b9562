"""Retention: finished jobs deleted once past their configured age, a bounded batch
at a time.

Completed and cancelled jobs go retain-completed / retain-cancelled after their
finished_at, dead ones retain-dead after their dead_at (default never: the DLQ is
kept until purged). Running supervisors prune a batch every prune-interval (more
at once while a batch comes back full); `queuectl prune` prunes batch after batch
until nothing is left.

A batch is one short write transaction of at most BATCH jobs, oldest first:
completed ones along ix_jobs_finished, then cancelled ones, then dead ones along
ix_dead_jobs_dead_at. One pruner at a time (dialect.prune_lock: an advisory
transaction lock on PostgreSQL, the write lock on SQLite). Each job's attempt
history goes with it, and the jobs deleted are counted in '_purged' in the same
transaction, as `delete` and `dlq purge` count theirs, so the counts of `status`
(counts.job_counts) stay exact. Rows another transaction has locked (a `retry`
or a `delete` of them) are skipped, and each delete checks its row again, so a job
retried meanwhile is never deleted.
"""

from datetime import datetime

from sqlalchemy import delete, select

from queuectl.states import JobState
from queuectl.store import attempts, dependencies
from queuectl.store.jobs import PURGED_KEY, bump_counter
from queuectl.store.models import DEAD_JOBS, JOBS, SETTLED
from queuectl.store.transitions import state_in
from queuectl.timeutil import after

# Jobs deleted per transaction, at most.
BATCH = 1000
# What retention deletes, in the order a batch takes them, and the config key of each.
KINDS = (JobState.COMPLETED.value, JobState.CANCELLED.value, JobState.DEAD.value)
CONFIG_KEYS = {kind: f"retain-{kind}" for kind in KINDS}


def cutoffs(retain: dict[str, float | None], now: datetime) -> dict[str, datetime | None]:
    """For each kind, the time before which its jobs are deleted (None: kept).
    retain: seconds to keep each kind, or None for never."""
    found: dict[str, datetime | None] = {}
    for kind in KINDS:
        seconds = retain.get(kind)
        found[kind] = None if seconds is None else after(now, -seconds)
    return found


def configured(cfg: dict, now: datetime) -> dict[str, datetime | None]:
    """The cutoffs of the retain-* config keys."""
    return cutoffs({kind: cfg[key] for kind, key in CONFIG_KEYS.items()}, now)


def _delete_oldest(conn, kind: str, before: datetime, limit: int) -> list[str]:
    """Delete up to `limit` jobs of `kind` that ended before `before`, oldest first; their ids."""
    if kind == JobState.DEAD.value:
        table, ended = DEAD_JOBS, DEAD_JOBS.c.dead_at
        guard = [ended < before]
        pick = select(table.c.id).where(*guard)
    else:
        table, ended = JOBS, JOBS.c.finished_at
        guard = [state_in(kind), ended < before]
        # state_in(*SETTLED) is ix_jobs_finished's WHERE, so SQLite reads along it.
        pick = select(table.c.id).where(state_in(*SETTLED), *guard)
    # SKIP LOCKED (PostgreSQL): rows a retry or delete holds are left to it. Picked
    # first, then deleted by id: as `DELETE ... WHERE id IN (SELECT ... LIMIT n FOR
    # UPDATE SKIP LOCKED)`, PostgreSQL may run the subquery again and delete more
    # than n (tests/test_retention.py saw 25 of a batch of 10).
    picked = list(conn.execute(pick.order_by(ended).limit(limit).with_for_update(skip_locked=True)).scalars())
    if not picked:
        return []
    return list(conn.execute(delete(table).where(table.c.id.in_(picked), *guard).returning(table.c.id)).scalars())


def prune_batch(conn, dialect, cut: dict[str, datetime | None], *, limit: int = BATCH, wait: bool = False) -> dict[str, int] | None:
    """One batch in the caller's write transaction: at most `limit` jobs deleted;
    how many of each kind. None if another pruner holds the lock (wait=False)."""
    if not dialect.prune_lock(conn, wait=wait):
        return None
    pruned = dict.fromkeys(KINDS, 0)
    left = limit
    for kind in KINDS:
        before = cut.get(kind)
        if before is None or not left:
            continue
        ids = _delete_oldest(conn, kind, before, left)
        attempts.forget(conn, ids)
        dependencies.forget(conn, ids)
        pruned[kind] = len(ids)
        left -= len(ids)
    if left < limit:
        bump_counter(conn, PURGED_KEY, limit - left)
    return pruned
