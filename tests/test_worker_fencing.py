"""A stalled process must neither hang a job nor let it run twice: a locked database
does not stop a job's timeout or its output; a hung worker's job is killed (fenced)
before any other host may run it again; a supervisor replaces its own hung workers."""

import os
import signal
import sqlite3
import time

import pytest

from conftest import Cli, wait_until
from worker_support import (  # noqa: F401
    FAST,
    LONG,
    alive,
    configure,
    job,
    live_workers,
    read_lines,
    sqlite_supervisors,
    supervisors,
    wait_lines,
    wait_workers,
)


def read_pid(path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def test_a_locked_database_stops_neither_a_jobs_timeout_nor_its_output(sqlite_url, sqlite_db, sqlite_supervisors, tmp_path):
    # The fence is far away (60 s): what ends the job here is its own timeout.
    configure(sqlite_db, heartbeat_interval=0.2, heartbeat_timeout=120, poll_interval=0.05)
    pid_file, marks = tmp_path / "pid", tmp_path / "marks"
    # Floods its output: each mark is written after 64 KiB that block once the pipe is full.
    flood = f"echo $$ > {pid_file}; while :; do head -c 65536 /dev/zero; date +%s.%N >> {marks}; done"
    Cli(sqlite_url, tmp_path).ok("enqueue", "--id", "flood", "--timeout", "5", "--max-retries", "0", flood)
    sqlite_supervisors.start("--concurrency", "1")
    wait_until(lambda: read_pid(pid_file) and len(read_lines(marks)) >= 1, timeout=LONG, message="the flood to start")
    shell = read_pid(pid_file)
    outsider = sqlite3.connect(sqlite_url, isolation_level=None)  # the sqlite3 shell, alembic, a backup...
    try:
        outsider.execute("BEGIN IMMEDIATE")
        locked_at = time.time()
        wait_until(lambda: not alive(shell), timeout=LONG, message="the job's timeout to kill it while the database is locked")
        last_mark = float(read_lines(marks)[-1])
    finally:
        outsider.rollback()
        outsider.close()
    # Its output kept being read while the database was locked.
    assert last_mark > locked_at + 1.0, (last_mark - locked_at)
    wait_until(lambda: job(sqlite_db, "flood")["state"] == "dead", timeout=LONG, message="the timed-out job to be recorded")
    assert job(sqlite_db, "flood")["last_error"] == "timed out after 5s"


def test_a_supervisor_kills_and_replaces_its_own_hung_worker(db, supervisors, tmp_path):
    configure(db, heartbeat_interval=0.2, heartbeat_timeout=3, backoff_max=0.2, poll_interval=0.05)
    flag, pid_file = tmp_path / "flag", tmp_path / "pid"
    # The first attempt sleeps; the next one succeeds at once.
    command = f"if [ -e {flag} ]; then exit 0; fi; touch {flag}; echo $$ > {pid_file}; exec sleep 300"
    Cli(supervisors.db_url, tmp_path).ok("enqueue", "--id", "hangs", command)
    sup = supervisors.start("--concurrency", "1")
    (worker,) = wait_workers(db, sup, 1)
    wait_until(lambda: read_pid(pid_file), timeout=LONG, message="the job to start")
    sleeper = read_pid(pid_file)
    os.kill(worker.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    wait_until(lambda: not alive(sleeper), timeout=LONG, message="the hung worker's job to be killed")
    killed_after = time.monotonic() - stopped_at
    wait_until(lambda: not alive(worker.pid), timeout=LONG, message="the hung worker to be killed")
    final = wait_until(lambda: (j := job(db, "hangs"))["state"] == "completed" and j, timeout=LONG, message="the job's retry to complete")
    assert final["attempts"] == 1, final  # one failed attempt (the hung one), then the success
    replacement = wait_workers(db, sup, 1)
    assert replacement[0].id != worker.id
    # With a job running it is fenced at half the heartbeat-timeout (plus a loaded machine's slack).
    assert killed_after < 3 + 10, killed_after
    print(f"hung worker's job killed {killed_after:.2f}s after SIGSTOP (heartbeat-timeout 3s)")


def test_a_stalled_workers_job_is_dead_before_another_host_runs_it_again(db, supervisors, tmp_path):
    configure(db, heartbeat_interval=0.2, heartbeat_timeout=4, backoff_max=0.2, poll_interval=0.05)
    lock, log = tmp_path / "job.lock", tmp_path / "attempts.log"
    # The flock detector of the soak: an attempt that finds another one running says so.
    command = (f"exec 9>>{lock}; flock -n 9 || {{ echo OVERLAP >> {log}; exit 1; }}; "
               f"echo start-$QUEUECTL_ATTEMPT >> {log}; sleep 8; echo end-$QUEUECTL_ATTEMPT >> {log}")
    host_a = supervisors.start("--concurrency", "1", hostname="host-a")
    (worker,) = wait_workers(db, host_a, 1)
    Cli(supervisors.db_url, tmp_path).ok("enqueue", "--id", "once", command)
    wait_until(lambda: "start-1" in read_lines(log), timeout=LONG, message="attempt 1 to start on host A")
    host_b = supervisors.start("--concurrency", "1", hostname="host-b")
    wait_workers(db, host_b, 1)
    os.kill(worker.pid, signal.SIGSTOP)
    final = wait_until(lambda: (j := job(db, "once"))["state"] in ("completed", "dead") and j, timeout=LONG, message="the job to end")
    lines = read_lines(log)
    assert "OVERLAP" not in lines, lines
    assert "end-1" not in lines, lines  # attempt 1 was killed, not left to finish beside attempt 2
    assert final["state"] == "completed", (final, lines)


def test_a_worker_that_cannot_heartbeat_kills_its_own_job(sqlite_url, sqlite_db, sqlite_supervisors, tmp_path):
    configure(sqlite_db, heartbeat_interval=0.2, heartbeat_timeout=3, backoff_max=0.2, poll_interval=0.05)
    pid_file = tmp_path / "pid"
    Cli(sqlite_url, tmp_path).ok("enqueue", "--id", "long", "--max-retries", "0", f"echo $$ > {pid_file}; exec sleep 300")
    sup = sqlite_supervisors.start("--concurrency", "1")
    wait_until(lambda: read_pid(pid_file), timeout=LONG, message="the job to start")
    sleeper = read_pid(pid_file)
    sup.signal(signal.SIGSTOP)  # no supervisor to fence it: the worker must do it itself
    outsider = sqlite3.connect(sqlite_url, isolation_level=None)
    try:
        outsider.execute("BEGIN IMMEDIATE")  # ... and no heartbeat reaches the database
        wait_until(lambda: not alive(sleeper), timeout=LONG, message="the worker to kill its job")
    finally:
        outsider.rollback()
        outsider.close()
        sup.signal(signal.SIGCONT)
    final = wait_until(lambda: (j := job(sqlite_db, "long"))["state"] == "dead" and j, timeout=LONG, message="the attempt to be charged")
    # Its own record ("killed: no heartbeat reached the database..."), or, if the thawed
    # supervisor saw the silence first, the supervisor's ("worker hung: no heartbeat...").
    assert "no heartbeat" in final["last_error"], final


def test_a_supervisor_waiting_on_the_database_still_fences_a_hung_worker(sqlite_url, sqlite_db, sqlite_supervisors, tmp_path):
    """The supervisor's heartbeat waits (busy timeout 60 s) on a write lock held from
    outside; meanwhile its worker hangs. The fence must not wait for the database."""
    configure(sqlite_db, heartbeat_interval=0.2, heartbeat_timeout=3, backoff_max=0.2, poll_interval=0.05)
    pid_file = tmp_path / "pid"
    Cli(sqlite_url, tmp_path).ok("enqueue", "--id", "long", "--max-retries", "0", f"echo $$ > {pid_file}; exec sleep 300")
    sup = sqlite_supervisors.start("--concurrency", "1")
    (worker,) = wait_workers(sqlite_db, sup, 1)
    wait_until(lambda: read_pid(pid_file), timeout=LONG, message="the job to start")
    sleeper = read_pid(pid_file)
    outsider = sqlite3.connect(sqlite_url, isolation_level=None)
    try:
        outsider.execute("BEGIN IMMEDIATE")
        os.kill(worker.pid, signal.SIGSTOP)
        # Fenced at 1.5 s (half the heartbeat-timeout), not after the lock is gone.
        wait_until(lambda: not alive(sleeper), timeout=30, message="the hung worker's job to be killed while the database is locked")
        wait_until(lambda: not alive(worker.pid), timeout=30, message="the hung worker to be killed while the database is locked")
    finally:
        outsider.rollback()
        outsider.close()
    final = wait_until(lambda: (j := job(sqlite_db, "long"))["state"] == "dead" and j, timeout=LONG, message="the attempt to be charged")
    assert final["last_error"].startswith("worker hung: no heartbeat"), final
    wait_workers(sqlite_db, sup, 1)  # replaced


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_heartbeat_thread_shares_the_workers_one_connection(db, supervisors, tmp_path):
    """Per worker one connection for statements (its heartbeat thread waits its turn),
    besides its LISTEN connection; plus the supervisor's. Sampled while busy workers
    beat often."""
    import sqlalchemy as sa

    configure(db, heartbeat_interval=0.05, heartbeat_timeout=30, poll_interval=0.05)
    path = tmp_path / "jobs.txt"
    path.write_text("true\n" * 4000)
    Cli(supervisors.db_url, tmp_path).ok("enqueue", "--file", str(path))
    name = sa.engine.make_url(supervisors.db_url).database
    sup = supervisors.start("--concurrency", "2", "--burst")
    peak = 0
    # Statement connections: every one but the LISTENers (whose last query is LISTEN).
    count = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid() AND query NOT LIKE 'LISTEN%'")
    with db.engine.connect() as conn:  # the test's own connection is not counted
        while sup.popen.poll() is None:
            peak = max(peak, conn.execute(count, {"d": name}).scalar())
            conn.commit()
            time.sleep(0.01)
    assert sup.wait() == 0, sup.log()
    assert 2 <= peak <= 2 + 1, f"{peak} statement connections for 2 workers and their supervisor"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_pool_holds_one_connection_per_process_and_one_listen_connection(db, supervisors, tmp_path):
    """The connection budget on PostgreSQL: a host's pool holds its supervisor's
    connection, one LISTEN connection (the supervisor's, relayed to its workers) and one
    per worker process, however many slots: P + 2. Counted in pg_stat_activity while
    every slot runs a job."""
    import sqlalchemy as sa

    configure(db, **FAST)
    side = tmp_path / "started.log"
    cli = Cli(supervisors.db_url, tmp_path)
    for i in range(6):
        cli.ok("enqueue", f'echo {i} >> "{side}"; sleep 300')
    name = sa.engine.make_url(supervisors.db_url).database
    sup = supervisors.start("--concurrency", "6", "--processes", "2")
    wait_lines(side, 6)
    rows = sa.text("SELECT query FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid() AND backend_type = 'client backend'")

    def settled():
        with db.engine.connect() as conn:  # the test's own connection is not counted
            queries = conn.execute(rows, {"d": name}).scalars().all()
        listening = [q for q in queries if q.startswith("LISTEN")]
        return (len(queries), len(listening)) == (2 + 2, 1) and queries

    wait_until(settled, timeout=LONG, message="2 worker processes + the supervisor + 1 LISTEN connection")
    assert len(live_workers(db, sup.pid)) == 6
