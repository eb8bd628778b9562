"""Job tallies: how many jobs each queue enqueued and ended, per minute, in the database.

Every transition that enqueues or ends a job adds to the row of its (minute, queue,
outcome, shard) in the same transaction (states.Outcome says what each outcome
counts), so the counters are exact, never lost with a process, and cost each
transition one upsert: INSERT ... ON CONFLICT DO UPDATE SET count = count + n. A
bulk change (a cancel of 1,000 jobs, an enqueue --file) adds one row per (queue,
outcome), not one per job.

Lock order: a transaction writes its tallies after every job row it locks (the
end of each transition), and a bulk change writes one executemany of distinct keys
in sorted order, so tally rows are the last locks taken. Two transactions could
still deadlock only by writing two tally rows each, on the same shards, in opposite
orders, which random shards make unlikely; PostgreSQL would then abort one of them
with a deadlock error.

`shard`: on PostgreSQL the upsert locks its row until commit, so concurrent
completions of one queue would wait for each other there; each worker writes to
one of dialect.tally_shards rows, picked by its id, and other callers to a random
one. Readers sum over shards.

The roll-up (roll_up, in every retention pass: supervisors and `queuectl prune`)
keeps the totals cheap to read. Once a minute is older than SHARDED (nobody writes
to it any more), its rows are deleted, their counts added to one total row per
(queue, outcome) at minute EPOCH, shard 0, and to one row per (minute, queue,
outcome) at shard ARCHIVED (-1), which only throughput reads; archived rows older
than KEEP are deleted. So:

- totals = the sum of the rows with shard >= 0 (the EPOCH totals, and the last hour
  or so not yet folded), read along ix_job_tallies_live: a few thousand rows at most
  (queues x outcomes x shards x 60 minutes), however long the history;
- throughput per minute = the sum of a minute's rows, all shards and ARCHIVED; a day
  of minutes is kept.

Without any roll-up (no supervisor, no prune) both stay exact; the totals' read just
grows with the table.
"""

import random
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import Integer, bindparam, delete, func, literal, literal_column, select

from queuectl.states import TIMEOUT_ERROR, Outcome
from queuectl.store.models import TALLIES

# Where each connection carries its dialect helpers (store/dialect.py), for the
# statements here, which get only a connection: set by Database when it connects.
# Looked up rather than imported: the dialect's hot path imports this module.
DIALECT_KEY = "queuectl_dialect"
# Minutes this recent keep per-minute rows (throughput); older ones live on only in the totals.
KEEP = timedelta(hours=24)
# Minutes this recent keep their shards (they may still be written); older ones are folded.
SHARDED = timedelta(hours=1)
ARCHIVED = -1
# The minute of the folded totals.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEY = (TALLIES.c.minute, TALLIES.c.queue, TALLIES.c.outcome, TALLIES.c.shard)


def _dialect(conn):
    return conn.info[DIALECT_KEY]


def minute_of(moment: datetime) -> datetime:
    """The UTC minute that `moment` falls in (aware)."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def shard_of(worker_id: str | None, shards: int) -> int:
    """A worker's shard: stable for its id (crc32: Python's hash() changes per process),
    so one worker's increments land on one row; a random one without an id."""
    if shards <= 1:
        return 0
    if worker_id is None:
        return random.randrange(shards)
    return zlib.crc32(worker_id.encode()) % shards


def _write(conn, minute: datetime, shard: int, counts: dict[tuple[str, str], int]) -> None:
    rows = [(minute, queue, outcome, shard, n) for (queue, outcome), n in sorted(counts.items()) if n]
    if rows:
        _dialect(conn).add_tallies(conn, rows)


def add(conn, counts: dict[tuple[str, str], int], now: datetime, worker_id: str | None = None) -> None:
    """Add {(queue, outcome): n} to the minute of `now`, in the caller's transaction."""
    if counts:
        _write(conn, minute_of(now), shard_of(worker_id, _dialect(conn).tally_shards), counts)


def count(conn, queue: str, outcome: Outcome, now: datetime, worker_id: str | None = None) -> None:
    """One event of `queue`: add(conn, {(queue, outcome): 1}, ...), without the dicts
    (a worker's completion on SQLite takes this path)."""
    helpers = _dialect(conn)
    helpers.add_tallies(conn, [(minute_of(now), queue, outcome.value, shard_of(worker_id, helpers.tally_shards), 1)])


