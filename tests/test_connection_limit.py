"""At the server's connection limit (docs/design.md section 19): a command fails with
one line and exit 1, writing nothing; a pool waits, logging the condition a bounded
number of times, and recovers by itself once connections free up, losing no job and
running none twice.

Each test has a database of its own with a small CONNECTION LIMIT, owned by a role of
its own that is not a superuser (superusers are exempt from the limit); jobs are
enqueued during the outage as the superuser."""

import os
import signal
import time

import psutil
import pytest
import sqlalchemy as sa

from conftest import Cli, wait_until
from queuectl.store import Store
from support import error_line
from worker_support import Supervisors

psycopg = pytest.importorskip("psycopg")

# The line every process logs when the server refuses it for want of connections.
CONDITION = "no free connection on the server"


class Limited:
    """A database with a CONNECTION LIMIT, reached as a role that it binds."""

    def __init__(self, pg_databases, name: str, role: str):
        self.dbs, self.name, self.role = pg_databases, name, role
        self.url = pg_databases.base.set(database=name, username=role).render_as_string(hide_password=False)
        self.admin_url = pg_databases.url(name)  # the superuser's: exempt from the limit
        self.held: list[psycopg.Connection] = []

    def conninfo(self, url: str | None = None) -> str:
        return sa.engine.make_url(url or self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def set_limit(self, limit: int) -> None:
        with self.dbs.admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{self.name}" CONNECTION LIMIT {limit}')

    def hold(self) -> bool:
        """One more connection held open as the role; False if the server refused it."""
        try:
            self.held.append(psycopg.connect(self.conninfo(), autocommit=True, connect_timeout=10))
            return True
        except psycopg.OperationalError as err:
            assert "too many connections" in str(err)
            return False

    def fill(self) -> None:
        """Hold every connection the limit allows."""
        while self.hold():
            pass

    def release(self) -> None:
        while self.held:
            self.held.pop().close()

    def others(self) -> list[int]:
        """The role's server processes on this database that are not held here."""
        held = [conn.info.backend_pid for conn in self.held]
        with psycopg.connect(self.conninfo(self.admin_url), autocommit=True) as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND usename = %s AND NOT pid = ANY(%s)",
                                (self.name, self.role, held)).fetchall()
        return [pid for (pid,) in rows]

    def cut_off(self) -> None:
        """Take every connection the limit allows away from the pool: its sessions are
        ended and their slots held here, until the pool holds none."""
        def taken() -> bool:
            pids = self.others()
            if pids:
                with psycopg.connect(self.conninfo(self.admin_url), autocommit=True) as conn:
                    conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
            self.fill()
            return not pids and not self.others()

        wait_until(taken, timeout=60, message="every connection of the limit held by the test")


@pytest.fixture
def limited(pg_databases):
    role = f"qctl_lim_{os.getpid()}_{len(pg_databases.created)}"
    name = f"{pg_databases.prefix}_{len(pg_databases.created)}"
    with pg_databases.admin.connect() as conn:
        for (old,) in conn.execute(sa.text("SELECT rolname FROM pg_roles WHERE rolname LIKE :p"), {"p": "qctl\\_lim\\_%"}).all():
            owner = old.split("_")[2]
            if owner.isdigit() and not psutil.pid_exists(int(owner)):
                conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{old}"')  # a killed run's (its databases are gone)
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" OWNER "{role}"')
    pg_databases.created.append(name)
    db = Limited(pg_databases, name, role)
    Store.open(db.url).close()  # migrated as the role: it owns the tables
    try:
        yield db
    finally:
        db.release()
        with pg_databases.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')


def _one_line(result) -> str:
    return error_line(result, 1)


def test_a_command_at_the_limit_fails_with_one_line_and_writes_nothing(limited, tmp_path):
    limited.set_limit(2)
    limited.fill()
    assert len(limited.held) == 2
    cli = Cli(limited.url, tmp_path)
    line = _one_line(cli("enqueue", "echo hello"))
    assert CONDITION in line and f'too many connections for database "{limited.name}"' in line
    assert CONDITION in _one_line(cli("status"))
    assert CONDITION in _one_line(cli("worker", "start"))  # a supervisor that cannot start says so
    limited.release()
    assert cli.json("list") == []


