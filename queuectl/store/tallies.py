"""Job tallies: how many jobs each queue enqueued and ended, per minute, in the database.

Every transition that enqueues or ends a job adds to the row of its (minute, queue,
outcome, shard) in the same transaction (states.Outcome says what each outcome
counts), so the counters are exact, never lost with a process, and cost each
transition one upsert: INSERT ... ON CONFLICT DO UPDATE SET count = count + n. A
bulk change (a cancel of 1,000 jobs, an enqueue --file) adds one row per (queue,
outcome), not one per job.

`shard`: on PostgreSQL the upsert locks its row until commit, so concurrent
completions of one queue would wait for each other there; each worker writes to
one of dialect.tally_shards rows, picked by its id, and other callers to a random
one. Readers sum over shards.

Rows older than KEEP are folded into one total row per (queue, outcome) at minute
EPOCH (roll_up, in the retention pass), so the table stays small: a day of minutes
plus one row per (queue, outcome), and totals are the sum of all rows.
"""

import random
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import Integer, bindparam, delete, func, literal, select

from queuectl.states import TIMEOUT_ERROR, Outcome
from queuectl.store.dialect import of_connection
from queuectl.store.models import TALLIES

# Minutes this recent keep their own rows (throughput per minute); older ones are totals.
KEEP = timedelta(hours=24)
# The minute of the folded totals.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEY = (TALLIES.c.minute, TALLIES.c.queue, TALLIES.c.outcome, TALLIES.c.shard)


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


# The upsert of each backend, built once (its compiled form is then cached).
_UPSERTS: dict[str, object] = {}


def _upsert(kind):
    statement = _UPSERTS.get(kind.name)
    if statement is None:
        insert = kind.insert_or_update(TALLIES)
        statement = _UPSERTS[kind.name] = insert.on_conflict_do_update(
            index_elements=list(_KEY), set_={"count": TALLIES.c.count + insert.excluded.count}
        )
    return statement


def _write(conn, minute: datetime, shard: int, counts: dict[tuple[str, str], int]) -> None:
    rows = [{"minute": minute, "queue": queue, "outcome": outcome, "shard": shard, "count": n}
            for (queue, outcome), n in counts.items() if n]
    if rows:
        conn.execute(_upsert(of_connection(conn)), rows[0] if len(rows) == 1 else rows)


def add(conn, counts: dict[tuple[str, str], int], now: datetime, worker_id: str | None = None) -> None:
    """Add {(queue, outcome): n} to the minute of `now`, in the caller's transaction."""
    if counts:
        _write(conn, minute_of(now), shard_of(worker_id, of_connection(conn).tally_shards), counts)


def count(conn, queue: str, outcome: Outcome, now: datetime, worker_id: str | None = None) -> None:
    """One event of `queue`: add(conn, {(queue, outcome): 1}, ...)."""
    add(conn, {(queue, outcome.value): 1}, now, worker_id)


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
    """Fold the rows older than KEEP into the totals at EPOCH, in the caller's
    transaction; how many rows were folded. The rows are deleted first (RETURNING their
    counts), so two roll-ups at once never fold a row twice: the second one finds it
    gone. Nothing writes to those minutes any more."""
    cut = minute_of(now) - KEEP
    folded = conn.execute(
        delete(TALLIES).where(TALLIES.c.minute < cut, TALLIES.c.minute > EPOCH).returning(TALLIES.c.queue, TALLIES.c.outcome, TALLIES.c.count)
    ).all()
    totals: Counter[tuple[str, str]] = Counter()
    for queue, outcome, n in folded:
        totals[(queue, outcome)] += n
    _write(conn, EPOCH, 0, dict(totals))
    return len(folded)


def totals(conn) -> dict[tuple[str, str], int]:
    """{(queue, outcome): count since the database began} (since migration 0010)."""
    query = select(TALLIES.c.queue, TALLIES.c.outcome, func.sum(TALLIES.c.count)).group_by(TALLIES.c.queue, TALLIES.c.outcome)
    return {(queue, outcome): int(n) for queue, outcome, n in conn.execute(query)}


def per_minute(conn, since: datetime, queue: str | None = None) -> dict[tuple[datetime, str], int]:
    """{(minute, outcome): count} of the minutes from `since` on, read along the
    primary key (minute first)."""
    query = select(TALLIES.c.minute, TALLIES.c.outcome, func.sum(TALLIES.c.count)).where(TALLIES.c.minute >= minute_of(since))
    if queue is not None:
        query = query.where(TALLIES.c.queue == queue)
    query = query.group_by(TALLIES.c.minute, TALLIES.c.outcome)
    return {(minute, outcome): int(n) for minute, outcome, n in conn.execute(query)}
