"""Attempt history and streamed output (#12): every run of a job is recorded with its
own worker, host, times, exit code, error and output; a running job's output reaches
the database while it runs (batched), so `logs` shows it so far and `logs --follow`
prints it as it comes, attempt after attempt, from any host; a cut output says so."""

import os
import select
import signal
import subprocess
import time

import sqlalchemy as sa
from alembic import command as alembic_command

from conftest import wait_until
from queuectl.store import Store, schema
from queuectl.timeutil import utcnow
from queuectl.worker.jobgroup import JobGroup
from queuectl.worker.worker import STREAM_EVERY, Worker, WorkerOptions
from support import enqueue
from worker_support import (
    FAST,
    LONG,
    configure,
    job,
    supervisors,  # noqa: F401  (fixture)
    wait_lines,
    wait_workers,
)

# Fails its first attempt, completes its second; says which one it is.
FLAKY = 'echo "attempt $QUEUECTL_ATTEMPT says hi"; [ "$QUEUECTL_ATTEMPT" -ge 2 ] || { echo "not yet" >&2; exit 4; }'


def test_every_attempt_is_recorded_with_its_own_output(cli, db, supervisors):
    configure(db, **FAST, backoff_base=1, backoff_max=0.1)
    cli.ok("enqueue", "--id", "flaky", "--max-retries", "3", FLAKY)
    sup = supervisors.start("--burst", hostname="host-a")
    assert sup.wait() == 0, sup.log()

    shown = cli.json("show", "flaky")
    assert (shown["state"], shown["runs"], shown["attempts"]) == ("completed", 2, 1)
    history = shown["history"]
    assert [(a["number"], a["exit_code"], a["error"], a["host"]) for a in history] == [(1, 4, "exit code 4", "host-a"), (2, 0, None, "host-a")]
    for attempt in history:
        assert attempt["worker_id"].startswith("w-") and attempt["duration"] >= 0
        assert attempt["started_at"] <= attempt["finished_at"]
    assert cli.ok("logs", "flaky", "--attempt", "1").stdout == "attempt 1 says hi\nnot yet\n"
    assert cli.ok("logs", "flaky", "--attempt", "2").stdout == "attempt 2 says hi\n"
    assert cli.ok("logs", "flaky").stdout == "attempt 2 says hi\n"
    result = cli("logs", "flaky", "--attempt", "3")
    assert (result.returncode, result.stderr) == (1, "queuectl: error: job 'flaky' has no attempt 3\n")

    text = cli.ok("show", "flaky").stdout
    assert "runs:         2 (1 failed, 1 completed)\n" in text
    history_lines = text.split("history:\n")[1].splitlines()
    assert history_lines[0].split() == ["#", "STARTED", "TOOK", "HOST", "WORKER", "EXIT", "RESULT"]
    assert history_lines[1].endswith("  4     exit code 4")
    assert history_lines[2].endswith("completed")
    listed = cli.ok("list").stdout.splitlines()
    assert listed[0].split()[:4] == ["ID", "STATE", "RUNS", "FAILED"]
    assert listed[1].split()[:4] == ["flaky", "completed", "2", "1"]


def test_a_job_that_never_ran_has_no_history(cli):
    cli.ok("enqueue", "--id", "idle", "--delay", "1h", "true")
    shown = cli.json("show", "idle")
    assert (shown["runs"], shown["history"]) == (0, [])
    assert "runs:         0\n" in cli.ok("show", "idle").stdout
    assert cli.ok("logs", "idle").stdout == ""


def _read_until(stream, wanted: str, timeout: float = LONG) -> str:
    """What `stream` (a pipe) gave until `wanted` appeared in it; fails after `timeout`."""
    seen = ""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{wanted!r} never came; got {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536).decode()
            assert chunk, f"end of output before {wanted!r}; got {seen!r}"
            seen += chunk
    return seen


