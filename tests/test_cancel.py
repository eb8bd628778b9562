"""`queuectl cancel` (#12): waiting jobs are cancelled at once, running ones are
stopped by their worker (SIGTERM, then SIGKILL after kill-grace) on any host, and a
cancelled job is never retried. The 0003 migration, from 0002 with data, both ways."""

import sqlalchemy as sa
from alembic import command as alembic_command

from conftest import wait_until
from queuectl.store import schema
from support import enqueue, error_line
from worker_support import (
    FAST,
    LONG,
    configure,
    job,
    read_lines,
    supervisors,  # noqa: F401  (fixture)
    wait_lines,
    wait_workers,
)


def test_a_waiting_job_is_cancelled_at_once_and_never_runs(cli, db, supervisors, tmp_path):
    side = tmp_path / "ran"
    cli.ok("enqueue", "--id", "later", "--delay", "1h", f"touch {side}")
    cli.ok("enqueue", "--id", "retrying", "--max-retries", "3", f"touch {side}")
    with db.begin() as conn:  # as after a failed attempt, its retry due now
        conn.exec_driver_sql("UPDATE jobs SET state = 'failed', attempts = 1 WHERE id = 'retrying'")

    assert cli.ok("cancel", "later", "retrying").stdout == "cancelled 2 job(s): later retrying\n"
    for job_id in ("later", "retrying"):
        row = job(db, job_id)
        assert (row["state"], row["last_error"]) == ("cancelled", "cancelled"), row
        assert row["finished_at"] is not None
    status = cli.json("status")["jobs"]
    assert (status["cancelled"], status["completed"], status["pending"], status["failed"]) == (2, 0, 0, 0)
    assert [r["id"] for r in cli.json("list", "--state", "cancelled")] == ["later", "retrying"]
    assert "Cancelled: 2" in cli.ok("status").stdout
    sup = supervisors.start("--burst")
    assert sup.wait() == 0, sup.log()
    assert not side.exists()


def test_what_cannot_be_cancelled_is_refused_and_nothing_changes(cli, db):
    enqueue(db, "true", id="waiting")
    enqueue(db, "true", id="done")
    with db.begin() as conn:
        conn.exec_driver_sql("UPDATE jobs SET state = 'completed' WHERE id = 'done'")
    error_line(cli("cancel", "waiting", "done"), 1, "'done' is completed")
    error_line(cli("cancel", "nope"), 1, "no job with id 'nope'")
    assert job(db, "waiting")["state"] == "pending"  # all or nothing
    error_line(cli("cancel"), 2, "give job ids")
    error_line(cli("cancel", "waiting", "--queue", "default"), 2, "not both")
    error_line(cli("cancel", "--state", "completed"), 2, "cannot be cancelled")
    error_line(cli("cancel", "--state", "bogus"), 2, "unknown state")
    assert cli.ok("cancel", "--queue", "default").stdout == "cancelled 1 job(s): waiting\n"


def test_a_running_job_gets_sigterm_then_is_cancelled_without_retry(cli, db, supervisors, tmp_path):
    configure(db, **FAST, kill_grace=30)
    side = tmp_path / "starts"
    command = f"echo start >> {side}; trap 'echo got-term; exit 7' TERM; while :; do sleep 0.05; done"
    cli.ok("enqueue", "--id", "busy", "--max-retries", "3", command)
    sup = supervisors.start("--hostname", "elsewhere")  # cancel never signals: it goes through the database
    wait_lines(side, 1)
    result = cli.ok("cancel", "busy", timeout=LONG)
    assert result.stdout == "cancelled 0 job(s); asked 1 running job(s) to stop: busy\nall stopped\n"
    row = job(db, "busy")
    assert (row["state"], row["exit_code"], row["last_error"], row["attempts"]) == ("cancelled", 7, "cancelled", 0), row
    assert "got-term" in row["output"]
    cli.ok("enqueue", "--id", "after", "true")  # the pool goes on, and never takes `busy` again
    wait_until(lambda: job(db, "after")["state"] == "completed", timeout=LONG, message="the next job")
    assert read_lines(side) == ["start"]
    assert " INFO job busy cancelled after " in sup.log()


