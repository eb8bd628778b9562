"""Enqueueing and reading jobs (live and dead)."""

from functools import cache
from operator import itemgetter

from sqlalchemy import BigInteger, Text, cast, exc, select, union_all, update

from queuectl.errors import DuplicateId, NotFound
from queuectl.jobspec import SPEC_KEYS, JobSpec, lookup_id
from queuectl.states import JobState
from queuectl.store import config as settings
from queuectl.store.models import CONFIG, DEAD_JOBS, JOBS
from queuectl.timeutil import after, iso, utcnow

SEQ_KEY = "_seq"
# Jobs purged from the DLQ, the only ones to leave the database (see counts.job_counts).
PURGED_KEY = "_purged"
# Columns a job carries, in the order JSON and `show` present them.
SHOWN = [c.name for c in JOBS.columns if c.name != "seq"]
# What a listing reads: every field but the output. A job keeps up to output-limit bytes
# of it (64 KiB by default, any size if raised), and a listing would hold every job's in
# memory: with 96 outputs of 1 MiB, `list` peaked at 152 MB instead of 47 (SQLite) and
# 253 MB instead of 58 (PostgreSQL). `show` and `logs` read it, one job at a time.
LISTED = [name for name in SHOWN if name != "output"]
_COLUMNS = [c.name for c in JOBS.columns]
# Job spec fields stored as given, in columns of the same name (every other column
# is set by enqueue below, or empty until the job runs).
_AS_GIVEN = [name for name in SPEC_KEYS if name in _COLUMNS and name not in ("id", "max_retries", "run_at", "timeout")]
# SQLite allows 32766 bound parameters per statement; stay well below.
_CHUNK = 500


def bump_counter(conn, key: str, count: int) -> int:
    """Add `count` to a counter row of the config table ('_seq', '_purged'); its new value.
    The UPDATE locks the row (PostgreSQL) until commit, so concurrent bumps queue up."""
    # A Core update: the ORM-enabled one costs milliseconds more to compile.
    bumped = cast(cast(CONFIG.c.value, BigInteger) + count, Text)
    top = conn.execute(
        update(CONFIG).where(CONFIG.c.key == key).values(value=bumped).returning(CONFIG.c.value)
    ).scalar_one()
    return int(top)


def _reserve_ids(conn, count: int) -> int:
    """Take `count` sequence numbers from the counter row; returns the first one.

    The counter only grows and is bumped inside the enqueue transaction, so ids
    are never reused (not even after a purge) and a rolled back enqueue takes none.
    """
    return bump_counter(conn, SEQ_KEY, count) - count + 1


