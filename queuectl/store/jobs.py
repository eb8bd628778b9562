"""Enqueueing and reading jobs (live and dead)."""

from functools import cache
from operator import itemgetter

from sqlalchemy import BigInteger, Text, cast, exc, select, union_all, update

from queuectl.errors import DuplicateId, KeyTaken, NotFound
from queuectl.jobspec import SPEC_KEYS, JobSpec, lookup_id
from queuectl.states import JobState, Outcome
from queuectl.store import config as settings
from queuectl.store import dependencies, tallies, unique
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
_AS_GIVEN = [name for name in SPEC_KEYS if name in _COLUMNS and name not in ("id", "max_retries", "run_at", "timeout", "has_dependents")]
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
    """Insert jobs in one transaction (all or nothing); returns their rows as dicts.

    A spec whose unique key an active job holds (or an earlier spec of the same call)
    is refused (KeyTaken: nothing is written), or with on_conflict "skip" left out:
    its place in the result is the holder's row, with "skipped": True.
    """
    now = now or utcnow()
    named = [s.id for s in specs if s.id]
    if len(set(named)) != len(named):
        seen: set[str] = set()
        for dup in named:
            if dup in seen:
                raise DuplicateId(f"job id {dup!r} appears more than once", job_id=dup)
            seen.add(dup)
    keyed = any(s.unique_key is not None for s in specs)
    for _ in range(_KEY_RACE_TRIES):
        try:
            return _enqueue_once(db, specs, now, keyed)
        except _KeyRace:
            # Only a retry (which takes no counter lock) can race an enqueue to a key:
            # looking again now finds its job.
            continue
    raise KeyTaken("a unique key of these jobs was taken by retried jobs again and again; nothing was enqueued", key="", holder=None)


# Times an enqueue looks again after losing a race for a unique key to a retry.
_KEY_RACE_TRIES = 3


class _KeyRace(Exception):
    """ix_jobs_unique_key refused an insert that the look before it allowed."""


def _enqueue_once(db, specs: list[JobSpec], now, keyed: bool) -> list[dict]:
    with db.begin() as conn:
        results = add(conn, db.dialect, specs, now, keyed=keyed)
        db.dialect.notify(conn)
    return results