def test_a_job_that_ignores_sigterm_is_killed_after_kill_grace(cli, db, supervisors, tmp_path):
    configure(db, **FAST, kill_grace=0.5)
    side = tmp_path / "starts"
    cli.ok("enqueue", "--id", "stubborn", f"echo start >> {side}; trap '' TERM; while :; do sleep 0.05; done")
    sup = supervisors.start()
    wait_workers(db, sup, 1)
    wait_lines(side, 1)
    assert cli.ok("cancel", "--state", "running", timeout=LONG).stdout.endswith("all stopped\n")
    row = job(db, "stubborn")
    assert (row["state"], row["exit_code"]) == ("cancelled", 137), row


def test_cancel_no_wait_returns_at_once(cli, db, supervisors, tmp_path):
    configure(db, **FAST, kill_grace=0)
    side = tmp_path / "starts"
    cli.ok("enqueue", "--id", "long", f"echo start >> {side}; sleep 300")
    supervisors.start()
    wait_lines(side, 1)
    assert cli.ok("cancel", "long", "--no-wait").stdout == "cancelled 0 job(s); asked 1 running job(s) to stop: long\n"
    wait_until(lambda: job(db, "long")["state"] == "cancelled", timeout=LONG, message="the cancel to land")


def test_the_0003_migration_from_0002_with_data_both_ways(db):
    enqueue(db, "true", id="kept")
    with db.engine.connect() as conn:
        cfg = schema.alembic_config(conn)
        alembic_command.downgrade(cfg, "0002")
        conn.commit()
        assert "cancel_requested_at" not in {c["name"] for c in sa.inspect(conn).get_columns("jobs")}
        conn.exec_driver_sql("INSERT INTO jobs (id, seq, command, state, attempts, max_retries, priority, queue, run_at, cwd,"
                             " created_at, updated_at) SELECT 'old', 99, 'true', 'pending', 0, 3, 0, 'default', run_at, cwd,"
                             " created_at, updated_at FROM jobs WHERE id = 'kept'")
        conn.commit()
        alembic_command.upgrade(cfg, "head")
        conn.commit()
        assert conn.exec_driver_sql("SELECT id, cancel_requested_at FROM jobs ORDER BY seq").all() == [("kept", None), ("old", None)]
        conn.exec_driver_sql("UPDATE jobs SET state = 'cancelled', finished_at = updated_at WHERE id = 'old'")
        conn.commit()
        alembic_command.downgrade(cfg, "0002")
        conn.commit()
        # An older queuectl knows no cancelled state: the job waits in its DLQ instead.
        assert conn.exec_driver_sql("SELECT id FROM jobs").scalars().all() == ["kept"]
        assert conn.exec_driver_sql("SELECT id, state FROM dead_jobs").all() == [("old", "dead")]
        alembic_command.upgrade(cfg, "head")
        conn.commit()


def test_a_job_retried_from_the_dlq_forgets_a_cancel_asked_of_its_last_run(db):
    """A cancel asked while the job ran, which its worker never saw (the job failed for
    good first), must not cancel the job's fresh start after `dlq retry` or `retry`."""
    from queuectl.store import Store, transitions
    from queuectl.timeutil import utcnow

    store = Store(db)
    for job_id in ("a", "b"):
        enqueue(db, "true", id=job_id, max_retries=0)
        with db.begin() as conn:
            conn.exec_driver_sql(f"UPDATE jobs SET state = 'running', worker_id = 'w-1' WHERE id = '{job_id}'")
        assert store.cancel([job_id]) == ([], [job_id])
        with db.begin() as conn:
            transitions.fail(conn, job_id, "w-1", error="exit code 1", exit_code=1, output="", now=utcnow(),
                             cfg={"backoff-base": 2, "backoff-max": 1, "backoff-jitter": 0})
    assert store.dlq_retry(["a"]) == ["a"]
    assert store.retry(["b"]) == ["b"]
    with db.read() as conn:
        rows = conn.exec_driver_sql("SELECT id, state, cancel_requested_at FROM jobs ORDER BY id").all()
    assert rows == [("a", "pending", None), ("b", "pending", None)]