def _existing_ids(conn, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        query = union_all(select(JOBS.c.id).where(JOBS.c.id.in_(chunk)), select(DEAD_JOBS.c.id).where(DEAD_JOBS.c.id.in_(chunk)))
        found.update(conn.execute(query).scalars())
    return found


def enqueue(db, specs: list[JobSpec], now=None) -> list[dict]:
    """Insert jobs in one transaction (all or nothing); returns their rows as dicts."""
    now = now or utcnow()
    named = [s.id for s in specs if s.id]
    if len(set(named)) != len(named):
        seen: set[str] = set()
        for dup in named:
            if dup in seen:
                raise DuplicateId(f"job id {dup!r} appears more than once", job_id=dup)
            seen.add(dup)
    with db.begin() as conn:
        rows = add(conn, db.dialect, specs, now)
        db.dialect.notify(conn)
    return rows


def add(conn, dialect, specs: list[JobSpec], now, schedule: str | None = None) -> list[dict]:
    """Insert jobs inside the caller's write transaction (enqueue's, or a schedule's
    tick, store/schedules.py); `schedule`: the name of the schedule enqueueing them.
    The caller notifies workers (dialect.notify) before it commits."""
    named = [s.id for s in specs if s.id]
    # Bumping the counter first locks its row (PostgreSQL) until commit, so
    # concurrent enqueues queue up here and the check below sees their jobs.
    first = _reserve_ids(conn, len(specs))
    defaults = settings.load(conn)
    if named:
        clash = _existing_ids(conn, named)
        if clash:
            first_clash = next(i for i in named if i in clash)
            raise DuplicateId(f"a job with id {first_clash!r} already exists", job_id=first_clash)
    rows = []
    pending = JobState.PENDING.value
    blank = dict.fromkeys(_COLUMNS)  # what a job has not done yet: no output, no worker...
    for offset, spec in enumerate(specs):
        seq = first + offset
        if spec.run_at is not None:
            run_at = spec.run_at
        else:
            run_at = after(now, spec.delay) if spec.delay else now
        # An explicit timeout of 0 means none, whatever the configured default.
        timeout = (spec.timeout if spec.timeout is not None else defaults["job-timeout"]) or None
        row = dict(blank, **{name: getattr(spec, name) for name in _AS_GIVEN})
        row.update(
            id=spec.id or str(seq),
            seq=seq,
            state=pending,
            attempts=0,
            runs=0,
            max_retries=spec.max_retries if spec.max_retries is not None else defaults["max-retries"],
            run_at=run_at,
            timeout=timeout,
            created_at=now,
            updated_at=now,
            schedule=schedule,
        )
        rows.append(row)
    try:
        _insert(dialect, conn, rows)
    except exc.IntegrityError:
        # Only a unique id can clash (seq numbers come from the locked counter).
        if len(named) == 1:
            raise DuplicateId(f"a job with id {named[0]!r} already exists", job_id=named[0]) from None
        raise DuplicateId("a job with one of these ids already exists") from None
    return rows


def _insert(dialect, conn, rows: list[dict]) -> None:
    """Insert through the driver, each value bound as SQLAlchemy itself would bind it.

    SQLAlchemy runs its bind conversions (UTCDateTime, then the driver's format)
    for every row and column; that was most of a bulk enqueue's time. Here the
    columns that need one come last, and their values are converted once per
    distinct combination: a file's jobs share their timestamps.
    """
    sql_dialect = conn.dialect
    plain, processors = [], {}
    for column in JOBS.columns:
        process = column.type.dialect_impl(sql_dialect).bind_processor(sql_dialect)
        if process is None:
            plain.append(column.name)
        else:
            processors[column.name] = process

    @cache
    def convert(values: tuple) -> tuple:
        return tuple(process(value) for process, value in zip(processors.values(), values))

    # itemgetter of two names or more returns a tuple (the five timestamps need converting).
    get_plain, get_converted = itemgetter(*plain), itemgetter(*processors)
    driver_rows = [get_plain(row) + convert(get_converted(row)) for row in rows]
    dialect.insert_rows(conn, JOBS.name, plain + list(processors), driver_rows)


def to_dict(row) -> dict:
    """A job row (live or dead) as the JSON object the CLI prints."""
    data = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
    data.pop("seq", None)
    for key, value in data.items():
        if hasattr(value, "isoformat"):
            data[key] = iso(value)
    return data


def _job_columns(table, names=SHOWN):
    return [table.c[name] for name in names]


def get(db, job_id: str):
    """A job by id, live or dead; NotFound otherwise."""
    job_id = lookup_id(job_id)
    with db.read() as conn:
        for table in (JOBS, DEAD_JOBS):
            row = conn.execute(select(*_job_columns(table)).where(table.c.id == job_id)).first()
            if row is not None:
                return row
    raise NotFound(f"no job with id {job_id!r}")


def progress(conn, job_id: str):
    """(state, runs, output, output_size) of a job, live or dead; NotFound otherwise."""
    for table in (JOBS, DEAD_JOBS):
        row = conn.execute(select(table.c.state, table.c.runs, table.c.output, table.c.output_size).where(table.c.id == job_id)).first()
        if row is not None:
            return row
    raise NotFound(f"no job with id {job_id!r}")


def listing(db, state: JobState | None = None, queue: str | None = None, limit: int | None = None, *,
            states: tuple[JobState, ...] | None = None, since=None, last: int | None = None, schedule: str | None = None):
    """Jobs in enqueue order; without a state, live and dead jobs together.
    `schedule`: only the jobs that schedule enqueued (along ix_jobs_schedule).
    `states`: any of several; `since`: created at or after it; `last`: the newest N
    (still returned oldest first), read backwards along seq's unique index.
    Rows have every field but `output` (see LISTED), so their size does not depend on it."""
    wanted = set(states or ()) | ({state} if state is not None else set())
    parts = []
    for table in (JOBS, DEAD_JOBS):
        if table is DEAD_JOBS and wanted and JobState.DEAD not in wanted:
            continue
        live = sorted(s.value for s in wanted if s is not JobState.DEAD)
        if table is JOBS and wanted and not live:
            continue
        query = select(*_job_columns(table, LISTED), table.c.seq)
        if live and table is JOBS:
            query = query.where(table.c.state.in_(live))
        if queue is not None:
            query = query.where(table.c.queue == queue)
        if since is not None:
            query = query.where(table.c.created_at >= since)
        if schedule is not None:
            query = query.where(table.c.schedule == schedule)
        parts.append(query)
    combined = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery()
    columns = [combined.c[name] for name in LISTED]
    if last:
        query = select(*columns, combined.c.seq).order_by(combined.c.seq.desc()).limit(last)
        if limit:
            query = query.limit(min(last, limit))
        with db.read() as conn:
            return conn.execute(query).all()[::-1]
    query = select(*columns).order_by(combined.c.seq)
    if limit:
        query = query.limit(limit)
    with db.read() as conn:
        return conn.execute(query).all()