def test_logs_follow_prints_output_before_the_job_ends_attempt_after_attempt_from_another_host(cli, db, supervisors, tmp_path):
    configure(db, **FAST, backoff_base=1, backoff_max=0.1)
    go = tmp_path / "go"
    # Each attempt prints a line, then waits for the test before printing the next: a
    # line the follower sees before `go` exists reached the database while the job ran.
    command = (f'echo "early $QUEUECTL_ATTEMPT"; while [ ! -e {go}.$QUEUECTL_ATTEMPT ]; do sleep 0.05; done; '
               f'echo "late $QUEUECTL_ATTEMPT"; [ "$QUEUECTL_ATTEMPT" -ge 2 ] || exit 9')
    cli.ok("enqueue", "--id", "talker", "--max-retries", "1", command)
    follower = cli.spawn("logs", "--follow", "talker", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        supervisors.start(hostname="elsewhere")  # the follower and the job share only the database
        assert _read_until(follower.stdout, "early 1\n") == "early 1\n"
        assert job(db, "talker")["state"] == "running"
        (tmp_path / "go.1").touch()
        out = _read_until(follower.stdout, "early 2\n")
        assert out == "late 1\nearly 2\n"
        (tmp_path / "go.2").touch()
        assert follower.wait(timeout=LONG) == 0
        assert follower.stdout.read() == "late 2\n"
        notes = follower.stderr.read().splitlines()
        assert notes == [
            "=== attempt 1 (running) ===",
            "=== attempt 1 ended: exit code 9 ===",
            "=== attempt 2 (running) ===",
            "=== attempt 2 ended: completed (exit 0) ===",
        ]
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_logs_follow_exits_3_for_a_job_that_ends_dead_and_prints_a_finished_jobs_output(cli, db, supervisors):
    configure(db, **FAST)
    cli.ok("enqueue", "--id", "doomed", "--max-retries", "0", "echo bye; exit 2")
    follower = cli.spawn("logs", "-f", "doomed", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    supervisors.start()
    assert follower.wait(timeout=LONG) == 3
    assert follower.stdout.read() == "bye\n"
    result = cli("logs", "-f", "doomed")  # already finished: its output, at once
    assert (result.returncode, result.stdout, result.stderr) == (3, "bye\n", "=== attempt 1 ===\n")
    error = cli("logs", "-f", "doomed", "--attempt", "1")
    assert (error.returncode, error.stderr) == (2, "queuectl: error: --follow and --attempt go separately\n")


def test_logs_on_a_running_job_shows_what_it_printed_so_far(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    started = tmp_path / "started"
    cli.ok("enqueue", "--id", "slow", f"echo so far; echo x > {started}; sleep 60")
    supervisors.start()
    wait_lines(started, 1)
    wait_until(lambda: cli.ok("logs", "slow").stdout == "so far\n", timeout=LONG, interval=0.2, message="the streamed output")
    shown = cli.ok("show", "slow").stdout
    assert "output so far:\nso far\n" in shown
    cli.ok("cancel", "slow", timeout=LONG)
    assert cli.ok("logs", "slow").stdout == "so far\n"  # kept as the cancelled attempt's output


def test_a_cut_output_says_how_much_was_cut_and_show_prints_only_a_preview(cli, db, supervisors):
    configure(db, **FAST, output_limit=1000)
    cli.ok("enqueue", "--id", "chatty", "seq 1 5000")  # 23893 characters
    sup = supervisors.start("--burst")
    assert sup.wait() == 0, sup.log()
    result = cli.ok("logs", "chatty")
    assert len(result.stdout) <= 1000 and result.stdout.endswith("4999\n5000\n")
    assert result.stderr == f"[... {23893 - len(result.stdout):,} characters not kept (output-limit keeps the last part) ...]\n"
    shown = cli.ok("show", "chatty").stdout
    preview = shown.split("output (its last ")[1]
    assert preview.startswith(f"{len(''.join(f'{n}' + chr(10) for n in range(4981, 5001))):,} of 23,893 characters; all kept: queuectl logs chatty):\n")
    assert preview.splitlines()[1].startswith("[... ")
    assert preview.splitlines()[2:] == [str(n) for n in range(4981, 5001)]
    assert cli.json("show", "chatty")["output_size"] == 23893


def test_a_lost_workers_attempt_keeps_the_output_it_streamed(cli, db, supervisors, tmp_path):
    configure(db, **FAST, backoff_base=1, backoff_max=60)
    started = tmp_path / "started"
    cli.ok("enqueue", "--id", "orphan", "--max-retries", "1", f"echo before the end; echo x > {started}; sleep 60")
    sup = supervisors.start()
    (worker,) = wait_workers(db, sup, 1)
    wait_lines(started, 1)
    wait_until(lambda: job(db, "orphan")["output"] == "before the end\n", timeout=LONG, message="the streamed output")
    os.kill(worker.pid, signal.SIGKILL)
    wait_until(lambda: job(db, "orphan")["state"] == "failed", timeout=LONG, message="the recovery")
    (attempt,) = cli.json("show", "orphan")["history"]
    assert (attempt["number"], attempt["error"], attempt["exit_code"]) == (1, "worker lost", None), attempt
    assert cli.ok("logs", "orphan", "--attempt", "1").stdout == "before the end\n"


def test_a_retry_by_hand_keeps_the_history_and_a_delete_forgets_it(cli, db, supervisors):
    configure(db, **FAST)
    cli.ok("enqueue", "--id", "again", 'echo "run at $QUEUECTL_ATTEMPT"')
    sup = supervisors.start("--burst")
    assert sup.wait() == 0, sup.log()
    cli.ok("retry", "again")
    assert (job(db, "again")["runs"], job(db, "again")["attempts"]) == (1, 0)
    sup = supervisors.start("--burst")
    assert sup.wait() == 0, sup.log()
    assert [a["number"] for a in cli.json("show", "again")["history"]] == [1, 2]
    # The first run's output was the job's; the retry gave it to its attempt.
    assert cli.ok("logs", "again", "--attempt", "1").stdout == "run at 1\n"
    assert cli.ok("logs", "again", "--attempt", "2").stdout == "run at 1\n"  # attempts were reset: 1 again
    cli.ok("delete", "again")
    with db.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM attempts").scalar() == 0


class CountingStore(Store):
    """A real store that counts the worker's output writes."""

    streamed: list[int]

    def stream_output(self, job_id, worker_id, *, output, output_size):
        self.streamed.append(output_size)
        return super().stream_output(job_id, worker_id, output=output, output_size=output_size)


def test_a_chatty_job_streams_in_a_few_batched_writes(db, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    # About 40,000 lines over 2 seconds: one write per line would be 40,000 writes.
    enqueue(db, "for i in $(seq 1 20); do seq 1 2000; sleep 0.1; done", id="chatty", now=utcnow())
    options = WorkerOptions(url=db.url, worker_ids=("w-count",), supervisor_id="s-count", supervisor_pid=os.getppid(),
                            index=1, count=1, queues=(), hostname="count-host", burst=False)
    store = CountingStore(db)
    store.streamed = []
    worker = Worker(options, [JobGroup("w-count")])
    worker.open(store=store, heartbeat=False)
    worker.streamer.start()
    began = time.monotonic()
    try:
        assert worker.loop_once()
    finally:
        took = time.monotonic() - began
        worker.streamer.stop(timeout=5)
        worker.shutdown()
    assert job(db, "chatty")["state"] == "completed"
    # At most one write per STREAM_EVERY while it ran, each with more than the last.
    assert 1 <= len(store.streamed) <= took / STREAM_EVERY + 1, (store.streamed, took)
    assert store.streamed == sorted(set(store.streamed))


def test_the_0004_migration_from_0003_with_data_both_ways(db):
    enqueue(db, "true", id="kept")
    with db.engine.connect() as conn:
        cfg = schema.alembic_config(conn)
        alembic_command.downgrade(cfg, "0003")
        conn.commit()
        assert "attempts" not in sa.inspect(conn).get_table_names()
        columns = "id, seq, command, state, attempts, max_retries, priority, queue, run_at, cwd, created_at, updated_at"
        for job_id, seq, state, output in (("done", 90, "completed", "all good\n"), ("broken", 91, "failed", "oops\n")):
            conn.exec_driver_sql(
                f"INSERT INTO jobs ({columns}, started_at, finished_at, exit_code, last_error, output, worker_id)"
                f" SELECT '{job_id}', {seq}, 'true', '{state}', 1, 3, 0, 'default', run_at, cwd, created_at, updated_at,"
                f" created_at, updated_at, 1, 'exit code 1', '{output}', 'w-old' FROM jobs WHERE id = 'kept'"
            )
        conn.commit()
        alembic_command.upgrade(cfg, "head")
        conn.commit()
        rows = conn.exec_driver_sql("SELECT id, runs, output_size FROM jobs ORDER BY seq").all()
        assert rows == [("kept", 0, None), ("done", 1, 9), ("broken", 1, 5)]
        attempts = conn.exec_driver_sql("SELECT job_id, number, worker_id, exit_code, error, output FROM attempts ORDER BY job_id").all()
        # A completed attempt's output stays the job's (models.ATTEMPTS.c.output).
        assert attempts == [("broken", 1, "w-old", 1, "exit code 1", "oops\n"), ("done", 1, "w-old", 1, "exit code 1", None)]
        alembic_command.downgrade(cfg, "0003")
        conn.commit()
        assert "attempts" not in sa.inspect(conn).get_table_names()
        assert "runs" not in {c["name"] for c in sa.inspect(conn).get_columns("jobs")}
        assert conn.exec_driver_sql("SELECT id, output FROM jobs ORDER BY seq").all() == [("kept", None), ("done", "all good\n"), ("broken", "oops\n")]
        alembic_command.upgrade(cfg, "head")
        conn.commit()
