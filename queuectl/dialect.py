"""Every difference between SQLite and PostgreSQL lives here, and only here."""

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event, exc, text
from sqlalchemy.engine import URL, Connection, Engine

from queuectl.errors import DatabaseError, ValidationError

# Long enough that no command fails with "database is locked" under load: writers
# queue behind each other instead of giving up (transactions here are short).
SQLITE_BUSY_TIMEOUT_S = 60
NOTIFY_CHANNEL = "queuectl_jobs"
# pg_advisory_lock key for migrations: an arbitrary constant ("qctl" in ASCII).
PG_MIGRATION_LOCK = 0x7163746C


class SQLiteDialect:
    name = "sqlite"
    supports_listen = False
    dml_in_cte = False  # no UPDATE inside WITH: the hot path takes two statements
    autocommit_writes = False  # a write must begin with BEGIN IMMEDIATE (see configure)

    def __init__(self, url: URL):
        self.path = url.database if url.database and url.database != ":memory:" else None
        self._fd: int | None = None
        self._fd_pid = 0

    def missing_driver_message(self, err: ImportError) -> str:
        return f"SQLite support is missing from this Python: {err}"

    def prepare_location(self, url: URL) -> None:
        """Create the database directory (0700) and file (0600) private to the user."""
        if not self.path:
            return
        path = Path(self.path)
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        if not path.exists():
            try:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError:
                pass  # sqlite reports the real problem, with the path, on connect

    def engine_options(self, durable: bool) -> dict:
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}

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
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
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
        busy workers waste most of their time asleep; flock() wakes the next
        writer the moment the lock is free. Writers that do not take it (the
        sqlite3 shell, `alembic`) are still serialised by busy_timeout.
        """
        fd = self._lock_fd()
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock_fd(self) -> int | None:
        if not self.path:
            return None
        if self._fd is None or self._fd_pid != os.getpid():  # never share an fd's lock across fork
            try:
                self._fd = os.open(self.path + ".lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            except OSError:
                return None  # a read-only directory: busy_timeout alone serialises writers
            self._fd_pid = os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._fd_pid == os.getpid():
            os.close(self._fd)
        self._fd = None

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
            mode = conn.connection.driver_connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise DatabaseError(f"SQLite refused WAL mode for {self.path} (got {mode!r})")
            yield conn

    def insert_rows(self, conn: Connection, table: str, columns: list[str], rows: list[tuple]) -> None:
        """Rows already in the driver's types, through its executemany: SQLAlchemy's
        per-row parameter handling would cost more than the insert itself."""
        marks = ", ".join("?" * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def notify(self, conn: Connection) -> None:
        """No server to notify; idle workers poll (see worker/waiter.py)."""

    def listener(self, url: str):
        return None


class PostgresDialect:
    name = "postgresql"
    supports_listen = True
    dml_in_cte = True  # UPDATE ... RETURNING inside WITH: one statement per job
    autocommit_writes = True  # a one-statement write needs no BEGIN/COMMIT round trips

    def __init__(self, url: URL):
        self.url = url

    def missing_driver_message(self, err: ImportError) -> str:
        return f"PostgreSQL support is not installed ({err}): pip install 'queuectl[postgres]'"

    def prepare_location(self, url: URL) -> None:
        pass

    def engine_options(self, durable: bool) -> dict:
        connect_args = {"connect_timeout": 10}
        if durable:
            # pre_ping: a connection broken by a server restart is replaced, not used.
            return {"pool_pre_ping": True, "connect_args": connect_args}
        # Workers and supervisors: the same promise as synchronous=NORMAL on SQLite. A
        # server crash may forget the last outcomes (those jobs run again); enqueues,
        # made by durable connections, still wait for their fsync. No pre-ping: it
        # would cost a round trip per job, and every write of theirs already retries
        # (retry_db) on a fresh connection once a broken one has failed.
        connect_args["options"] = "-c synchronous_commit=off"
        return {"connect_args": connect_args}

    def configure(self, engine: Engine, *, durable: bool) -> None:
        pass  # PostgreSQL commits are durable and its transactions need no hints.

    @contextmanager
    def write_lock(self):
        yield  # row locks and SKIP LOCKED: writers need no queue of their own

    def close(self) -> None:
        pass

    @contextmanager
    def migration_lock(self, engine: Engine):
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_MIGRATION_LOCK})
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_MIGRATION_LOCK})
                conn.commit()

    def insert_rows(self, conn: Connection, table: str, columns: list[str], rows: list[tuple]) -> None:
        """Rows already in the driver's types, through a binary COPY in the same
        transaction: several times faster than psycopg's executemany, and binary
        spares the client the text formatting (most of a text COPY's own time)."""
        import psycopg

        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        try:
            with conn.connection.driver_connection.cursor() as cursor:
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

    def notify(self, conn: Connection) -> None:
        """Wake listening workers when the transaction commits."""
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})

    def listener(self, url: str) -> "PostgresListener | None":
        # QUEUECTL_LISTEN=0 turns notifications off (polling only): for benchmarks,
        # and for poolers such as PgBouncer in transaction mode that cannot LISTEN.
        if os.environ.get("QUEUECTL_LISTEN", "1") == "0":
            return None
        return PostgresListener(url)


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
        self.conn = None

    def _connect(self):
        import psycopg

        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
            self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self.conn

    def wait(self, timeout: float, interrupted) -> bool:
        """Return at the first notification (True), after timeout, or soon after interrupted()."""
        import psycopg

        deadline = time.monotonic() + timeout
        try:
            conn = self._connect()
            while not interrupted():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                # Short slices, so a stop signal is noticed promptly. Notifications
                # that arrive while the worker is busy are consumed by the next wait
                # and cost at most one extra (empty) claim attempt.
                for _ in conn.notifies(timeout=min(left, 0.25), stop_after=1):
                    return True
            return False
        except psycopg.Error as err:
            self.close()
            raise DatabaseError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None


def for_url(url: URL):
    backend = url.get_backend_name()
    if backend == "sqlite":
        return SQLiteDialect(url)
    if backend in ("postgresql", "postgres"):
        return PostgresDialect(url)
    raise ValidationError(f"unsupported database {backend!r} (use a SQLite path or a postgresql+psycopg:// URL)")
