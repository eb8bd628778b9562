"""Every difference between SQLite and PostgreSQL lives here, and only here."""

import errno
import fcntl
import functools
import logging
import os
import select
import sqlite3
import stat
import threading
import time
import weakref
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, exc, text
from sqlalchemy.engine import URL, Connection, Engine

from queuectl.errors import ConnectionsExhausted, DatabaseError, ValidationError

if TYPE_CHECKING:
    import psycopg  # imported where used: only PostgreSQL pays for it

# Long enough that no command fails with "database is locked" under load: writers
# queue behind each other instead of giving up (transactions here are short).
# QUEUECTL_BUSY_TIMEOUT overrides it (seconds); it bounds both waits of a writer, on
# the host's flock and on SQLite's own lock.
SQLITE_BUSY_TIMEOUT_S = 60.0
BUSY_TIMEOUT_ENV = "QUEUECTL_BUSY_TIMEOUT"
# While another process holds the flock, a writer tries again after these pauses
# (doubling): the kernel has no flock with a deadline, and a holder stalled for good
# (SIGSTOP) must not hang every writer. Transactions hold it for well under a
# millisecond, so the cap keeps the queue moving nearly as fast as a blocking flock.
_FLOCK_FIRST_PAUSE = 0.00005
_FLOCK_MAX_PAUSE = 0.001
# Held for longer than this, the lock is held by something slow (a big `enqueue
# --file`, an outside transaction, a stalled process): wait less eagerly.
_FLOCK_PATIENT_AFTER, _FLOCK_PATIENT_PAUSE = 1.0, 0.01
NOTIFY_CHANNEL = "queuectl_jobs"
# Set in a SQLite connection's info by notify(): Database.begin wakes the host's idle
# workers once the transaction has committed (store/wakeup.py).
WAKE_AFTER_COMMIT = "queuectl_wake_after_commit"
# pg_advisory_lock key for migrations: an arbitrary constant ("qctl" in ASCII).
PG_MIGRATION_LOCK = 0x7163746C
# pg_advisory_xact_lock key for retention: one pruner at a time ("qprn" in ASCII).
PG_PRUNE_LOCK = 0x7170726E
# Workers' and supervisors' session option (PostgresDialect.engine_options), and how
# PgBouncer refuses it.
_WORKER_OPTIONS = "-c synchronous_commit=off"
_REFUSED_OPTIONS = "unsupported startup parameter: options"
# The URL idle PostgreSQL workers LISTEN on, when the queue's URL goes through a
# transaction-mode pooler (`worker start --listen-db` sets it for the pool).
LISTEN_DB_ENV = "QUEUECTL_LISTEN_DB"
# How long an idle worker waits before it tries its LISTEN connection again (doubling).
_LISTEN_RETRY_MIN, _LISTEN_RETRY_MAX = 0.5, 30.0
# What PostgreSQL and PgBouncer say when they refuse a connection for want of free
# ones (max_connections, a database's or role's CONNECTION LIMIT, max_client_conn).
_NO_FREE_CONNECTION = (
    "too many clients already",
    "too many connections for",
    "remaining connection slots are reserved",
    "no more connections allowed",
)


# How SQLAlchemy stores a DATETIME in SQLite (text that sorts as time), and the
# tallies' upsert in the driver's terms (SQLiteDialect.add_tallies).
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"
_SQLITE_TALLY = (
    "INSERT INTO job_tallies (minute, queue, outcome, shard, count) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (minute, queue, outcome, shard) DO UPDATE SET count = job_tallies.count + excluded.count"
)


