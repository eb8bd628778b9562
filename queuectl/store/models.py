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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from queuectl.states import CLAIMABLE


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

    def __init__(self, name: str, *expressions, where):
        self.where = where
        super().__init__(name, *expressions)

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


class DeadJob(JobColumns, Base):
    __tablename__ = "dead_jobs"

    dead_at: Mapped[datetime] = mapped_column(UTCDateTime)


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


# The tables, for the Core statements of store/ (the ORM classes above declare them;
# DeclarativeBase types __table__ as any FromClause, a declared class's is a Table).
JOBS = cast(Table, Job.__table__)
DEAD_JOBS = cast(Table, DeadJob.__table__)
CONFIG = cast(Table, ConfigEntry.__table__)
WORKERS = cast(Table, Worker.__table__)
ATTEMPTS = cast(Table, Attempt.__table__)
QUEUES = cast(Table, QueueControl.__table__)