def of_queues(queues, outcome: Outcome) -> dict[tuple[str, str], int]:
    """{(queue, outcome): how many times each queue appears in `queues`}."""
    return {(queue, outcome.value): n for queue, n in Counter(queues).items()}


def failure(queue: str, error: str | None, *, retried: bool) -> dict[tuple[str, str], int]:
    """What a failed attempt adds: failed (retried) or dead, and timed_out if it hit its timeout."""
    counts = {(queue, (Outcome.FAILED if retried else Outcome.DEAD).value): 1}
    if error is not None and error.startswith(TIMEOUT_ERROR):
        counts[(queue, Outcome.TIMED_OUT.value)] = 1
    return counts


def from_returning(kind, source, outcome: Outcome):
    """An upsert adding 1 per row of `source` (a CTE with a queue column), for
    PostgreSQL's one-statement hot path (transitions.complete_and_claim_statement).
    Its parameters: tally_minute, tally_shard (see cte_params)."""
    insert = kind.insert_or_update(TALLIES)
    rows = select(
        bindparam("tally_minute", type_=TALLIES.c.minute.type), source.c.queue, literal(outcome.value),
        bindparam("tally_shard", type_=Integer()), literal(1),
    )
    return insert.from_select([c.name for c in _KEY] + ["count"], rows).on_conflict_do_update(
        index_elements=list(_KEY), set_={"count": TALLIES.c.count + insert.excluded.count}
    )


def cte_params(kind, now: datetime, worker_id: str) -> dict:
    """The parameters of from_returning's upsert."""
    return {"tally_minute": minute_of(now), "tally_shard": shard_of(worker_id, kind.tally_shards)}


def roll_up(conn, now: datetime) -> int:
    """Fold the rows of minutes older than SHARDED into the totals and the archive,
    and forget the archive's minutes older than KEEP (see the module docstring), in
    the caller's transaction; how many rows were folded. The rows are deleted first
    (RETURNING their counts), so two roll-ups at once never fold a row twice: the
    second finds it gone."""
    minute = minute_of(now)
    folded = conn.execute(
        delete(TALLIES)
        .where(TALLIES.c.minute < minute - SHARDED, TALLIES.c.minute > EPOCH, TALLIES.c.shard >= 0)
        .returning(TALLIES.c.minute, TALLIES.c.queue, TALLIES.c.outcome, TALLIES.c.count)
    ).all()
    totals: Counter[tuple[str, str]] = Counter()
    archive: dict[datetime, Counter[tuple[str, str]]] = {}
    for when, queue, outcome, n in folded:
        totals[(queue, outcome)] += n
        archive.setdefault(when, Counter())[(queue, outcome)] += n
    _write(conn, EPOCH, 0, dict(totals))
    cut = minute - KEEP
    kept = [(when, queue, outcome, ARCHIVED, n) for when, counts in sorted(archive.items()) if when >= cut
            for (queue, outcome), n in sorted(counts.items())]
    if kept:
        _dialect(conn).add_tallies(conn, kept)  # distinct keys: one executemany
    conn.execute(delete(TALLIES).where(TALLIES.c.minute < cut, TALLIES.c.minute > EPOCH, TALLIES.c.shard == ARCHIVED))
    return len(folded)


def totals(conn) -> dict[tuple[str, str], int]:
    """{(queue, outcome): count since the database began} (since migration 0010): the
    rows with shard >= 0, along ix_job_tallies_live (its WHERE, so SQLite uses it)."""
    query = (
        select(TALLIES.c.queue, TALLIES.c.outcome, func.sum(TALLIES.c.count))
        # A literal 0, not a bound parameter: SQLite uses a partial index only for a
        # WHERE that visibly implies the index's.
        .where(TALLIES.c.shard >= literal_column("0"))
        .group_by(TALLIES.c.queue, TALLIES.c.outcome)
    )
    return {(queue, outcome): int(n) for queue, outcome, n in conn.execute(query)}


def per_minute(conn, since: datetime, queue: str | None = None) -> dict[tuple[datetime, str], int]:
    """{(minute, outcome): count} of the minutes from `since` on, read along the
    primary key (minute first)."""
    query = select(TALLIES.c.minute, TALLIES.c.outcome, func.sum(TALLIES.c.count)).where(TALLIES.c.minute >= minute_of(since))
    if queue is not None:
        query = query.where(TALLIES.c.queue == queue)
    query = query.group_by(TALLIES.c.minute, TALLIES.c.outcome)
    return {(minute, outcome): int(n) for minute, outcome, n in conn.execute(query)}