class SQLiteDialect:
    # The pool's wake-up socket is poked by the enqueuers themselves (not relayed).
    wake_is_relayed = False
    name = "sqlite"
    supports_listen = False
    # No DML in a CTE: a claim takes its queue's slot (store/queues.py) with a second
    # statement, in the same write transaction, which holds the only write lock.
    slot_in_claim = False
    # Rows each (minute, queue, outcome) tally spreads its increments over (see
    # store/tallies.py): one writer at a time holds the database, so one is enough.
    tally_shards = 1

    @staticmethod
    def insert_or_update(table):
        """INSERT ... ON CONFLICT DO UPDATE for `table` (SQLite's construct; the same API
        as PostgreSQL's). Imported here: SQLAlchemy's dialect modules cost time to load."""
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)

    def add_tallies(self, conn: Connection, rows: list[tuple]) -> None:
        """Add (minute, queue, outcome, shard, count) rows to job_tallies (store/tallies.py)
        through the driver: SQLAlchemy's work per statement (cache lookup, binding)
        was 40% of a worker's tally (47 us against 28), on every job."""
        driver_rows = [(minute.astimezone(UTC).strftime(_SQLITE_DATETIME), *rest) for minute, *rest in rows]
        conn.exec_driver_sql(_SQLITE_TALLY, driver_rows[0] if len(driver_rows) == 1 else driver_rows)

    def _tally_row(self, now, queue: str, outcome: str, worker_id: str) -> tuple:
        """One event's row for _SQLITE_TALLY (tallies.count's, in the driver's terms)."""
        from queuectl.store import tallies

        return (tallies.minute_of(now).strftime(_SQLITE_DATETIME), queue, outcome, tallies.shard_of(worker_id, self.tally_shards), 1)

    @staticmethod
    def check_url(url: URL) -> None:
        """Refuse (exit 2) a SQLite URL no command can use."""
        path = url.database
        if not path or path == ":memory:" or path.startswith("file::memory:"):
            raise ValidationError("an in-memory SQLite database would vanish with this command; give a file path")
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes of argv or the environment
            raise ValidationError(f"database path {path!r} is not valid UTF-8") from None

    def __init__(self, url: URL):
        self.path = url.database if url.database and url.database != ":memory:" else None
        self.busy_timeout = busy_timeout()
        self._fd: int | None = None
        self._threads = threading.Lock()
        self._hot: sqlite3.Connection | None = None  # driver_transaction's
        _OPEN_LOCKS.add(self)

    def missing_driver_message(self, err: ImportError) -> str:
        return f"SQLite support is missing from this Python: {err}"

    def prepare_location(self, url: URL, create_directory: bool = False) -> None:
        """Create the database file (0600) private to the user; its directory (0700)
        only when create_directory (the default location). Elsewhere a missing
        directory is a typo more often than a wish, and one made silently would hide
        the jobs from every command that spells it right: refused, with the reason."""
        if not self.path:
            return
        path = Path(self.path)
        parent = path.parent
        if not parent.is_dir():
            existing = next(p for p in parent.parents if p.exists() or p == p.parent) if not parent.exists() else parent
            if existing.exists() and not existing.is_dir():
                raise DatabaseError(f"cannot use database {path}: {existing} is not a directory")
            if not create_directory:
                raise DatabaseError(f"database directory {parent} does not exist; create it first (mkdir -p {parent}) or give another --db")
            try:
                parent.mkdir(parents=True, mode=0o700, exist_ok=True)
            except OSError as err:
                raise DatabaseError(f"cannot create the database directory {parent}: {err.strerror or err}") from None
        if not path.exists():
            try:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as err:
                if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise DatabaseError(f"cannot create database {path}: {err.strerror} (directory {parent})") from None
                # otherwise sqlite reports the real problem, with the path, on connect
        elif not os.access(parent, os.W_OK) and not all(Path(f"{path}{s}").exists() for s in ("-wal", "-shm")):
            # SQLite cannot open a WAL database, even to read it, without creating
            # its -wal and -shm files beside it; its own message says only "unable
            # to open database file".
            why = "a read-only file system" if os.statvfs(parent).f_flag & os.ST_RDONLY else "not writable by this user"
            raise DatabaseError(f"cannot use database {path}: its directory {parent} is {why} (SQLite creates its -wal and -shm files there)")

    def engine_options(self, durable: bool) -> dict:
        return {"connect_args": {"timeout": self.busy_timeout}}

    def configure(self, engine: Engine, *, durable: bool) -> None:
        # synchronous=FULL fsyncs the WAL at every commit: an acknowledged enqueue
        # survives a power cut. Workers use NORMAL (durable against process crashes;
        # a power cut may forget the last outcomes, and those jobs simply run again).
        synchronous = "FULL" if durable else "NORMAL"

        @event.listens_for(engine, "connect")
        def on_connect(dbapi_connection, _record):
            # Let SQLAlchemy's begin event below issue BEGIN, not pysqlite.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def on_begin(conn: Connection):
            # IMMEDIATE takes the write lock up front: a deferred transaction that
            # later writes can fail with SQLITE_BUSY without waiting. Readers in WAL
            # mode never block, so they begin deferred.
            if conn.get_execution_options().get("queuectl_read_only"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    @contextmanager
    def write_lock(self):
        """Queue this host's writers on a kernel file lock before BEGIN IMMEDIATE.

        SQLite's own busy handler sleeps 1, 2, 5, 10... ms between tries, so two
        busy workers waste most of their time asleep; a writer waiting on the flock
        tries again within a millisecond of its release. Writers that do not take
        it (the sqlite3 shell, `alembic`) are still serialised by busy_timeout.
        """
        if not self.path:
            yield
            return
        # One deadline for both waits below (SQLite's own busy_timeout may add to it
        # only when a writer that takes no flock holds the database).
        deadline = time.monotonic() + self.busy_timeout
        # The flock belongs to the descriptor, which this process's threads share: a
        # worker's heartbeat thread queues behind its job loop here first.
        if not self._threads.acquire(timeout=self.busy_timeout):
            raise DatabaseError(f"database {self.path} is locked: another thread of this process held it for {self.busy_timeout:g}s")
        try:
            # Opened under the thread lock: two threads' first writes (the dashboard's
            # thread pool) would otherwise each open it, and one descriptor would leak.
            fd = self._lock_fd()
            if fd is None:  # a read-only directory: busy_timeout alone serialises writers
                yield
                return
            self._flock(fd, deadline)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _flock(self, fd: int, deadline: float) -> None:
        """Take the flock, or fail like SQLite does once busy_timeout has passed."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        patient_at = time.monotonic() + _FLOCK_PATIENT_AFTER
        pause = _FLOCK_FIRST_PAUSE
        while True:
            time.sleep(pause)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DatabaseError(
                        f"database {self.path} is locked: another process has held {self.path}.lock"
                        f" for {self.busy_timeout:g}s (stalled? see {BUSY_TIMEOUT_ENV})"
                    ) from None
            pause = min(pause * 2, _FLOCK_MAX_PAUSE if time.monotonic() < patient_at else _FLOCK_PATIENT_PAUSE)

    def _lock_fd(self) -> int | None:
        if not self.path:
            return None
        if self._fd is None:
            self._fd = _open_lock_file(self.path + ".lock")
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        if self._hot is not None:
            self._hot.close()
        self._hot = None

    def _forget_inherited_lock(self) -> None:
        """In a forked child: close the parent's lock descriptor. The flock belongs to
        the open file description, so a child keeping it would keep the parent's lock
        alive after the parent died (a SIGKILLed supervisor would hang every writer)."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        self._threads = threading.Lock()  # whichever parent thread held it is not here
        self._hot = None  # the parent's: SQLite forbids using a connection across fork

    @contextmanager
    def migration_lock(self, engine: Engine):
        """Serialise schema creation among processes opening a fresh database."""
        if not self.path:  # in memory: one connection, nobody to race
            with engine.connect() as conn:
                yield conn
            return
        with self.write_lock(), engine.connect() as conn:
            # WAL lets readers run beside the writer; the mode is stored in the file.
            # It cannot change inside a transaction, hence the driver connection.
            driver = conn.connection.driver_connection
            assert driver is not None  # an open connection's (SQLAlchemy types it Optional)
            mode = driver.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise DatabaseError(f"SQLite refused WAL mode for {self.path} (got {mode!r})")
            yield conn

    @contextmanager
    def driver_transaction(self, engine: Engine):
        """Database.begin_driver's transaction: BEGIN IMMEDIATE under the write lock, on
        a connection of this process's own, outside the pool (checking one out and in
        cost a sixth of the hot path's CPU). The write lock's thread lock is what
        makes it safe to share among a worker's threads: only its holder uses it."""
        with self.write_lock():
            driver = self._hot
            if driver is None:
                pooled = engine.raw_connection()  # connected like any other (PRAGMAs, see configure)
                driver = pooled.driver_connection
                assert driver is not None  # an open connection's (SQLAlchemy types it Optional)
                pooled.detach()
                self._hot = driver
            driver.execute("BEGIN IMMEDIATE")
            try:
                yield driver
                driver.execute("COMMIT")
            except BaseException:
                self._hot = None  # whatever went wrong, the next transaction starts afresh
                try:
                    driver.close()  # rolls back what is open
                except Exception:
                    pass
                raise

    @contextmanager
    def write_one(self, db):
        """A one-statement write: an ordinary write transaction, whose BEGIN IMMEDIATE
        takes the write lock first."""
        with db.begin() as conn:
            yield conn

    def complete_and_claim(self, db, job_id: str, worker_id: str, *, output: str | None, now, queues: tuple[str, ...] | None,
                           output_size: int | None = None):
        """The worker's hot path: no DML in a CTE here, and no round trips to save, so
        four statements (completion, its attempt, its tally, the claim) in one
        transaction, on the driver's cursor (store/prepared.py: a fifth of the CPU
        SQLAlchemy's Connection takes). A job with more to settle (dependents, a
        queue's slot) or no longer ours is left to the general path, in a
        transaction of its own. (owned, next job or None)."""
        from queuectl.states import Outcome
        from queuectl.store import attempts, transitions

        params = transitions.outcome_params(job_id, worker_id, exit_code=0, output=output,
                                            output_size=transitions.size_of(output, output_size), now=now)
        with db.begin_driver() as driver:
            ended = driver.first(transitions.COMPLETE_PLAIN, params)
            if ended is not None:
                attempts.record(driver, ended, finished_at=now, exit_code=0, error=None, output=None)
                driver.execute_sql(_SQLITE_TALLY, self._tally_row(now, ended.queue, Outcome.COMPLETED.value, worker_id))
                return True, driver.first(transitions.claim_statement(queues, after_ending=True), {"now": now, "claimer": worker_id})
        return self._complete_and_claim_slowly(db, job_id, worker_id, output=output, output_size=output_size, now=now, queues=queues)

    def _complete_and_claim_slowly(self, db, job_id: str, worker_id: str, *, output, output_size, now, queues):
        from queuectl.store import dependencies, transitions

        with db.begin() as conn:
            owned = transitions.complete(conn, job_id, worker_id, exit_code=0, output=output, output_size=output_size, now=now)
            if dependencies.woke(conn):
                self.notify(conn)  # dependents the claim below does not take wake others
            return owned, transitions.claim_after_ending(conn, worker_id, queues, now)

    def insert_rows(self, conn: Connection, table: str, columns: list[str], rows: list[tuple]) -> None:
        """Rows already in the driver's types, through its executemany: SQLAlchemy's
        per-row parameter handling would cost more than the insert itself."""
        marks = ", ".join("?" * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def prune_lock(self, conn: Connection, *, wait: bool) -> bool:
        """One pruner at a time: this write transaction already holds the database's
        only write lock (BEGIN IMMEDIATE), so another pruner waits for it to end."""
        return True

    def notify(self, conn: Connection) -> None:
        """Wake this host's idle workers once the transaction commits (never before:
        a worker woken then would find nothing). Database.begin does it, through
        wake_after_commit."""
        conn.info[WAKE_AFTER_COMMIT] = True

    def wake_after_commit(self) -> None:
        """The local wake-up (store/wakeup.py): one datagram to each pool of this
        host waiting on this file."""
        if self.path:
            from queuectl.store import wakeup

            wakeup.wake(self.path)

    def wake_socket(self, name: str):
        """A pool's wake-up socket (store/wakeup.py), or None where it cannot be bound
        (its workers then poll every poll-interval, as before it existed)."""
        if not self.path:
            return None
        from queuectl.errors import QueuectlError
        from queuectl.store import wakeup

        try:
            return wakeup.WakeSocket(self.path, name)
        except (OSError, QueuectlError) as err:
            import logging

            logging.getLogger("queuectl.worker").warning("no local wake-up (idle workers poll every poll-interval): %s", err)
            return None

    @staticmethod
    def like_any_case(column, pattern: str):
        """`column` LIKE `pattern` (escaped with a backslash) whatever the case of ASCII
        letters: SQLite's LIKE is so already. ilike's lower() on both sides made the
        job browser's text search 1.6 times slower over a million commands."""
        return column.like(pattern, escape="\\")

    def end_look(self, conn: Connection) -> None:
        """After reading the schema's revision under migration_lock: end that read, so
        that Alembic begins (and commits) a write transaction of its own."""
        conn.rollback()

    def listener(self, url: str, listen_url: str | None = None):
        return None

    @staticmethod
    def connections_exhausted(err: BaseException | str | None) -> bool:
        return False  # no server, no connection limit


# Every SQLite dialect of this process, so a forked child can drop their lock fds.
_OPEN_LOCKS: "weakref.WeakSet[SQLiteDialect]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for dialect in list(_OPEN_LOCKS):
        dialect._forget_inherited_lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def busy_timeout() -> float:
    """Seconds a SQLite writer waits for the lock: QUEUECTL_BUSY_TIMEOUT, default 60."""
    text = os.environ.get(BUSY_TIMEOUT_ENV, "").strip()
    if not text:
        return SQLITE_BUSY_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:  # also refuses nan
        raise ValidationError(f"{BUSY_TIMEOUT_ENV}={text!r} is not a number of seconds between 0 and 86400")
    return value


def _open_lock_file(path: str) -> int | None:
    """Open (or create) the host's lock file, private to this user. In a shared
    directory another user could plant a symlink or a file of theirs there: refused."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DatabaseError(f"{path} is a symbolic link; remove it (queuectl opens its lock file only as a regular file)") from None
        return None  # a read-only directory: busy_timeout alone serialises writers
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(fd)
        raise DatabaseError(f"{path} is not a regular file owned by this user; remove it")
    return fd


class PostgresDialect:
    # The pool's wake-up socket carries what its supervisor's LISTEN hears (worker/relay.py).
    wake_is_relayed = True
    name = "postgresql"
    supports_listen = True
    # A claim takes its queue's slot (store/queues.py) in the claiming statement, a
    # data-modifying CTE that locks the queue's row: one round trip, and no two hosts
    # take the last slot.
    slot_in_claim = True
    # Concurrent completions of one queue would queue on its tally row's lock for
    # the rest of their transactions; a worker increments one of these many rows,
    # chosen by its id (store/tallies.py), so up to this many do it at once.
    tally_shards = 8

    @staticmethod
    def insert_or_update(table):
        """INSERT ... ON CONFLICT DO UPDATE for `table` (PostgreSQL's construct)."""
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

    def add_tallies(self, conn: Connection, rows: list[tuple]) -> None:
        """Add (minute, queue, outcome, shard, count) rows to job_tallies (store/tallies.py):
        an upsert built once, its compiled form cached (a worker's completion counts in
        its one statement instead: tallies.from_returning)."""
        params = [dict(zip(("minute", "queue", "outcome", "shard", "count"), row)) for row in rows]
        conn.execute(_postgres_tally_upsert(), params[0] if len(params) == 1 else params)

    @staticmethod
    def check_url(url: URL) -> None:
        pass

    def __init__(self, url: URL):
        self.url = url
        # Set once a connection met a pooler (see configure): LISTEN through it is not
        # to be trusted (see listener).
        self.behind_pooler = False

    def missing_driver_message(self, err: ImportError) -> str:
        return f"PostgreSQL support is not installed ({err}): pip install 'queuectl[postgres]'"

    def prepare_location(self, url: URL, create_directory: bool = False) -> None:
        pass

    def engine_options(self, durable: bool) -> dict:
        connect_args: dict[str, int | str] = {"connect_timeout": 10}
        if durable:
            # pre_ping: a connection broken by a server restart is replaced, not used.
            return {"pool_pre_ping": True, "connect_args": connect_args}
        # Workers and supervisors: the same promise as synchronous=NORMAL on SQLite. A
        # server crash may forget the last outcomes (those jobs run again); enqueues,
        # made by durable connections, still wait for their fsync. No pre-ping: it
        # would cost a round trip per job, and every write of theirs already retries
        # (worker/outage.py) on a fresh connection once a broken one has failed.
        connect_args["options"] = _WORKER_OPTIONS
        return {"connect_args": connect_args}

    def configure(self, engine: Engine, *, durable: bool) -> None:
        """PostgreSQL commits are durable and its transactions need no hints; what
        changes is behind a pooler (PgBouncer), below."""
        dialect = self

        @event.listens_for(engine, "connect")
        def behind_pooler(dbapi_connection, _record):
            # A pooler gives its clients a cancel key of its own, whose "backend pid"
            # is no server process: one round trip per connection tells, whatever
            # the pooler's settings. Behind one, psycopg prepares no statement on the
            # server (by default it does at a statement's 5th run): a prepared
            # statement belongs to one server session, and in transaction mode the
            # next run lands on another ("prepared statement _pg3_0 does not exist";
            # PgBouncer 1.18, Debian's, cannot follow them). Kept on a direct
            # connection: the worker's claim-and-complete loop runs 2.3 times as fast
            # with them (docs/design.md section 19).
            with dbapi_connection.cursor() as cursor:
                server_pid = cursor.execute("SELECT pg_backend_pid()").fetchone()[0]
            dbapi_connection.rollback()
            if server_pid != dbapi_connection.info.backend_pid:
                dbapi_connection.prepare_threshold = None
                dialect.behind_pooler = True

        # A pooler may refuse the workers' startup option (PgBouncer: "unsupported
        # startup parameter: options"): they connect without it, their commits then
        # synchronous (unless the pooler's database entry sets synchronous_commit).

        @event.listens_for(engine, "do_connect")
        def connect(sa_dialect, _record, cargs, cparams):
            try:
                return sa_dialect.loaded_dbapi.connect(*cargs, **cparams)
            except sa_dialect.loaded_dbapi.OperationalError as err:
                if cparams.get("options") != _WORKER_OPTIONS or _REFUSED_OPTIONS not in str(err):
                    raise
            cparams.pop("options")  # and for every later connection of this engine
            dialect.behind_pooler = True
            return sa_dialect.loaded_dbapi.connect(*cargs, **cparams)

    @contextmanager
    def write_lock(self):
        yield  # row locks and SKIP LOCKED: writers need no queue of their own

    def close(self) -> None:
        pass

    @contextmanager
    def migration_lock(self, engine: Engine):
        """Serialise migrations among processes: a lock that the yielded connection's
        transaction holds until the caller commits (schema.upgrade) or it ends. Not a
        session lock: behind PgBouncer in transaction mode a session is a server
        connection lent for one transaction, and the unlock would reach another one
        (the lock then held for good by a pooled connection nobody uses)."""
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK})
            yield conn

    def end_look(self, conn: Connection) -> None:
        """After reading the schema's revision under migration_lock: nothing, since
        ending the transaction would release the lock (Alembic then migrates in it)."""

    @contextmanager
    def driver_transaction(self, engine: Engine):
        """Database.begin_driver's: one autocommitted statement on the pooled connection
        (a worker's only one), which goes back to the pool as it came. After any error
        its state is not known (broken, or still in autocommit): it is dropped from the
        pool, and the next use connects afresh."""
        pooled = engine.raw_connection()
        driver: Any = pooled.driver_connection
        try:
            driver.autocommit = True
            with driver.cursor() as cursor:
                yield cursor
            driver.autocommit = False
        except BaseException as err:
            pooled.invalidate(err if isinstance(err, Exception) else None)
            raise
        finally:
            pooled.close()

    @contextmanager
    def write_one(self, db):
        """A one-statement write that commits by itself: one round trip, no BEGIN and
        no COMMIT."""
        with db.translate_errors(), db.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    def complete_and_claim(self, db, job_id: str, worker_id: str, *, output: str | None, now, queues: tuple[str, ...] | None,
                           output_size: int | None = None):
        """The worker's hot path as one autocommitted statement (data-modifying CTEs):
        one round trip per job, on the driver's cursor. (owned, next job or None)."""
        from queuectl.store import dependencies, tallies, transitions

        size = transitions.size_of(output, output_size)
        params = transitions.outcome_params(job_id, worker_id, exit_code=0, output=output, output_size=size, now=now)
        params.update(tallies.cte_params(PostgresDialect, now, worker_id))
        with db.begin_driver() as driver:  # on the driver's cursor: see store/prepared.py
            row = driver.first(transitions.complete_and_claim_statement(PostgresDialect, queues), params)
        claimed = row if row.id is not None else None
        if row.owned == 1:
            return True, claimed
        # Not completed: the job has dependents (the statement's guard), or this
        # worker no longer owns it. A transaction tells which, and settles them; it
        # claims only if the statement found nothing (the job it unblocked, maybe).
        with db.begin() as conn:
            owned = transitions.complete(conn, job_id, worker_id, exit_code=0, output=output, output_size=size, now=now)
            if claimed is None and owned:
                claimed = transitions.claim_after_ending(conn, worker_id, queues, now)
            if dependencies.woke(conn):
                self.notify(conn)
        return owned, claimed

    def insert_rows(self, conn: Connection, table: str, columns: list[str], rows: list[tuple]) -> None:
        """Rows already in the driver's types, through a binary COPY in the same
        transaction: several times faster than psycopg's executemany, and binary
        spares the client the text formatting (most of a text COPY's own time)."""
        import psycopg

        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        driver = conn.connection.driver_connection
        assert driver is not None  # an open connection's (SQLAlchemy types it Optional)
        try:
            with driver.cursor() as cursor:
                types = _column_types(cursor, table)
                with cursor.copy(statement) as copy:
                    # Binary needs each column's exact type (int4 and int8 differ).
                    copy.set_types([types[name] for name in columns])
                    for row in rows:
                        copy.write_row(row)
        except psycopg.Error as err:
            # The error SQLAlchemy raises for a statement it runs (IntegrityError...),
            # which callers and Database.translate_errors expect.
            raise exc.DBAPIError.instance(statement, None, err, psycopg.Error) from err

    def prune_lock(self, conn: Connection, *, wait: bool) -> bool:
        """One pruner at a time across every host: an advisory lock that this
        transaction holds until it ends. wait=False: False at once if another holds it
        (a supervisor leaves the batch to that one); wait=True: queue behind it (`prune`)."""
        if wait:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_PRUNE_LOCK})
            return True
        return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": PG_PRUNE_LOCK}).scalar())

    @staticmethod
    def like_any_case(column, pattern: str):
        """`column` ILIKE `pattern` (escaped with a backslash): PostgreSQL's LIKE heeds case."""
        return column.ilike(pattern, escape="\\")

    def notify(self, conn: Connection) -> None:
        """Wake listening workers when the transaction commits."""
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})

    def wake_after_commit(self) -> None:
        pass  # the server delivered the NOTIFY at commit

    def wake_socket(self, name: str):
        """The pool's local wake-up socket, through which its supervisor passes on the
        notifications of its one LISTEN connection (worker/relay.py); None when
        notifications are off (QUEUECTL_LISTEN=0: the workers poll) or the socket
        cannot be bound."""
        if os.environ.get("QUEUECTL_LISTEN", "1") == "0":
            return None
        from queuectl.errors import QueuectlError
        from queuectl.store import wakeup

        try:
            # Named after the database (no password): the runtime directory may hold
            # the sockets of pools of other databases.
            return wakeup.WakeSocket(self.url.render_as_string(hide_password=True), name)
        except (OSError, QueuectlError) as err:
            import logging

            logging.getLogger("queuectl.worker").warning("no local wake-up (idle workers poll every poll-interval): %s", err)
            return None

    def listener(self, url: str, listen_url: str | None = None) -> "PostgresListener | None":
        """The connection an idle worker LISTENs on: to listen_url if given (a direct
        or session-mode URL beside a transaction-mode PgBouncer), else to url. None
        (the worker polls every poll-interval, and says so) with QUEUECTL_LISTEN=0, or
        when url met a pooler (PgBouncer in transaction mode lends a server connection
        for one transaction: a LISTEN stays on one nobody reads)."""
        log = logging.getLogger("queuectl.worker")
        if os.environ.get("QUEUECTL_LISTEN", "1") == "0":
            log.info("QUEUECTL_LISTEN=0: idle workers poll the database every poll-interval")
            return None
        if listen_url:
            return PostgresListener(listen_url)
        if self.behind_pooler:
            log.warning("the database is behind a pooler (PgBouncer) and no listen URL is given: idle workers poll"
                        " every poll-interval (give worker start --listen-db URL, or $%s, a direct or session-mode"
                        " URL to be woken at once)", LISTEN_DB_ENV)
            return None
        return PostgresListener(url)

    @staticmethod
    def connections_exhausted(err: BaseException | str | None) -> bool:
        """Whether the server (or PgBouncer) refused a connection for want of free
        ones: a condition that passes, unlike a wrong password or host. Told by its
        text: libpq gives a refused connection no SQLSTATE."""
        message = str(err)
        return any(text in message for text in _NO_FREE_CONNECTION)


