"""A private, throwaway PostgreSQL server for tests that do something drastic to their
server (restart it, exhaust its connections, put a PgBouncer in front of it). Doing that
to the machine's shared server breaks everyone else using it at that moment: a second
copy of the suite run side by side got "FATAL: the database system is shutting down".

The server runs from the machine's binaries (/usr/lib/postgresql/<version>/bin), as the
`postgres` user when the suite runs as root (PostgreSQL refuses to run as root), listens
on 127.0.0.1 on a port the OS picked, keeps its socket in its own directory and trusts
every local connection. That directory lives under /tmp, not tmp_path: pytest's base
directory (/tmp/pytest-of-root) is 0700, so `postgres` could not reach inside it, and a
socket path under it could exceed the 107 bytes a unix socket address allows.

Import the fixture into a test module with `from pg_server import private_pg  # noqa: F401`;
a test needing other settings starts its own with `with private_postgres(max_connections=5)`.
"""

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

SERVER_USER = "postgres"
DIR_PREFIX = "queuectl-pg-"
# Generous: initdb and a start take seconds alone, much longer on a loaded 2-core machine.
TIMEOUT = 120

# A server for tests, not for data: nothing needs to survive a crash of the machine.
DEFAULT_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
}


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory holding initdb and pg_ctl."""

    def version(path: Path) -> tuple:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    found = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "initdb").exists() and (d / "pg_ctl").exists()]
    if found:
        return max(found, key=version)
    initdb = shutil.which("initdb")  # distributions that put them on PATH
    if initdb and (Path(initdb).parent / "pg_ctl").exists():
        return Path(initdb).parent
    return None


def why_unavailable() -> str | None:
    """None if a private server can be started here, else the reason it cannot."""
    if bin_dir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or on PATH"
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            return "running as root, and runuser is missing to start PostgreSQL as another user"
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root, and there is no {SERVER_USER!r} user to run PostgreSQL as"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgServer:
    """One private PostgreSQL server: start(), restart(), stop(); url() to connect."""

    host = "127.0.0.1"

    def __init__(self, **settings):
        self.settings = {**DEFAULT_SETTINGS, **settings}
        self.bin = bin_dir()
        self.as_root = os.geteuid() == 0
        self.base: Path | None = None
        self.port: int | None = None

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SERVER_USER}@{self.host}:{self.port}/{database}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _run(self, tool: str, *args, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), *map(str, args)]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        # A clean environment: PG* variables or a QUEUECTL_DB of the caller must not
        # reach the server (a test's cleanup kills processes whose QUEUECTL_DB is its own).
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        # Output to a file, not a pipe: the postmaster pg_ctl starts inherits it, and
        # reading a pipe until EOF would wait for the server to exit.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(command, cwd=self.base, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT + 60)
            out.seek(0)
            result.stdout = out.read()
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(map(str, args))} exited {result.returncode}:\n"
                               f"{result.stdout}\n--- server log ---\n{self.log()}")
        return result

    def _give(self, path: Path) -> None:
        """Hand a file we created to the server's user."""
        if self.as_root:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(path, user.pw_uid, user.pw_gid)

    def _write_settings(self) -> None:
        lines = [f"listen_addresses = '{self.host}'", f"port = {self.port}", f"unix_socket_directories = '{self.base}'"]
        lines += [f"{name} = '{value}'" for name, value in self.settings.items()]
        conf = self.data / "private.conf"
        conf.write_text("\n".join(lines) + "\n")
        self._give(conf)

    def start(self) -> None:
        sweep_orphans()
        # The pid in the name lets a later run remove what a killed run left behind.
        self.base = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir="/tmp"))
        self._give(self.base)
        self._run("initdb", "-D", self.data, "-U", SERVER_USER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\ninclude 'private.conf'\n")
        # The OS's free port can be taken by someone else before the server binds it
        # (another copy of the suite starting its own): then try another one.
        for attempt in range(5):
            self.port = free_port()
            self._write_settings()
            seen = len(self.log())
            started = self._run("pg_ctl", "start", "-D", self.data, "-l", self.log_path, "-w", "-t", TIMEOUT, check=False)
            if started.returncode == 0:
                return
            if "could not bind" not in self.log()[seen:] or attempt == 4:
                raise RuntimeError(f"pg_ctl start exited {started.returncode}:\n{started.stdout}\n"
                                   f"--- server log ---\n{self.log()}")

    def restart(self) -> None:
        """A fast restart, as an administrator would: sessions are cut, the server is back
        on the same port when this returns."""
        self._run("pg_ctl", "restart", "-D", self.data, "-l", self.log_path, "-m", "fast", "-w", "-t", TIMEOUT)

    def create_database(self, name: str) -> str:
        """Create a database on this server; returns its URL."""
        admin = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            admin.dispose()
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once and remove its directory; never raises. If
        `pg_ctl stop -m immediate` leaves it running, SIGKILL its postmaster (its
        backends notice their postmaster died and exit)."""
        if self.base is None:
            return
        try:
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():
                with contextlib.suppress(Exception):
                    self._run("pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w", "-t", 60, check=False)
                with contextlib.suppress(Exception):
                    postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
                    # A stale pid file's pid may be anyone's now, even a backend of the
                    # shared server: only a postmaster of this data directory is ours.
                    if str(self.data) in postmaster.cmdline():
                        postmaster.kill()
                        postmaster.wait(timeout=10)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None


def sweep_orphans() -> None:
    """Stop the servers and remove the directories of runs that were killed (their pid is
    gone) before their teardown could."""
    for base in Path("/tmp").glob(f"{DIR_PREFIX}*"):
        owner = base.name[len(DIR_PREFIX):].split("-")[0]
        if not owner.isdigit() or psutil.pid_exists(int(owner)):
            continue
        orphan = PgServer()
        orphan.base = base
        with contextlib.suppress(Exception):
            orphan.stop()


@contextlib.contextmanager
def private_postgres(**settings):
    """A started private server with these postgresql.conf settings; stopped and removed
    on exit, whatever happened (also when it failed to start)."""
    reason = why_unavailable()
    if reason:
        pytest.skip(reason)
    server = PgServer(**settings)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_pg():
    """A private PostgreSQL server for this test alone, which it may restart or break."""
    with private_postgres() as server:
        yield server
