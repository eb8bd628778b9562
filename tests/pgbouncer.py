"""A real PgBouncer in transaction pooling mode in front of the test PostgreSQL
(QUEUECTL_TEST_PG_URL), for the whole run: tests reach any database of that server
through it with `pgbouncer.url(database_url)`.

Two server connections per database and user (default_pool_size = 2): a client's
transactions take turns on them, so whatever queuectl kept in a session (a prepared
statement, a session lock, a LISTEN) is seen to break. Started in the foreground
(not daemonized) from Debian's /usr/sbin/pgbouncer, as the `postgres` user when the
suite runs as root (PgBouncer refuses to run as root); its ini, auth file and log live
in a directory of its own under /tmp. Tests skip when PgBouncer or PostgreSQL is missing.

Import the fixture into a test module with `from pgbouncer import pgbouncer  # noqa: F401`.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from pg_server import free_port

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
RUN_AS = "postgres"
# Users the auth file lets in (auth_type trust still needs them listed).
USERS = ("postgres",)
TIMEOUT = 30.0


class PgBouncer:
    def __init__(self, server_url: str):
        self.server = sa.engine.make_url(server_url)
        self.base = Path(tempfile.mkdtemp(prefix="queuectl-pgbouncer-", dir="/tmp"))
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def url(self, database_url: str) -> str:
        """database_url (on the test server) as reached through PgBouncer."""
        return sa.engine.make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def log(self) -> str:
        path = self.base / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_config(self) -> Path:
        ini = self.base / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={self.server.host or '127.0.0.1'} port={self.server.port or 5432}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.base / 'users.txt'}\n"
            "pool_mode = transaction\n"
            "default_pool_size = 2\n"
            "max_client_conn = 200\n"
            "logfile =\n"
            "pidfile =\n"
        )
        (self.base / "users.txt").write_text("".join(f'"{user}" ""\n' for user in USERS))
        for path in (ini, self.base / "users.txt"):
            path.chmod(0o644)
        self.base.chmod(0o755)
        return ini

    def start(self) -> None:
        kwargs = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        for attempt in range(5):  # the free port may be taken before PgBouncer binds it
            self.port = free_port()
            ini = self._write_config()
            with open(self.base / "pgbouncer.log", "a") as log:
                self.proc = subprocess.Popen([BINARY, str(ini)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, **kwargs)
            if self._wait_ready():
                return
            self.stop()
            if attempt == 4:
                raise RuntimeError(f"PgBouncer did not start:\n{self.log()}")

    def _wait_ready(self) -> bool:
        """Until a query answers through it (True), or it exited (False)."""
        import psycopg

        conninfo = f"host=127.0.0.1 port={self.port} dbname={self.server.database} user={self.server.username or 'postgres'}"
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with psycopg.connect(conninfo, connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                time.sleep(0.05)
        raise RuntimeError(f"PgBouncer answered no query within {TIMEOUT}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def why_unavailable(server_url: str | None = None) -> str | None:
    """Why no PgBouncer can be started in front of server_url (default: the test
    server, QUEUECTL_TEST_PG_URL); None if it can."""
    if not (server_url or os.environ.get("QUEUECTL_TEST_PG_URL")):
        return "QUEUECTL_TEST_PG_URL is not set"
    if not os.access(BINARY, os.X_OK):
        return f"no PgBouncer ({BINARY}; Debian package pgbouncer)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root, and there is no {RUN_AS!r} user to run PgBouncer as"
    return None


@pytest.fixture(scope="session")
def pgbouncer():
    """A PgBouncer (transaction pooling) in front of the test server, for the whole run."""
    reason = why_unavailable()
    if reason:
        pytest.skip(reason)
    bouncer = PgBouncer(os.environ["QUEUECTL_TEST_PG_URL"])
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.remove()
