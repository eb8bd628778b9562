"""Browsing the job history page by page: the dashboard's job list and its bulk actions.

Newest first, keyset pagination on `seq` (unique, enqueue order): a page is the
`limit` newest matching jobs with seq below the previous page's last one. No OFFSET
and no COUNT, so a page costs the same on the first page and the ten-thousandth, and
jobs enqueued meanwhile neither shift nor repeat the rows of older pages.

Each state is read by its own statement, each along the index that fits it (see
docs/design.md §16), and the pages merged here by seq:

- completed, and no state at all: the unique index on seq, read backwards, the
  filters checked on each row until the page is full;
- dead: dead_jobs's unique index on seq, read backwards;
- cancelled, blocked: ix_jobs_cancelled, ix_jobs_blocked (on seq), read backwards;
- pending, failed (ix_jobs_claim, its predicate repeated in the statement, since
  SQLite uses a partial index only when the WHERE visibly implies the index's),
  running (ix_jobs_running) and a schedule's jobs (ix_jobs_schedule): along that
  index and sorted when they are few, along seq when they are many (_statements).

A filter that matches few rows of a state with many (text in the command, a queue
or time range that few completed jobs match) reads rows until it has a page or has
read them all: that is its limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select

from queuectl.states import CLAIMABLE, JobState
from queuectl.store.jobs import LISTED
from queuectl.store.models import DEAD_JOBS, JOBS
from queuectl.store.transitions import state_in

# Every state, in the order the dashboard offers them.
STATES = tuple(s.value for s in JobState)
# States whose partial index is not on seq (a page of them needs a sort).
_SORTED_STATES = (*CLAIMABLE, JobState.RUNNING.value)
# Up to this many rows of such a state, or of a schedule, are read along their index
# and sorted (a few milliseconds); more are read along seq (see _statements).
FEW = 5000


@dataclass(frozen=True)
class JobFilter:
    """What the job browser shows: every field optional; states empty means all."""

    states: tuple[str, ...] = ()
    queue: str | None = None
    # A substring of the command, or an id (exact, or its beginning).
    text: str | None = None
    # created_at >= created_from and created_at < created_to.
    created_from: datetime | None = None
    created_to: datetime | None = None
    schedule: str | None = None

    def only(self, allowed: tuple[str, ...]) -> JobFilter:
        """The same filter narrowed to the states in `allowed` (all of them if it had none)."""
        chosen = tuple(s for s in (self.states or STATES) if s in allowed)
        return JobFilter(chosen, self.queue, self.text, self.created_from, self.created_to, self.schedule)


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(dialect, table, f: JobFilter, before, *, schedule_indexed: bool = True) -> list:
    """The conditions of `f` (states aside) on `table`, below the cursor `before`
    (a SQL expression of seq: see _statements)."""
    where = []
    if before is not None:
        where.append(before)
    if f.queue is not None:
        where.append(table.c.queue == f.queue)
    if f.schedule is not None:
        # coalesce() hides the condition from ix_jobs_schedule: see _statements.
        where.append(table.c.schedule == f.schedule if schedule_indexed else func.coalesce(table.c.schedule, "") == f.schedule)
    if f.created_from is not None:
        where.append(table.c.created_at >= f.created_from)
    if f.created_to is not None:
        where.append(table.c.created_at < f.created_to)
    if f.text:
        # LIKE with escaped wildcards: the text is matched as typed, in any case.
        escaped = _like_escaped(f.text)
        where.append(or_(
            dialect.like_any_case(table.c.command, f"%{escaped}%"),
            table.c.id == f.text,
            # The beginning of an id, in its case on both backends (SQLite's LIKE has none).
            func.substr(table.c.id, 1, len(f.text)) == f.text,
        ))
    return where


def _state_condition(state: str | None) -> list:
    if state is None:
        return []
    if state in CLAIMABLE:
        # Repeating ix_jobs_claim's predicate lets SQLite use it for one of its states.
        return [state_in(*CLAIMABLE), state_in(state)]
    return [state_in(state)]


def _few(conn, conditions: list) -> bool:
    """Whether fewer than FEW rows of `jobs` meet `conditions` (a bounded look)."""
    probe = select(JOBS.c.seq).where(*conditions).limit(FEW).subquery()
    return conn.execute(select(func.count()).select_from(probe)).scalar_one() < FEW


def _statements(conn, dialect, f: JobFilter, columns, before: int | None, limit: int) -> list:
    """One statement per state to read (see the module docstring), each newest first
    and at most `limit` rows.

    The rows of a state outside its own index on seq (pending, failed, running) or of
    a schedule are few or many. Few (under FEW, one bounded look along their index):
    they are read along that index and sorted; `seq + 0` keeps SQLite, which has no
    statistics, from walking the whole history along seq instead. Many: along seq,
    newest first, which finds a page of them at once.
    """
    parts = []
    states: list[str | None] = [*sorted(set(f.states))] or [None, JobState.DEAD.value]  # None: every live state
    for state in states:
        table = DEAD_JOBS if state == JobState.DEAD.value else JOBS
        condition = [] if table is DEAD_JOBS else _state_condition(state)
        sort_few = table is JOBS and (state in _SORTED_STATES or f.schedule is not None)
        if sort_few and _few(conn, condition + ([JOBS.c.schedule == f.schedule] if f.schedule is not None else [])):
            seq = table.c.seq + 0
            where = condition + _where(dialect, table, f, None if before is None else seq < before)
        else:
            seq = table.c.seq
            if state in CLAIMABLE:
                condition = [state_in(state)]  # not ix_jobs_claim: along seq
            where = condition + _where(dialect, table, f, None if before is None else seq < before, schedule_indexed=False)
        parts.append(select(*columns(table)).where(*where).order_by(seq.desc()).limit(limit))
    return parts


def _listed(table):
    return [table.c[name] for name in LISTED] + [table.c.seq]


def _ids(table):
    return [table.c.id, table.c.seq]


def _newest(conn, dialect, f: JobFilter, columns, before: int | None, limit: int) -> tuple[list, int | None]:
    """The `limit` newest rows matching `f` below `before`, and the cursor of the next
    page (None: this is the last). Each statement reads at most limit + 1 rows."""
    rows = []
    for statement in _statements(conn, dialect, f, columns, before, limit + 1):
        rows.extend(conn.execute(statement).all())
    rows.sort(key=lambda row: row.seq, reverse=True)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].seq if more and rows else None)


def page(conn, dialect, f: JobFilter, *, before: int | None, limit: int) -> tuple[list, int | None]:
    """A page of jobs (every field but the output, see jobs.LISTED, with seq), newest
    first, and the cursor of the next page (the `before` of the older page) or None."""
    return _newest(conn, dialect, f, _listed, before, limit)


def matching_ids(conn, dialect, f: JobFilter, *, before: int | None, limit: int) -> tuple[list[str], int | None]:
    """Ids of the `limit` newest jobs matching `f` below `before`, and the cursor of
    the rest (None: no more): a bulk action walks the matches batch by batch."""
    rows, cursor = _newest(conn, dialect, f, _ids, before, limit)
    return [row.id for row in rows], cursor
