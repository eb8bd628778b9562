"""Shared fixtures: every test that takes `db_url` runs on SQLite, and on PostgreSQL
too when QUEUECTL_TEST_PG_URL is set (each test in a fresh database cloned from a
migrated template; all dropped at the end of the run)."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("QUEUECTL_TEST_PG_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def pytest_report_header(config):
    return f"queuectl backends: {', '.join(BACKENDS)}" + ("" if PG_URL else " (set QUEUECTL_TEST_PG_URL for PostgreSQL)")


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"queuectl backends tested: {', '.join(BACKENDS)}")


@pytest.fixture(scope="session", autouse=True)
def runtime_dir(tmp_path_factory):
    """Workers publish their jobs' process groups in $XDG_RUNTIME_DIR/queuectl. One
    private directory for the whole run (every process a test starts inherits it):
    the files of the trees tests SIGKILL stay out of the user's runtime directory."""
    path = tmp_path_factory.mktemp("runtime")
    path.chmod(0o700)
    previous = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = previous


class PgDatabases:
    """Creates a migrated template once per run, then one clone per test."""

    def __init__(self, admin_url: str):
        self.admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        self.prefix = f"qctl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template = f"{self.prefix}_tmpl"
        self.created: list[str] = []
        self.base = sa.engine.make_url(admin_url)
        self._drop_orphans()

    def _drop_orphans(self) -> None:
        """Drop databases left by test runs that were killed (their pid is gone)."""
        with self.admin.connect() as conn:
            names = conn.execute(sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": "qctl\\_%"}).scalars().all()
            for name in names:
                parts = name.split("_")
                if len(parts) > 2 and parts[1].isdigit() and not psutil.pid_exists(int(parts[1])):
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url(self, name: str) -> str:
        return self.base.set(database=name).render_as_string(hide_password=False)

    def _create(self, name: str, template: str | None = None) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.created.append(name)

    def new(self) -> str:
        if self.template not in self.created:
            self._create(self.template)
            from queuectl.store import schema
            from queuectl.store.database import Database

            db = Database(self.url(self.template))
            schema.ensure(db)
            db.dispose()
        name = f"{self.prefix}_{len(self.created)}"
        self._create(name, self.template)
        return self.url(name)

    def empty(self) -> str:
        """A new database with no schema at all (not migrated)."""
        name = f"{self.prefix}_{len(self.created)}"
        self._create(name)
        return self.url(name)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in reversed(self.created):
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_databases():
    if not PG_URL:
        pytest.skip("QUEUECTL_TEST_PG_URL is not set")
    dbs = PgDatabases(PG_URL)
    yield dbs
    dbs.drop_all()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """A fresh, empty queuectl database on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "queue.db")
    return request.getfixturevalue("pg_databases").new()


@pytest.fixture(params=BACKENDS)
def empty_db_url(request, tmp_path):
    """A fresh database on each backend that no queuectl has opened yet (no schema)."""
    if request.param == "sqlite":
        return str(tmp_path / "fresh.db")
    return request.getfixturevalue("pg_databases").empty()


@pytest.fixture
def sqlite_url(tmp_path):
    return str(tmp_path / "queue.db")


@pytest.fixture
def db(db_url):
    """The library API's Database for db_url, schema migrated."""
    from queuectl.store import open_database

    database = open_database(db_url)
    yield database
    database.dispose()


def env_for(db_url: str, **extra) -> dict:
    env = dict(os.environ, QUEUECTL_DB=db_url, PYTHONPATH=str(REPO), **extra)
    env.pop("QUEUECTL_HOSTNAME", None)
    env.update(extra)
    return env


class Cli:
    """Runs the real `python -m queuectl` as a separate process."""

    def __init__(self, db_url: str, cwd: Path):
        self.db_url = db_url
        self.cwd = cwd

    def __call__(self, *args, input=None, timeout=60, env=None, cwd=None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "queuectl", *map(str, args)],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env or env_for(self.db_url),
            cwd=cwd or self.cwd,
        )

    def ok(self, *args, **kw) -> subprocess.CompletedProcess:
        result = self(*args, **kw)
        assert result.returncode == 0, f"queuectl {' '.join(map(str, args))} exited {result.returncode}: {result.stderr}"
        return result

    def json(self, *args, **kw):
        if args[:1] == ("enqueue",):  # enqueue's options go before the command (#12)
            return json.loads(self.ok("enqueue", "--json", *args[1:], **kw).stdout)
        return json.loads(self.ok(*args, "--json", **kw).stdout)

    def spawn(self, *args, **kw) -> subprocess.Popen:
        """Start a long-running command (a supervisor) in the background."""
        return subprocess.Popen(
            [sys.executable, "-m", "queuectl", *map(str, args)],
            stdout=kw.pop("stdout", subprocess.PIPE),
            stderr=kw.pop("stderr", subprocess.STDOUT),
            text=True,
            env=kw.pop("env", None) or env_for(self.db_url),
            cwd=kw.pop("cwd", None) or self.cwd,
            **kw,
        )


@pytest.fixture
def cli(db_url, tmp_path):
    return Cli(db_url, tmp_path)


@pytest.fixture
def scli(sqlite_url, tmp_path):
    """The CLI on SQLite only (for input refused before the database is read)."""
    return Cli(sqlite_url, tmp_path)


@pytest.fixture
def sqlite_db(sqlite_url):
    """The library's Database on SQLite only."""
    from queuectl.store import open_database

    database = open_database(sqlite_url)
    yield database
    database.dispose()


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    """Poll predicate() until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
