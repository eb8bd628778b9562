"""SQLAlchemy models: the schema that the Alembic migrations create."""

from datetime import UTC, datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
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
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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


class Base(DeclarativeBase):
    # Stable constraint names, so that SQLite batch migrations can find them.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


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


class JobColumns:
    """Columns shared by live jobs and dead jobs, so a job moves between them whole."""

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Enqueue order: FIFO among equal priority and run_at; unnamed jobs use it as their id.
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    command: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    queue: Mapped[str] = mapped_column(String(64), default="default")
    run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    timeout: Mapped[float | None] = mapped_column(Float)
    cwd: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The output of the running attempt so far (streamed while it runs, see
    # worker/stream.py), else of the last one: its last output-limit characters.
    output: Mapped[str | None] = mapped_column(Text)
    # Characters that attempt printed in all: more than len(output) when cut.
    output_size: Mapped[int | None] = mapped_column(BigInteger)
    # Attempts that have ended, counting every kind (completed, failed, lost, stopped
    # now, cancelled); each is a row of `attempts`, numbered 1.. by this count. Unlike
    # `attempts` (failed attempts, which retry's backoff counts), a person's retry
    # does not reset it.
    runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker_id: Mapped[str | None] = mapped_column(String(64))
    # Set by `cancel` on a running job; its worker sees it at its next heartbeat.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Some job was enqueued --after this one (job_dependencies): the transition that
    # ends it also settles them (store/dependencies.py). Returned by the completing
    # UPDATE, so the hot path does that work only for such jobs.
    has_dependents: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # `enqueue --unique-key`: at most one active job holds a key (ix_jobs_unique_key);
    # a dead job keeps it in the DLQ, so that `dlq retry` can check it is free again.
    unique_key: Mapped[str | None] = mapped_column(String(255))
    # The schedule that enqueued it (store/schedules.py), if one did; kept when the
    # schedule is removed.
    schedule: Mapped[str | None] = mapped_column(String(128))


class Job(JobColumns, Base):
    __tablename__ = "jobs"
    # No plain index on state: SQLite's planner, without statistics, would prefer it
    # to ix_jobs_claim for the claim and then sort every runnable job on each claim.


# The claim query's exact shape (see transitions.claim_statement): only runnable rows are
# indexed, in claim order, so the cost of a claim does not grow with completed history.
PartialIndex("ix_jobs_claim", Job.priority.desc(), Job.run_at, Job.seq, where=Job.state.in_(CLAIMABLE))
# Running jobs by owner: recovery of a dead worker, and the running count of `status`.
PartialIndex("ix_jobs_running", Job.worker_id, where=Job.state == "running")
# Cancelled jobs, counted by `status` without scanning the completed history.
PartialIndex("ix_jobs_cancelled", Job.seq, where=Job.state == "cancelled")
# Jobs that ended and stay in this table (dead ones move to dead_jobs) by when they
# ended: `status --watch` shows the last few of them every interval without reading
# the completed history. It costs each completion one more index entry, at the
# index's end (finished_at grows with time): complete+claim measured the same with
# and without it, within noise (alternating runs, SQLite and PostgreSQL).
SETTLED = ("completed", "cancelled")
PartialIndex("ix_jobs_finished", Job.finished_at, where=Job.state.in_(SETTLED))
# A schedule's jobs by state: the overlap check of each tick (is one still active?)
# and `list --schedule`. Only scheduled jobs are in it, so the jobs enqueued by hand
# pay nothing; its predicate names no state, so a new state needs no migration.
PartialIndex("ix_jobs_schedule", Job.schedule, Job.state, where=Job.schedule.is_not(None))


# Blocked jobs (waiting for their dependencies), counted by `status` through this index.
# They are outside ix_jobs_claim: a million of them cost a claim nothing.
PartialIndex("ix_jobs_blocked", Job.seq, where=Job.state == "blocked")


class JobDependency(Base):
    """Job `job_id` waits for job `depends_on` (store/dependencies.py): kind 'after'
    (it must complete) or 'after_any' (it must end, in any terminal state). Kept after
    they are settled, so `show` lists them."""

    __tablename__ = "job_dependencies"
    __table_args__ = (Index("ix_job_dependencies_depends_on", "depends_on"),)

    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    depends_on: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
# At most one active job per unique key, across every process and host: the database
# refuses a second one whatever the timing (store/unique.py checks first, to name the
# holder). NULL keys never clash. Finished jobs are outside the index, so they free it.
PartialIndex("ix_jobs_unique_key", Job.unique_key, unique=True, where=Job.state.in_(ACTIVE))


class DeadJob(JobColumns, Base):
    __tablename__ = "dead_jobs"

    dead_at: Mapped[datetime] = mapped_column(UTCDateTime)


# Retention (store/retention.py) takes the oldest dead jobs first, a bounded batch at a time.
Index("ix_dead_jobs_dead_at", DeadJob.dead_at)


class Attempt(Base):
    """One run of a job, written when it ends (see store/attempts.py)."""

    __tablename__ = "attempts"

    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)  # None: it succeeded
    # NULL for a completed attempt: its output is the job's (a completed attempt stays
    # the job's last one until a person retries the job, which copies it here), so
    # the hot path writes each output once.
    output: Mapped[str | None] = mapped_column(Text)
    output_size: Mapped[int | None] = mapped_column(BigInteger)