def add(conn, dialect, specs: list[JobSpec], now, *, keyed: bool | None = None, schedule: str | None = None) -> list[dict]:
    """Insert jobs inside the caller's write transaction (enqueue's, or a schedule's
    tick, store/schedules.py); `schedule`: the name of the schedule enqueueing them.
    The result and KeyTaken as for enqueue; _KeyRace if the unique index refused a
    key that the look allowed (a retry took it meanwhile). The caller notifies
    workers (dialect.notify) before it commits."""
    if keyed is None:
        keyed = any(s.unique_key is not None for s in specs)
    if keyed:
        # Lock the counter row first (PostgreSQL; SQLite's write transaction holds
        # the database's one write lock already): concurrent enqueues queue up
        # here, so the look at the keys below sees the jobs of those before.
        conn.execute(select(CONFIG.c.value).where(CONFIG.c.key == SEQ_KEY).with_for_update())
        placed = _place_keys(conn, specs)
    else:
        placed = [None] * len(specs)
    inserting = [spec for spec, holder in zip(specs, placed) if holder is None]
    # Bumping the counter first locks its row (PostgreSQL) until commit, so
    # concurrent enqueues queue up here and the check below sees their jobs.
    first = _reserve_ids(conn, len(inserting)) if inserting else 0
    defaults = settings.load(conn)
    named = [s.id for s in inserting if s.id]
    if named:
        clash = _existing_ids(conn, named)
        if clash:
            first_clash = next(i for i in named if i in clash)
            raise DuplicateId(f"a job with id {first_clash!r} already exists", job_id=first_clash)
    rows: list[dict] = []
    results: list[dict] = []
    pending, blocked = JobState.PENDING.value, JobState.BLOCKED.value
    blank = dict.fromkeys(_COLUMNS)  # what a job has not done yet: no output, no worker...
    # A skipped spec takes no id: dependencies are those of the specs inserted.
    waits = _dependencies(conn, inserting, first)
    in_file = waits.defined
    for spec, holder in zip(specs, placed):
        if holder is not None:
            # The holder: a row of this call (placed before it), or one read.
            results.append(dict(results[holder] if isinstance(holder, int) else holder, skipped=True))
            continue
        seq = first + len(rows)
        if spec.run_at is not None:
            run_at = spec.run_at
        else:
            run_at = after(now, spec.delay) if spec.delay else now
        # An explicit timeout of 0 means none, whatever the configured default.
        timeout = (spec.timeout if spec.timeout is not None else defaults["job-timeout"]) or None
        row = dict(blank, **{name: getattr(spec, name) for name in _AS_GIVEN})
        job_id = spec.id or str(seq)
        row.update(
            id=job_id,
            seq=seq,
            state=blocked if spec.after or spec.after_any else pending,
            has_dependents=job_id in in_file,
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
        results.append(row)
    if not rows:
        return results  # every one skipped: nothing written
    try:
        _insert(dialect, conn, rows)
    except exc.IntegrityError as err:
        if keyed and unique.is_clash(err):
            raise _KeyRace() from None
        # Only a unique id can clash (seq numbers come from the locked counter).
        if len(named) == 1:
            raise DuplicateId(f"a job with id {named[0]!r} already exists", job_id=named[0]) from None
        raise DuplicateId("a job with one of these ids already exists") from None
    tallies.add(conn, tallies.of_queues((row["queue"] for row in rows), Outcome.ENQUEUED), now)
    if waits:
        dependencies.add(conn, list(waits))
        # Dependencies that ended already: unblocked or cancelled right away.
        waiting = [row["id"] for row in rows if row["state"] == blocked]
        unblocked, cancelled = dependencies.evaluate(conn, waiting, now=now)
        dependencies.woke(conn)
        ready = set(unblocked)
        for row in rows:
            if row["id"] in ready:
                row["state"] = pending
            elif row["id"] in cancelled:
                row.update(state=JobState.CANCELLED.value, last_error=cancelled[row["id"]], finished_at=now)
    return results


def _place_keys(conn, specs: list[JobSpec]) -> list:
    """For each spec, None (to insert), or what holds its unique key when it is to be
    skipped: the index of an earlier spec, or the active job's row (a dict). KeyTaken
    for the first spec whose key is held and whose on_conflict is "error"."""
    held = unique.holders(conn, [s.unique_key for s in specs if s.unique_key is not None])
    read: dict[str, dict] = {}
    first_of: dict[str, int] = {}
    placed: list = []
    for index, spec in enumerate(specs):
        key = spec.unique_key
        if key is None:
            placed.append(None)
            continue
        skip = spec.on_conflict == "skip"
        if key in held:
            holder, state = held[key]
            if not skip:
                raise KeyTaken(unique.held_message(key, holder, state), key=key, holder=holder, index=index)
            if key not in read:
                read[key] = dict(conn.execute(select(*JOBS.c).where(JOBS.c.id == holder)).one()._mapping)
            placed.append(read[key])
        elif key in first_of:
            earlier = first_of[key]
            if not skip:
                raise KeyTaken(f"unique key {key!r} is that of an earlier job of the same load", key=key, holder=specs[earlier].id,
                               index=index, holder_index=earlier)
            placed.append(earlier)
        else:
            first_of[key] = index
            placed.append(None)
    return placed


class _Waits(list):
    """(job_id, depends_on, kind) rows; `defined`: the ids the same enqueue defines."""

    defined: set[str]


def _dependencies(conn, specs: list[JobSpec], first: int) -> _Waits:
    """The dependency rows of these specs. Each id named must be a job that exists
    (live or dead) or one that an earlier spec of this enqueue defines; NotFound
    otherwise (nothing is written: the caller's transaction rolls back). The existing
    ones get has_dependents (an UPDATE, which locks them: see store/dependencies.py)."""
    waits = _Waits()
    waits.defined = set()
    earlier: set[str] = set()
    everyone = {spec.id or str(first + offset) for offset, spec in enumerate(specs)}
    outside: list[str] = []
    for offset, spec in enumerate(specs):
        job_id = spec.id or str(first + offset)
        for kind, ids in ((dependencies.AFTER, spec.after or ()), (dependencies.AFTER_ANY, spec.after_any or ())):
            for dep in ids:
                if dep == job_id:
                    raise NotFound(f"job {job_id!r} cannot wait for itself")
                if dep in earlier:
                    waits.defined.add(dep)
                elif dep not in outside:
                    outside.append(dep)
                waits.append((job_id, dep, kind))
        earlier.add(job_id)
    if outside:
        found = dependencies.mark_depended_on(conn, outside)
        for dep in outside:
            if dep not in found:
                waiter = next(j for j, d, _ in waits if d == dep)
                later = " (a job may only wait for jobs enqueued before it, on earlier lines of a --file)" if dep in everyone else ""
                # A job without an id of its own is named by its line: it was never written.
                offset = next(n for n, spec in enumerate(specs) if (spec.id or str(first + n)) == waiter)
                who = repr(waiter) if specs[offset].id else ("the job" if len(specs) == 1 else f"the job of line {offset + 1}")
                raise NotFound(f"{who} waits for {dep!r}, and there is no job with that id{later}")
    seen: set[tuple[str, str]] = set()
    unique = _Waits()
    unique.defined = waits.defined
    for job_id, dep, kind in waits:  # --after and --after-any of one id: --after wins
        if (job_id, dep) in seen:
            continue
        seen.add((job_id, dep))
        strongest = dependencies.AFTER if (job_id, dep, dependencies.AFTER) in waits else kind
        unique.append((job_id, dep, strongest))
    return unique


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