@functools.cache
def _postgres_tally_upsert():
    """PostgresDialect.add_tallies' statement, built once."""
    from queuectl.store.models import TALLIES

    insert = PostgresDialect.insert_or_update(TALLIES)
    return insert.on_conflict_do_update(
        index_elements=[TALLIES.c.minute, TALLIES.c.queue, TALLIES.c.outcome, TALLIES.c.shard],
        set_={"count": TALLIES.c.count + insert.excluded.count},
    )


def _column_types(cursor, table: str) -> dict[str, int]:
    """The type OID of each column of a PostgreSQL table, from the catalogue."""
    cursor.execute(
        "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (table,),
    )
    return dict(cursor.fetchall())


class PostgresListener:
    """A dedicated autocommit connection LISTENing for enqueue notifications."""

    def __init__(self, url: str):
        from sqlalchemy.engine import make_url

        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn: psycopg.Connection | None = None
        # After a failed connection, none is tried before retry_at (backing off to
        # _LISTEN_RETRY_MAX): an idle worker's wait comes every poll-interval, and a
        # server out of connections pays for each refusal with a process of its own.
        self.retry_at = 0.0
        self.retry_delay = 0.0
        self.last_error = ""

    def _connect(self) -> "psycopg.Connection":
        import psycopg

        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
            self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self.conn

    def wait(self, timeout: float, interrupted, signal_fd: int | None = None) -> bool:
        """Return at the first notification (True), after timeout, or soon after
        interrupted(). signal_fd: the worker's signal wake-up pipe, which ends the
        wait at once; without it the wait is cut in 0.25 s slices to look at
        interrupted() (four wake-ups a second per idle worker)."""
        import psycopg

        now = time.monotonic()
        if self.conn is None and now < self.retry_at:
            # The worker polls meanwhile.
            raise (ConnectionsExhausted if PostgresDialect.connections_exhausted(self.last_error) else DatabaseError)(self.last_error)
        deadline = now + timeout
        try:
            conn = self._connect()
            self.retry_delay = 0.0
            while not interrupted():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if signal_fd is not None:
                    # Asleep until the server sends something or a signal comes;
                    # notifies() then reads what came without waiting.
                    for _ in conn.notifies(timeout=0, stop_after=1):
                        return True
                    readable, _, _ = select.select([conn.fileno(), signal_fd], [], [], left)
                    if signal_fd in readable:
                        from queuectl.store.wakeup import drain_pipe

                        drain_pipe(signal_fd)
                    continue
                # Notifications that arrive while the worker is busy are consumed by
                # the next wait and cost at most one extra (empty) claim attempt.
                for _ in conn.notifies(timeout=min(left, 0.25), stop_after=1):
                    return True
            return False
        except psycopg.Error as err:
            self.close()
            self.last_error = str(err).splitlines()[0] if str(err) else type(err).__name__
            self.retry_delay = min(max(self.retry_delay * 2, _LISTEN_RETRY_MIN), _LISTEN_RETRY_MAX)
            self.retry_at = time.monotonic() + self.retry_delay
            if PostgresDialect.connections_exhausted(err):
                raise ConnectionsExhausted(self.last_error) from None
            raise DatabaseError(self.last_error) from None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None


def class_for(url: URL) -> type["SQLiteDialect | PostgresDialect"]:
    backend = url.get_backend_name()
    if backend == "sqlite":
        return SQLiteDialect
    if backend in ("postgresql", "postgres"):
        return PostgresDialect
    raise ValidationError(f"unsupported database {backend!r} (use a SQLite path or a postgresql+psycopg:// URL)")


def for_url(url: URL) -> "SQLiteDialect | PostgresDialect":
    return class_for(url)(url)
