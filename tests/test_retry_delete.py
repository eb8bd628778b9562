"""`queuectl retry` and `queuectl delete` (#12): finished jobs (completed, dead,
cancelled) go back to pending with the same id, or go for good; a waiting or running
job is refused; counts stay exact."""

from datetime import timedelta

from sqlalchemy import update

from queuectl.store import counts
from queuectl.store.models import JOBS
from queuectl.timeutil import utcnow
from support import dead_row, enqueue, error_line, job_row, real_counts


def finish(db, job_id: str, state: str, ago_seconds: float = 0) -> None:
    """Mark a job completed or cancelled, finished that long ago (as a worker would)."""
    with db.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE jobs SET state = ?, attempts = 2, exit_code = 0, worker_id = 'w-old', started_at = run_at, finished_at = run_at WHERE id = ?"
            if db.dialect.name == "sqlite" else
            "UPDATE jobs SET state = %s, attempts = 2, exit_code = 0, worker_id = 'w-old', started_at = run_at, finished_at = run_at WHERE id = %s",
            (state, job_id),
        )


def kill(db, job_id: str) -> None:
    """Send a job to the DLQ the way a last failed attempt does."""
    from queuectl.store import transitions

    with db.begin() as conn:
        conn.exec_driver_sql(f"UPDATE jobs SET state = 'running', worker_id = 'w-x' WHERE id = '{job_id}'")
        transitions.fail(conn, job_id, "w-x", error="exit code 1", exit_code=1, output="", now=utcnow(),
                         cfg={"backoff-base": 2, "backoff-max": 1, "backoff-jitter": 0})


def derived(db):
    with db.read() as conn:
        return counts.job_counts(conn)


def test_retry_puts_any_finished_job_back_to_pending(cli, db):
    for job_id in ("done", "gone", "stopped", "waiting"):
        enqueue(db, "true", id=job_id, max_retries=0)
    finish(db, "done", "completed")
    finish(db, "stopped", "cancelled")
    kill(db, "gone")
    assert cli.ok("retry", "stopped", "gone", "done").stdout == "retried 3 job(s): stopped gone done\n"
    for job_id in ("done", "gone", "stopped"):
        row = job_row(db, job_id)
        assert (row.state, row.attempts, row.worker_id, row.started_at, row.finished_at) == ("pending", 0, None, None, None), row
        assert row.command == "true" and row.max_retries == 0
    assert dead_row(db, "gone") is None
    assert derived(db) == real_counts(db)


def test_retry_by_state_and_what_is_refused(cli, db):
    for job_id in ("a", "b", "c"):
        enqueue(db, "true", id=job_id)
    finish(db, "a", "completed")
    finish(db, "b", "completed")
    error_line(cli("retry", "a", "c"), 1, "'c' is pending", "cancel it first")
    assert job_row(db, "a").state == "completed"  # all or nothing
    error_line(cli("retry", "nope"), 1, "no job with id 'nope'")
    error_line(cli("retry"), 2, "give job ids or --state")
    error_line(cli("retry", "a", "--state", "completed"), 2, "not both")
    error_line(cli("retry", "--state", "pending"), 2, "--state must be one of")
    assert cli.ok("retry", "--state", "completed").stdout == "retried 2 job(s): a b\n"
    assert cli.ok("retry", "--state", "dead").stdout == "retried 0 job(s)\n"


def test_delete_removes_finished_jobs_and_keeps_counts_exact(cli, db):
    for job_id in ("old", "new", "gone", "stopped", "busy"):
        enqueue(db, "true", id=job_id, max_retries=0)
    finish(db, "old", "completed")
    finish(db, "new", "completed")
    two_days_ago = utcnow() - timedelta(days=2)
    with db.begin() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == "old").values(finished_at=two_days_ago))
        conn.execute(update(JOBS).where(JOBS.c.id == "new").values(finished_at=utcnow()))
        conn.execute(update(JOBS).where(JOBS.c.id == "busy").values(state="running", worker_id="w-1"))
    finish(db, "stopped", "cancelled")
    kill(db, "gone")

    error_line(cli("delete", "busy"), 1, "'busy' is running", "cancel it first")
    error_line(cli("delete", "--older-than", "1d"), 2, "give job ids or --state")
    error_line(cli("delete", "old", "--older-than", "1d"), 2, "--older-than goes with --state")
    error_line(cli("delete", "--state", "running"), 2, "--state must be one of")
    assert cli.ok("delete", "--state", "completed", "--older-than", "1d").stdout == "deleted 1 job(s): old\n"
    assert job_row(db, "new").state == "completed"
    assert cli.ok("delete", "gone", "stopped").stdout == "deleted 2 job(s): gone stopped\n"
    assert dead_row(db, "gone") is None and job_row(db, "stopped") is None
    assert derived(db) == real_counts(db) == {"pending": 0, "running": 1, "failed": 0, "completed": 1, "dead": 0, "cancelled": 0, "blocked": 0}
    assert cli.ok("delete", "--state", "completed").stdout == "deleted 1 job(s): new\n"
    assert derived(db) == real_counts(db)
