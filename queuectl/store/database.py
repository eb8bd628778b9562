"""Where the database lives, and opening it ready for use (schema migrated)."""

import os
import re
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine, make_url

from queuectl.errors import ConnectionsExhausted, DatabaseError, StatementFailed, ValidationError
from queuectl.store import dialect, tallies
from queuectl.store.prepared import DriverTransaction, Prepared

ENV_VAR = "QUEUECTL_DB"


def default_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "queuectl" / "queue.db"


def worker_log_path(url: str) -> str:
    """Where `worker start --detach` logs without --log: beside a SQLite file, else
    beside the default database, one file per server and database
    (worker-HOST[_PORT]-DBNAME.log: never the user or a password)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return parsed.database + ".worker.log"
    host = parsed.host or "local"  # no host: libpq's Unix socket (or host= in the query)
    if parsed.port:
        host += f"_{parsed.port}"
    name = f"worker-{_file_safe(host)}-{_file_safe(parsed.database or parsed.username or 'default')}.log"
    return str(default_path().parent / name)


def _file_safe(text: str) -> str:
    """text with anything but letters, digits, '.', '_' and '-' as '_' (no '/', no
    leading dot: the name stays one plain file name)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".") or "_"


def resolve_url(db: str | None = None) -> str:
    """--db > $QUEUECTL_DB > the XDG default. A plain path means a SQLite file.
    An empty $QUEUECTL_DB counts as unset; an empty --db is a mistake, not a default."""
    if db is not None and not db.strip():
        raise ValidationError("--db is empty: give a SQLite file path or a database URL")
    value = db or os.environ.get(ENV_VAR) or str(default_path())
    if "://" in value:
        return value
    return "sqlite:///" + os.path.abspath(os.path.expanduser(value))


# Connection parameters that are secrets, which libpq also takes from the query string:
# those it marks as password-like ("*": password, sslpassword, oauth_client_secret) and
# the SCRAM keys, which authenticate as well as the password they derive from.
SECRET_PARAMETERS = frozenset({"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"})
_SECRET_QUERY = re.compile(rf"([?&;](?:{'|'.join(sorted(SECRET_PARAMETERS))})=)[^&;#]*", re.IGNORECASE)


def safe_url(url: str) -> str:
    """The URL with any password and secret query parameter masked, for logs, titles and errors."""
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError):
        return _mask_unparsable(url)
    # Rendered from the parsed URL, the keys are decoded (?ssl%70assword= is sslpassword).
    return _SECRET_QUERY.sub(r"\1***", parsed.render_as_string(hide_password=True))


def _mask_unparsable(url: str) -> str:
    """An unparsable URL cannot tell a password from a host or a port: mask everything
    up to the last '@' (a password may hold '/' or '@'), else the whole authority; and
    the value of every secret query parameter, its key spelled as it may be."""
    head, sep, rest = url.partition("//")
    if not sep:
        return url
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    else:
        rest = re.sub(r"^[^/?#]*", "***", rest)
    return head + "//" + _SECRET_QUERY.sub(r"\1***", _unquote_keys(rest))


def _unquote_keys(text: str) -> str:
    """Percent-decode the query's keys, so that an encoded secret key is recognised."""
    path, sep, query = text.partition("?")
    if not sep:
        return text
    return path + sep + re.sub(r"(^|[&;])([^=&;#]*)", lambda m: m.group(1) + unquote(m.group(2)), query)


