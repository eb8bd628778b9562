"""queuectl through a real PgBouncer in transaction pooling mode (tests/pgbouncer.py):
every command, a migration, and a running pool whose idle workers LISTEN on a direct
URL (docs/design.md section 19)."""

import json
import signal

import pytest
import sqlalchemy as sa
from pgbouncer import pgbouncer  # noqa: F401

from conftest import Cli, wait_until
from queuectl import jobspec
from queuectl.store import Store
from queuectl.store.database import Database
from queuectl.store.dialect import PG_MIGRATION_LOCK
from worker_support import Supervisors

psycopg = pytest.importorskip("psycopg")


def _conninfo(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def direct_url(pg_databases):
    """A fresh migrated database, reached directly (not through PgBouncer)."""
    return pg_databases.new()


def test_a_statement_run_many_times_survives_the_pool_lending_another_server_connection(pgbouncer, direct_url):
    # psycopg prepares a statement on the server at its 5th run by default; PgBouncer
    # 1.18 in transaction mode cannot follow it to the next server connection.
    # (Failed before prepared statements were turned off: prepared statement
    # "_pg3_0" does not exist.)
    store = Store.open(pgbouncer.url(direct_url))
    other = psycopg.connect(_conninfo(pgbouncer.url(direct_url)))
    try:
        job_id = store.enqueue([jobspec.build("true")])[0]["id"]
        for _ in range(8):
            assert store.job(job_id)["state"] == "pending"
        # Another client's open transaction holds the server connection used so far:
        # the next statement of ours runs on the pool's other one.
        other.execute("SELECT 1")
        for _ in range(3):
            assert store.job(job_id)["state"] == "pending"
    finally:
        other.close()
        store.close()


def _prepare_threshold(store: Store):
    with store.db.engine.connect() as conn:
        return conn.connection.driver_connection.prepare_threshold


def test_statements_are_prepared_on_a_direct_connection_only(pgbouncer, direct_url):
    # Prepared, the claim-and-complete loop runs 2.3 times as fast (bench/prepared_statements.py).
    for url, expected in ((direct_url, 5), (pgbouncer.url(direct_url), None)):
        for durable in (True, False):  # the workers' connections carry a startup option PgBouncer refuses
            store = Store.open(url, durable=durable)
            try:
                assert _prepare_threshold(store) == expected, (url, durable)
                assert store.db.dialect.behind_pooler == (expected is None)
            finally:
                store.close()


def _advisory_locks(direct_url: str) -> int:
    with psycopg.connect(_conninfo(direct_url), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND l.objid = %s AND d.datname = current_database()",
            (PG_MIGRATION_LOCK,),
        ).fetchone()[0]


def test_the_migration_lock_is_not_left_on_a_pooled_server_connection(pgbouncer, direct_url):
    # A session lock taken in one transaction stays with the server connection that
    # ran it, which the pool then lends to another client: its unlock, in a later
    # transaction, reaches another server connection and the lock is held for good.
    # (Failed with pg_advisory_lock: 1 lock left.)
    db = Database(pgbouncer.url(direct_url))
    other = psycopg.connect(_conninfo(pgbouncer.url(direct_url)))
    try:
        with db.dialect.migration_lock(db.engine) as conn:
            other.execute("SELECT 1")  # takes a server connection while the lock is held
            conn.exec_driver_sql("SELECT 1")
        other.rollback()
    finally:
        other.close()
        db.dispose()
    assert _advisory_locks(direct_url) == 0


def test_every_command_works_through_pgbouncer(pgbouncer, pg_databases, tmp_path):
    direct = pg_databases.empty()
    url = pgbouncer.url(direct)  # the first command migrates, through PgBouncer
    cli = Cli(url, tmp_path)
    first = cli.json("enqueue", "--id", "ok", "echo hello")
    assert first["state"] == "pending"
    cli.ok("enqueue", "--id", "bad", "--max-retries", "0", "exit 3")
    cli.ok("config", "set", "poll-interval", "0.01")
    # Without a listen URL the workers poll, and say so once each at start.
    run = cli("worker", "start", "--burst", "-c", "1", timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "behind a pooler (PgBouncer) and no listen URL is given: idle workers poll" in run.stderr
    assert "Traceback" not in run.stderr and "prepared statement" not in run.stderr
    assert [job["id"] for job in cli.json("list")] == ["ok", "bad"]
    assert cli.json("show", "ok")["state"] == "completed"
    assert "hello" in cli.ok("logs", "ok").stdout
    assert cli.json("status")["jobs"]["completed"] == 1
    assert [job["id"] for job in cli.json("dlq", "list")] == ["bad"]
    cli.ok("dlq", "retry", "bad")
    assert cli.json("show", "bad")["state"] == "pending"
    cli.ok("cancel", "bad")
    cli.ok("retry", "bad")
    assert cli.json("show", "bad")["state"] == "pending"
    assert "revision" in cli.ok("db", "current").stdout + cli.ok("db", "upgrade").stdout
    assert _advisory_locks(direct) == 0


def test_a_pool_runs_through_pgbouncer_woken_by_a_direct_listen_url(pgbouncer, direct_url, tmp_path):
    url = pgbouncer.url(direct_url)
    cli = Cli(url, tmp_path)
    cli.ok("config", "set", "backoff-base", "1")  # a retry comes 1 s after its failure
    lines = [json.dumps({"id": "parent", "command": "echo parent"}),
             json.dumps({"id": "child", "command": "echo child", "after": ["parent"]}),
             json.dumps({"id": "doomed", "command": "exit 3", "max_retries": 0})]
    # Fail once, then succeed: a marker file tells the second attempt from the first.
    lines += [json.dumps({"id": f"flaky{n}", "command": f"test -e flaky{n} || {{ touch flaky{n}; exit 1; }}", "cwd": str(tmp_path)})
              for n in range(3)]
    lines += [f"echo job {n}" for n in range(44)]
    (tmp_path / "jobs.txt").write_text("\n".join(lines) + "\n")
    cli.ok("enqueue", "--file", str(tmp_path / "jobs.txt"))
    sups = Supervisors(cli, url, tmp_path)
    try:
        sup = sups.start("-c", "2", "--listen-db", direct_url)
        probe = Store.open(direct_url)
        try:
            def states():
                jobs = probe.list_jobs()
                return jobs if all(job["state"] in ("completed", "dead") for job in jobs) and len(jobs) == 50 else None

            jobs = {job["id"]: job for job in wait_until(states, timeout=120, message="all 50 jobs to end")}
            runs = {job_id: len(probe.history(job_id)) for job_id in jobs}
            # The pool LISTENs on the direct URL: one session of the server, its supervisor's
            # (relayed to the idle workers, worker/relay.py).
            with psycopg.connect(_conninfo(direct_url), autocommit=True) as conn:
                listening = wait_until(lambda: conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                ).fetchone()[0] == 1, message="one LISTEN session")
            assert listening
            # A job enqueued to idle workers is run at once (woken through the direct URL).
            late = cli.json("enqueue", "echo late")["id"]
            wait_until(lambda: probe.job(late)["state"] == "completed", timeout=30, message="the late job")
        finally:
            probe.close()
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    finally:
        sups.cleanup()
    assert jobs["doomed"]["state"] == "dead"
    assert sorted(job_id for job_id, job in jobs.items() if job["state"] == "completed") == sorted(set(jobs) - {"doomed"})
    # Each job ran once, the flaky ones twice: none lost, none run twice.
    assert runs == {job_id: 2 if job_id.startswith("flaky") else 1 for job_id in jobs}
    assert jobs["child"]["started_at"] >= jobs["parent"]["finished_at"]
    log = sup.log()
    assert "Traceback" not in log and "prepared statement" not in log and "no listen URL" not in log