def _condition_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if CONDITION in line or "too many connections" in line]


def _outage_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "WARNING" in line]


def test_a_pool_at_the_limit_waits_quietly_and_recovers_losing_nothing(limited, tmp_path):
    cli = Cli(limited.url, tmp_path)
    admin = Cli(limited.admin_url, tmp_path)
    limited.set_limit(8)  # the pool's 5 (a supervisor, 2 workers and their LISTEN) and a CLI's
    before = [cli.json("enqueue", f"echo before {n}")["id"] for n in range(4)]
    sups = Supervisors(cli, limited.url, tmp_path)
    probe = Store.open(limited.admin_url)
    try:
        sup = sups.start("-c", "2")
        wait_until(lambda: all(probe.job(job_id)["state"] == "completed" for job_id in before), timeout=60, message="the first jobs")
        # A job that is running when the pool loses its connections: its outcome waits.
        running = cli.json("enqueue", "sleep 3")["id"]
        wait_until(lambda: probe.job(running)["state"] == "running", timeout=30, message="the sleep job to start")
        limited.cut_off()
        outage_started = time.monotonic()
        during = [admin.json("enqueue", f"echo during {n}")["id"] for n in range(4)]
        wait_until(lambda: _condition_lines(sup.log()), timeout=30, message="the pool to meet the limit")
        # Held long enough for every process to retry many times (workers retry a claim
        # within 5 s, a heartbeat every second, a LISTEN connection every poll-interval).
        while time.monotonic() < outage_started + 6:
            time.sleep(0.1)
        assert all(probe.job(job_id)["state"] == "pending" for job_id in during)
        limited.release()
        everything = [*before, running, *during]
        wait_until(lambda: all(probe.job(job_id)["state"] == "completed" for job_id in everything), timeout=60,
                   message="every job, once connections are free")
        runs = {job_id: len(probe.history(job_id)) for job_id in everything}
        assert runs == dict.fromkeys(everything, 1)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    finally:
        probe.close()
        sups.cleanup()
    log = sup.log()
    # At most one line a minute per process and condition (the database, a worker's
    # LISTEN) and kind of failure (the connection cut, then refused): the supervisor's
    # 2, each worker's 4. Before: a line at every retry, a worker's LISTEN every 50 ms.
    assert 1 <= len(_outage_lines(log)) <= 10, "\n".join(_outage_lines(log))
    assert "database available again" in log
    assert "Traceback" not in log


def test_workers_that_cannot_connect_at_start_wait_instead_of_being_replaced(limited, tmp_path):
    cli = Cli(limited.url, tmp_path)
    limited.set_limit(1)  # the supervisor's own connection, and none for its workers
    sups = Supervisors(cli, limited.url, tmp_path)
    try:
        sup = sups.start("-c", "2")
        wait_until(lambda: "started 2 worker(s)" in sup.log(), timeout=60, message="the supervisor to start")
        wait_until(lambda: len(_condition_lines(sup.log())) >= 1, timeout=30, message="a worker to meet the limit")
        workers = {child.pid for child in sup.children()}
        cpu = psutil.Process(sup.pid).cpu_times()
        time.sleep(4)  # long enough for several replacements, if a worker that cannot connect were replaced
        assert {child.pid for child in sup.children()} == workers
        spent = psutil.Process(sup.pid).cpu_times()
        assert (spent.user + spent.system) - (cpu.user + cpu.system) < 1.0
        assert "starting a replacement" not in sup.log()
        limited.set_limit(-1)
        job = Cli(limited.admin_url, tmp_path).json("enqueue", "echo after")["id"]
        probe = Store.open(limited.admin_url)
        try:
            wait_until(lambda: probe.job(job)["state"] == "completed", timeout=60, message="a job once connections are free")
        finally:
            probe.close()
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    finally:
        sups.cleanup()
    # The first line of each process and condition (the supervisor's 1, each worker's
    # 2). Before: a replacement worker and two lines, again and again.
    assert len(_outage_lines(sup.log())) <= 5, sup.log()