class Database:
    """An engine plus the dialect helpers; create one per process (never share across fork)."""

    def __init__(self, url: str, *, durable: bool = True, one_connection: bool = False):
        """one_connection: the process's threads share one connection, each waiting
        for the others' transaction (a worker and its heartbeat thread), so that it
        never holds more than one server connection."""
        self.url = url
        self.display_url = safe_url(url)
        try:
            parsed = make_url(url)
        except (exc.ArgumentError, ValueError):
            raise ValidationError(f"invalid database URL {self.display_url!r}") from None
        self.dialect = dialect.for_url(parsed)
        # Only the default location's directory is made (the XDG default: a first run).
        default = parsed.get_backend_name() == "sqlite" and parsed.database == os.path.abspath(default_path())
        self.dialect.prepare_location(parsed, create_directory=default)
        try:
            busy = dialect.busy_timeout()  # validated here for every backend: a bad value fails at once
            options = self.dialect.engine_options(durable)
            if one_connection:
                options.update(pool_size=1, max_overflow=0, pool_timeout=busy)
            self.engine: Engine = create_engine(parsed, **options)
        except ImportError as err:
            raise DatabaseError(self.dialect.missing_driver_message(err)) from None
        except exc.ArgumentError as err:
            raise DatabaseError(f"cannot use database {self.display_url}: {err}") from None
        self.dialect.configure(self.engine, durable=durable)
        # Every connection carries the dialect's helpers, for the statements that get
        # only a connection (store/tallies.py).
        helpers = self.dialect

        @event.listens_for(self.engine, "connect")
        def carry_dialect(_dbapi_connection, record) -> None:
            record.info[tallies.DIALECT_KEY] = helpers

        self._prepared: dict[int, Prepared] = {}

    @contextmanager
    def begin(self):
        """A write transaction (on SQLite: BEGIN IMMEDIATE, so it never deadlocks on upgrade)."""
        with self.translate_errors():
            with self.dialect.write_lock(), self.engine.begin() as conn:
                yield conn
                # Not reached after an error: a connection the error invalidated
                # refuses even this look, and would hide the error. A mark left on a
                # connection that lives on costs one needless wake-up later.
                wake = conn.info.pop(dialect.WAKE_AFTER_COMMIT, False)
            # Committed, and the write lock is released for the workers it wakes.
            if wake:
                self.dialect.wake_after_commit()

    @contextmanager
    def begin_driver(self):
        """A write transaction on the driver's own connection, for the worker's hot path
        (store/prepared.py), opened and ended by the dialect (SQLite: BEGIN IMMEDIATE
        under the write lock; PostgreSQL: one autocommitted statement); its errors are
        translated as begin()'s are."""
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        with self.translate_errors():
            try:
                with self.dialect.driver_transaction(self.engine) as cursor:
                    yield DriverTransaction(cursor, self.prepare)
            except dbapi_error as err:
                raise exc.DBAPIError.instance(None, None, err, dbapi_error, dialect=self.engine.dialect) from err

    def prepare(self, statement) -> Prepared:
        """`statement` compiled for this database, once per process (statements on the
        hot path are built once, so their identity names them)."""
        prepared = self._prepared.get(id(statement))
        if prepared is None:
            prepared = self._prepared[id(statement)] = Prepared(statement, self.engine.dialect)
        return prepared

    def write_one(self):
        """For a write that is a single statement: on PostgreSQL it commits by itself
        (one round trip), elsewhere an ordinary write transaction (the dialect's)."""
        return self.dialect.write_one(self)

    @contextmanager
    def read(self):
        """A read-only transaction that never waits for writers."""
        with self.translate_errors(), self.engine.connect() as conn:
            conn = conn.execution_options(queuectl_read_only=True)
            with conn.begin():
                yield conn

    @contextmanager
    def translate_errors(self):
        try:
            yield
        except exc.TimeoutError as err:  # one_connection: another thread kept it that long
            raise DatabaseError(f"database {self.display_url}: no free connection ({_first_line(err)})") from err
        except exc.DBAPIError as err:
            # OperationalError: unreachable, locked, read-only, disk full...; a plain
            # DatabaseError: "file is not a database" and other corruption; a
            # ProgrammingError with no statement: the driver refused the URL's
            # parameters (psycopg: 'invalid connection option "SSLPassword"').
            refused = isinstance(err, exc.ProgrammingError) and err.statement is None
            if err.connection_invalidated or isinstance(err, exc.OperationalError) or type(err) is exc.DatabaseError or refused:
                if self.dialect.connections_exhausted(err.orig):
                    raise ConnectionsExhausted(f"database {self.display_url}: no free connection on the server"
                                               f" ({_server_says(err.orig)})") from err
                raise DatabaseError(f"database {self.display_url}: {_first_line(err.orig)}") from err
            # Anything else is the statement's own fault. SQLAlchemy's text of it holds
            # the whole statement and its parameters: only the driver's first line.
            raise StatementFailed(f"unexpected database error: {_first_line(err.orig)}") from err

    def dispose(self) -> None:
        self.engine.dispose()
        self.dialect.close()


def _server_says(err: BaseException | None) -> str:
    """The server's own words in libpq's "connection to server at ... failed: FATAL:  ..."."""
    return " ".join(_first_line(err).rsplit("FATAL:", 1)[-1].split())


def _first_line(err: BaseException | None) -> str:
    return str(err).strip().splitlines()[0] if err and str(err).strip() else type(err).__name__


def listen_url() -> str | None:
    """$QUEUECTL_LISTEN_DB (`worker start --listen-db` sets it for its pool): where idle
    PostgreSQL workers LISTEN when the queue's URL goes through a transaction-mode
    pooler; None (unset or empty): the queue's own URL."""
    return os.environ.get(dialect.LISTEN_DB_ENV, "").strip() or None


def usable_url(db: str | None = None) -> str:
    """The database URL from --db / $QUEUECTL_DB / the default, refused (exit 2) if no
    command could use it: unparsable, an unknown backend, an in-memory SQLite one."""
    url = resolve_url(db)
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError):  # ValueError: a port that is not a number, a stray '['
        raise ValidationError(f"invalid database URL {safe_url(url)!r}") from None
    dialect.class_for(parsed).check_url(parsed)
    return url

