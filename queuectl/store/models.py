"""The schema that the Alembic migrations create, as SQLAlchemy Core tables.

Core tables, not ORM classes: nothing here is ever loaded as an object (every
statement in store/ is Core), and declaring the tables as mapped classes cost each
command importing SQLAlchemy's ORM and mapping nine classes: 0.15-0.2 s of every
command's start on the project's machine (docs/design.md section 22). A column
is NOT NULL unless it says `nullable=True`.
"""

from datetime import UTC

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)

from queuectl.states import ACTIVE, CLAIMABLE


class UTCDateTime(TypeDecorator):
    """Naive UTC in the database (portable, sorts as text on SQLite); aware UTC in Python."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None:
            value = value.replace(tzinfo=UTC)
        return value


# Stable constraint names, so that SQLite batch migrations can find them.
METADATA = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _column(name: str, type_, *, nullable: bool = False, **kw) -> Column:
    """A column, NOT NULL unless said otherwise (as the mapped classes' `Mapped[T]`
    made them; `Mapped[T | None]` is nullable=True here)."""
    return Column(name, type_, nullable=nullable, **kw)


class PartialIndex(Index):
    """An index of only the rows matching `where`, on SQLite and on PostgreSQL.

    The same as Index(..., sqlite_where=where, postgresql_where=where), except when
    the predicate is attached. SQLAlchemy validates each <dialect>_ keyword by importing
    that dialect, so those keywords made every process import both dialects, and the
    one it does not use cost `queuectl enqueue` some 25 ms. Here a dialect's options
    receive the predicate when they are first looked at: by that dialect's CREATE INDEX,
    by Alembic, or by tests/test_migrations.py, which checks it against the migrations.
    """

    DIALECTS = ("sqlite", "postgresql")

    def __init__(self, name: str, *expressions, where, unique: bool = False):
        self.where = where
        super().__init__(name, *expressions, unique=unique)

    # A classmethod in SQLAlchemy, an instance method here on purpose: the options need
    # this index's predicate, and SQLAlchemy looks them up through the instance.
    def _kw_reg_for_dialect_cls(self, dialect_name: str):  # type: ignore[override]
        # Builds dialect_options[dialect_name] (on first access) from the dialect's
        # defaults: the predicate goes in as if passed as <dialect_name>_where.
        options = super()._kw_reg_for_dialect_cls(dialect_name)
        if dialect_name in self.DIALECTS:
            options["where"] = self.where
        return options

    @property
    def dialect_kwargs(self):
        # The flat view lists only the dialects looked at so far; look at both first,
        # so that Alembic's autogenerate renders sqlite_where and postgresql_where.
        for name in self.DIALECTS:
            self.dialect_options[name]
        return super().dialect_kwargs


def _job_columns() -> list[Column]:
    """Columns shared by live jobs and dead jobs, so a job moves between them whole
    (new Column objects for each table)."""
    return [
        _column("id", String(128), primary_key=True),
        # Enqueue order: FIFO among equal priority and run_at; unnamed jobs use it as their id.
        _column("seq", BigInteger, unique=True),
        _column("command", Text),
        _column("state", String(16)),
        _column("attempts", Integer, default=0),
        _column("max_retries", Integer),
        _column("priority", Integer, default=0),
        _column("queue", String(64), default="default"),
        _column("run_at", UTCDateTime),
        _column("timeout", Float, nullable=True),
        _column("cwd", Text),
        _column("created_at", UTCDateTime),
        _column("updated_at", UTCDateTime),
        _column("started_at", UTCDateTime, nullable=True),
        _column("finished_at", UTCDateTime, nullable=True),
        _column("exit_code", Integer, nullable=True),
        _column("last_error", Text, nullable=True),
        # The output of the running attempt so far (streamed while it runs, see
        # worker/stream.py), else of the last one: its last output-limit characters.
        _column("output", Text, nullable=True),
        # Characters that attempt printed in all: more than len(output) when cut.
        _column("output_size", BigInteger, nullable=True),
        # Attempts that have ended, counting every kind (completed, failed, lost, stopped
        # now, cancelled); each is a row of `attempts`, numbered 1.. by this count. Unlike
        # `attempts` (failed attempts, which retry's backoff counts), a person's retry
        # does not reset it.
        _column("runs", Integer, default=0, server_default="0"),
        _column("worker_id", String(64), nullable=True),
        # Set by `cancel` on a running job; its worker sees it at its next heartbeat.
        _column("cancel_requested_at", UTCDateTime, nullable=True),
        # Some job was enqueued --after this one (job_dependencies): the transition that
        # ends it also settles them (store/dependencies.py). Returned by the completing
        # UPDATE, so the hot path does that work only for such jobs.
        _column("has_dependents", Boolean, default=False, server_default=false()),
        # `enqueue --unique-key`: at most one active job holds a key (ix_jobs_unique_key);
        # a dead job keeps it in the DLQ, so that `dlq retry` can check it is free again.
        _column("unique_key", String(255), nullable=True),
        # The schedule that enqueued it (store/schedules.py), if one did; kept when the
        # schedule is removed.
        _column("schedule", String(128), nullable=True),
    ]


# No plain index on state: SQLite's planner, without statistics, would prefer it
# to ix_jobs_claim for the claim and then sort every runnable job on each claim.
JOBS = Table("jobs", METADATA, *_job_columns())

# The claim query's exact shape (see transitions.claim_statement): only runnable rows are
# indexed, in claim order, so the cost of a claim does not grow with completed history.
PartialIndex("ix_jobs_claim", JOBS.c.priority.desc(), JOBS.c.run_at, JOBS.c.seq, where=JOBS.c.state.in_(CLAIMABLE))
# Running jobs by owner: recovery of a dead worker, and the running count of `status`.
PartialIndex("ix_jobs_running", JOBS.c.worker_id, where=JOBS.c.state == "running")
# Cancelled jobs, counted by `status` without scanning the completed history.
PartialIndex("ix_jobs_cancelled", JOBS.c.seq, where=JOBS.c.state == "cancelled")
# Jobs that ended and stay in this table (dead ones move to dead_jobs) by when they
# ended: `status --watch` shows the last few of them every interval without reading
# the completed history. It costs each completion one more index entry, at the
# index's end (finished_at grows with time): complete+claim measured the same with
# and without it, within noise (alternating runs, SQLite and PostgreSQL).
SETTLED = ("completed", "cancelled")
PartialIndex("ix_jobs_finished", JOBS.c.finished_at, where=JOBS.c.state.in_(SETTLED))
# A schedule's jobs by state: the overlap check of each tick (is one still active?)
# and `list --schedule`. Only scheduled jobs are in it, so the jobs enqueued by hand
# pay nothing; its predicate names no state, so a new state needs no migration.
PartialIndex("ix_jobs_schedule", JOBS.c.schedule, JOBS.c.state, where=JOBS.c.schedule.is_not(None))


# Blocked jobs (waiting for their dependencies), counted by `status` through this index.
# They are outside ix_jobs_claim: a million of them cost a claim nothing.
PartialIndex("ix_jobs_blocked", JOBS.c.seq, where=JOBS.c.state == "blocked")


# Job `job_id` waits for job `depends_on` (store/dependencies.py): kind 'after' (it
# must complete) or 'after_any' (it must end, in any terminal state). Kept after they
# are settled, so `show` lists them.
DEPENDENCIES = Table(
    "job_dependencies", METADATA,
    _column("job_id", String(128), primary_key=True),
    _column("depends_on", String(128), primary_key=True),
    _column("kind", String(16)),
    Index("ix_job_dependencies_depends_on", "depends_on"),
)
# At most one active job per unique key, across every process and host: the database
# refuses a second one whatever the timing (store/unique.py checks first, to name the
# holder). NULL keys never clash. Finished jobs are outside the index, so they free it.
PartialIndex("ix_jobs_unique_key", JOBS.c.unique_key, unique=True, where=JOBS.c.state.in_(ACTIVE))


DEAD_JOBS = Table("dead_jobs", METADATA, _column("dead_at", UTCDateTime), *_job_columns())  # the order the ORM gave

# Retention (store/retention.py) takes the oldest dead jobs first, a bounded batch at a time.
Index("ix_dead_jobs_dead_at", DEAD_JOBS.c.dead_at)


# One run of a job, written when it ends (see store/attempts.py).
ATTEMPTS = Table(
    "attempts", METADATA,
    _column("job_id", String(128), primary_key=True),
    _column("number", Integer, primary_key=True),
    _column("worker_id", String(64), nullable=True),
    _column("host", String(255), nullable=True),
    _column("started_at", UTCDateTime, nullable=True),
    _column("finished_at", UTCDateTime),
    _column("exit_code", Integer, nullable=True),
    _column("error", Text, nullable=True),  # None: it succeeded
    # NULL for a completed attempt: its output is the job's (a completed attempt stays
    # the job's last one until a person retries the job, which copies it here), so
    # the hot path writes each output once.
    _column("output", Text, nullable=True),
    _column("output_size", BigInteger, nullable=True),
)


# A recurring job (store/schedules.py): a cron expression in a time zone, the job
# spec it enqueues, and the next tick to fire.
SCHEDULES = Table(
    "schedules", METADATA,
    _column("name", String(128), primary_key=True),
    _column("cron", String(255)),
    _column("tz", String(64)),
    _column("catch_up", String(8)),  # 'one' or 'none'
    _column("overlap", String(8)),  # 'skip' or 'allow'
    # The job spec (JSON: command, queue, priority, max_retries, timeout, cwd).
    _column("spec", Text),
    # The tick to fire next. Supervisors fire it by moving it on with a guarded
    # UPDATE (... WHERE next_run = the tick they read): one of them wins each tick.
    _column("next_run", UTCDateTime),
    _column("paused_at", UTCDateTime, nullable=True),
    _column("last_run", UTCDateTime, nullable=True),  # when it last enqueued a job
    _column("last_job", String(128), nullable=True),
    # Ticks not fired because a job of the schedule was still active (--overlap skip).
    _column("skipped", Integer, default=0),
    _column("last_skipped", UTCDateTime, nullable=True),
    # Ticks passed while no supervisor ran and not fired (all but one with --catch-up
    # one, all with none).
    _column("missed", Integer, default=0),
    _column("created_at", UTCDateTime),
)


# The supervisors' tick: the due schedules, read along this index (paused ones are
# not in it), so 1,000 schedules cost one short index range scan a second.
PartialIndex("ix_schedules_due", SCHEDULES.c.next_run, where=SCHEDULES.c.paused_at.is_(None))


CONFIG = Table(
    "config", METADATA,
    _column("key", String(64), primary_key=True),
    _column("value", Text),
)


# A supervisor (role 'supervisor') or one of its worker processes (role 'worker').
WORKERS = Table(
    "workers", METADATA,
    _column("id", String(64), primary_key=True),
    _column("role", String(16)),
    _column("host", String(255)),
    _column("pid", Integer),
    # psutil create_time() of pid, so a recycled pid is never mistaken for this process.
    _column("pid_started", Float),
    _column("supervisor_id", String(64), nullable=True),
    _column("supervisor_pid", Integer, nullable=True),
    _column("state", String(16)),
    _column("job_id", String(128), nullable=True),
    # Process group of the running job, recorded once it has run a moment, so a
    # reaper on this host can kill what a dead worker left behind.
    _column("job_pgid", Integer, nullable=True),
    _column("queues", Text, nullable=True),
    _column("started_at", UTCDateTime),
    _column("last_heartbeat", UTCDateTime),
    _column("stopped_at", UTCDateTime, nullable=True),
    _column("processed", Integer, default=0),
    _column("failed", Integer, default=0),
    # 'graceful' or 'now' on a supervisor row: how `worker stop` reaches other hosts.
    _column("stop_request", String(16), nullable=True),
    Index("ix_workers_state", "state"),
)


# A queue's controls, honoured by every claim on every host (store/queues.py). Only
# queues someone paused or limited have a row; the rest cost a claim nothing.
QUEUES = Table(
    "queues", METADATA,
    _column("name", String(64), primary_key=True),
    _column("paused", Boolean, default=False, server_default="0"),
    # At most this many of the queue's jobs run at once, across all hosts; NULL: no limit.
    _column("max_running", Integer, nullable=True),
    # How many of its jobs run now: taken by the claim that starts one (while below
    # max_running), given back by every transition that ends a run (transitions.py).
    _column("running", Integer, default=0, server_default="0"),
    _column("updated_at", UTCDateTime),
)


# How many events of one kind (store/tallies.py: OUTCOMES) a queue had in one minute:
# the counters of `queuectl metrics`, kept in the database so that they survive every
# process. `shard` spreads concurrent increments of one queue over several rows
# (PostgreSQL row locks); readers sum over it. Rows older than a day are folded into
# one row per (queue, outcome) at minute 1970-01-01; rows older than an hour into one
# row per minute at shard -1, for throughput only (tallies.roll_up).
TALLIES = Table(
    "job_tallies", METADATA,
    _column("minute", UTCDateTime, primary_key=True),
    _column("queue", String(64), primary_key=True),
    _column("outcome", String(16), primary_key=True),
    _column("shard", Integer, primary_key=True),
    _column("count", BigInteger),
)


# The rows the totals are the sum of (tallies.totals): the folded totals and the last
# hour or so, not the day of folded minutes kept for throughput. Not `count`: an
# increment would then change an index key, and PostgreSQL could not update the row
# in place (a HOT update) on the hot path.
PartialIndex("ix_job_tallies_live", TALLIES.c.queue, TALLIES.c.outcome, where=TALLIES.c.shard >= 0)