class Schedule(Base):
    """A recurring job (store/schedules.py): a cron expression in a time zone, the
    job spec it enqueues, and the next tick to fire."""

    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    cron: Mapped[str] = mapped_column(String(255))
    tz: Mapped[str] = mapped_column(String(64))
    catch_up: Mapped[str] = mapped_column(String(8))  # 'one' or 'none'
    overlap: Mapped[str] = mapped_column(String(8))  # 'skip' or 'allow'
    # The job spec (JSON: command, queue, priority, max_retries, timeout, cwd).
    spec: Mapped[str] = mapped_column(Text)
    # The tick to fire next. Supervisors fire it by moving it on with a guarded
    # UPDATE (... WHERE next_run = the tick they read): one of them wins each tick.
    next_run: Mapped[datetime] = mapped_column(UTCDateTime)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when it last enqueued a job
    last_job: Mapped[str | None] = mapped_column(String(128))
    # Ticks not fired because a job of the schedule was still active (--overlap skip).
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    last_skipped: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Ticks passed while no supervisor ran and not fired (all but one with --catch-up
    # one, all with none).
    missed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# The supervisors' tick: the due schedules, read along this index (paused ones are
# not in it), so 1,000 schedules cost one short index range scan a second.
PartialIndex("ix_schedules_due", Schedule.next_run, where=Schedule.paused_at.is_(None))


class ConfigEntry(Base):
    __tablename__ = "config"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Worker(Base):
    """A supervisor (role 'supervisor') or one of its worker processes (role 'worker')."""

    __tablename__ = "workers"
    __table_args__ = (Index("ix_workers_state", "state"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    # psutil create_time() of pid, so a recycled pid is never mistaken for this process.
    pid_started: Mapped[float] = mapped_column(Float)
    supervisor_id: Mapped[str | None] = mapped_column(String(64))
    supervisor_pid: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(128))
    # Process group of the running job, recorded once it has run a moment, so a
    # reaper on this host can kill what a dead worker left behind.
    job_pgid: Mapped[int | None] = mapped_column(Integer)
    queues: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    # 'graceful' or 'now' on a supervisor row: how `worker stop` reaches other hosts.
    stop_request: Mapped[str | None] = mapped_column(String(16))


class QueueControl(Base):
    """A queue's controls, honoured by every claim on every host (store/queues.py).
    Only queues someone paused or limited have a row; the rest cost a claim nothing."""

    __tablename__ = "queues"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # At most this many of the queue's jobs run at once, across all hosts; NULL: no limit.
    max_running: Mapped[int | None] = mapped_column(Integer)
    # How many of its jobs run now: taken by the claim that starts one (while below
    # max_running), given back by every transition that ends a run (transitions.py).
    running: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobTally(Base):
    """How many events of one kind (store/tallies.py: OUTCOMES) a queue had in one
    minute: the counters of `queuectl metrics`, kept in the database so that they
    survive every process. `shard` spreads concurrent increments of one queue over
    several rows (PostgreSQL row locks); readers sum over it. Rows older than a day
    are folded into one row per (queue, outcome) at minute 1970-01-01; rows older than
    an hour into one row per minute at shard -1, for throughput only (tallies.roll_up)."""

    __tablename__ = "job_tallies"

    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    queue: Mapped[str] = mapped_column(String(64), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


# The rows the totals are the sum of (tallies.totals): the folded totals and the last
# hour or so, not the day of folded minutes kept for throughput. Not `count`: an
# increment would then change an index key, and PostgreSQL could not update the row
# in place (a HOT update) on the hot path.
PartialIndex("ix_job_tallies_live", JobTally.queue, JobTally.outcome, where=JobTally.shard >= 0)


# The tables, for the Core statements of store/ (the ORM classes above declare them;
# DeclarativeBase types __table__ as any FromClause, a declared class's is a Table).
JOBS = cast(Table, Job.__table__)
DEAD_JOBS = cast(Table, DeadJob.__table__)
CONFIG = cast(Table, ConfigEntry.__table__)
WORKERS = cast(Table, Worker.__table__)
ATTEMPTS = cast(Table, Attempt.__table__)
DEPENDENCIES = cast(Table, JobDependency.__table__)
SCHEDULES = cast(Table, Schedule.__table__)
QUEUES = cast(Table, QueueControl.__table__)
TALLIES = cast(Table, JobTally.__table__)
