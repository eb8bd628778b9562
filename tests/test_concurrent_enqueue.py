"""Many processes enqueueing at the same moment, on a database nobody has opened yet."""

import subprocess
import sys
import threading

import pytest
from sqlalchemy import select

from conftest import env_for, wait_until
from queuectl.store import config as settings
from queuectl.store import jobs, open_database, schema
from queuectl.store.models import CONFIG

PROCESSES = 8
JOBS_EACH = 50

# Each process runs the real command-line entry point (queuectl.cli.main.main) once per
# job, exactly as `queuectl enqueue` would, after waiting for a common start signal.
DRIVER = r"""
import os, sys, time
import queuectl.cli.commands, queuectl.store.database, queuectl.store.jobs  # load the code before the race
from queuectl.cli.main import main

name, go, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
argv = sys.argv[4:]
open(f"{go}.{name}.ready", "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("never got the start signal")
    time.sleep(0.001)
failures = 0
for n in range(count):
    failures += main([arg.format(name=name, n=n) for arg in argv]) != 0
sys.exit(1 if failures else 0)
"""


def race(db_url, tmp_path, processes: int, count: int, *argv: str) -> list[subprocess.CompletedProcess]:
    go = tmp_path / "go"
    env = env_for(db_url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(i), str(go), str(count), *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        )
        for i in range(processes)
    ]
    # Start them together once every one has loaded its code.
    wait_until(lambda: all((tmp_path / f"go.{i}.ready").exists() for i in range(processes)) or any(p.poll() is not None for p in procs),
               timeout=120, message="the processes to get ready")
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_eight_processes_enqueue_at_once_on_a_fresh_database(empty_db_url, tmp_path):
    results = race(empty_db_url, tmp_path, PROCESSES, JOBS_EACH, "enqueue", "--", "echo", "p{name}", "job-{n}")

    for result in results:
        output = result.stdout + result.stderr
        assert "database is locked" not in output.lower(), output
        assert "Traceback" not in output, output
        assert result.returncode == 0, output
        assert result.stderr == "", result.stderr
    printed = [line for r in results for line in r.stdout.splitlines()]
    assert len(printed) == PROCESSES * JOBS_EACH
    assert all(line.startswith("enqueued id=") for line in printed)

    db = open_database(empty_db_url)
    try:
        rows = jobs.listing(db)
        assert len(rows) == PROCESSES * JOBS_EACH
        ids = [row.id for row in rows]
        assert len(set(ids)) == len(ids)
        assert sorted(ids, key=int) == [str(n) for n in range(1, len(ids) + 1)]  # no gaps, no repeats
        assert {row.command for row in rows} == {f"echo p{i} job-{n}" for i in range(PROCESSES) for n in range(JOBS_EACH)}
        for i in range(PROCESSES):  # each process's jobs got increasing ids, in its own order
            mine = [int(row.id) for row in rows if row.command.startswith(f"echo p{i} ")]
            assert [row.command for row in rows if row.command.startswith(f"echo p{i} ")] == [f"echo p{i} job-{n}" for n in range(JOBS_EACH)]
            assert mine == sorted(mine)
        with db.read() as conn:
            assert schema.current_revision(conn) == schema.HEAD
            assert conn.execute(select(CONFIG.c.value).where(CONFIG.c.key == "_seq")).scalar() == str(len(ids))
    finally:
        db.dispose()


def test_the_same_id_enqueued_at_once_is_taken_exactly_once(db, db_url, tmp_path):
    results = race(db_url, tmp_path, 6, 1, "enqueue", "--id", "only-once", "--", "echo", "p{name}")
    winners = [r for r in results if r.returncode == 0]
    losers = [r for r in results if r.returncode != 0]
    assert len(winners) == 1, [(r.returncode, r.stderr) for r in results]
    assert winners[0].stdout.startswith("enqueued id=only-once cmd=echo p")
    for loser in losers:
        assert loser.returncode == 1
        assert loser.stderr.splitlines() == ["queuectl: error: a job with id 'only-once' already exists"], loser.stderr
    rows = jobs.listing(db)
    assert [(row.id, row.command) for row in rows] == [("only-once", winners[0].stdout.split("cmd=")[1].strip())]


def test_a_config_key_first_set_by_two_transactions_at_once(db):
    """Both find no row for the key and insert one: the second must not fail on the key."""
    if db.dialect.name != "postgresql":
        pytest.skip("SQLite write transactions never overlap (BEGIN IMMEDIATE)")
    outcome = {}

    def second():
        try:
            with db.begin() as conn:
                outcome["value"] = settings.set_value(conn, "backoff-base", "5")
        except Exception as err:  # reported by the assertion below
            outcome["error"] = err

    with db.begin() as first:
        settings.set_value(first, "backoff-base", "4")  # inserted, not yet committed
        thread = threading.Thread(target=second)
        thread.start()
        # The second transaction's INSERT now waits for this one's row lock.
        wait_until(lambda: lock_waiters(db) >= 1, message="the second transaction to wait for the lock")
    thread.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["value"] == ("backoff-base", 5.0)
    with db.read() as conn:
        assert settings.load(conn)["backoff-base"] == 5.0


def lock_waiters(db) -> int:
    with db.engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).scalar()
