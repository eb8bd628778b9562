"""`queuectl dlq`: list, retry and purge dead jobs."""

from datetime import timedelta

import pytest

from conftest import Cli
from queuectl.errors import NotFound
from queuectl.states import JobState
from queuectl.store import jobs, transitions
from queuectl.timeutil import utcnow
from support import dead_row, enqueue, error_line, job_row, kill, usage_error


@pytest.fixture
def dead(db):
    """Job 1 is pending; 2, 3 and 'flaky' are dead (in that enqueue order)."""
    enqueue(db, "echo alive", now=utcnow() - timedelta(seconds=5))
    enqueue(db, "exit 3", max_retries=0)
    enqueue(db, "exit 4", max_retries=1)
    enqueue(db, "curl example.invalid", id="flaky", max_retries=2)
    kill(db, "2", exit_code=3, error="exit code 3", output="three\n")
    kill(db, "3", exit_code=4, error="exit code 4", output=None)
    kill(db, "flaky", exit_code=None, error="timed out after 30s", output="partial")
    return db


def dead_ids(db) -> list[str]:
    return [row.id for row in jobs.listing(db, state=JobState.DEAD)]


def test_list_text_and_json(cli, dead):
    rows = cli.json("dlq", "list")
    assert [(r["id"], r["state"], r["attempts"], r["exit_code"], r["last_error"]) for r in rows] == [
        ("2", "dead", 1, 3, "exit code 3"),
        ("3", "dead", 2, 4, "exit code 4"),
        ("flaky", "dead", 3, None, "timed out after 30s"),
    ]
    assert not any("output" in r for r in rows)  # a listing never reads outputs: `show` has them
    assert [cli.json("show", r["id"])["output"] for r in rows] == ["three\n", None, "partial"]
    assert cli.json("dlq", "--json", "list") == rows  # --json before the action counts too

    lines = cli.ok("dlq").stdout.splitlines()
    assert lines[0].split() == ["ID", "ATTEMPTS", "EXIT", "LAST_ERROR", "COMMAND"]
    assert [line.split()[:3] for line in lines[1:]] == [["2", "1", "3"], ["3", "2", "4"], ["flaky", "3", "timed"]]
    assert lines[3].endswith("curl example.invalid")


def test_empty(cli):
    assert cli.ok("dlq").stdout == "the dead-letter queue is empty\n"
    assert cli.json("dlq") == []


def test_retry_by_id(cli, dead):
    seqs = {job_id: dead_row(dead, job_id).seq for job_id in ("2", "flaky")}
    before = utcnow()
    assert cli.ok("dlq", "retry", "flaky", "2").stdout == "retried 2 job(s): flaky 2\n"
    after = utcnow()
    for job_id in ("2", "flaky"):
        job = job_row(dead, job_id)
        assert (job.state, job.attempts, job.seq, job.worker_id) == ("pending", 0, seqs[job_id], None)
        assert before - timedelta(seconds=1) <= job.run_at <= after
        assert dead_row(dead, job_id) is None
    assert job_row(dead, "flaky").command == "curl example.invalid"
    assert dead_ids(dead) == ["3"]
    # Runnable at once, in enqueue order after job 1.
    with dead.begin() as conn:
        claimed = [transitions.claim(conn, "w", None, after).id for _ in range(3)]
    assert claimed == ["1", "2", "flaky"]


def test_retry_all(cli, dead):
    assert cli.ok("dlq", "retry", "--all").stdout == "retried 3 job(s): 2 3 flaky\n"
    assert dead_ids(dead) == []
    assert [(r.id, r.state, r.attempts) for r in jobs.listing(dead)] == [
        ("1", "pending", 0), ("2", "pending", 0), ("3", "pending", 0), ("flaky", "pending", 0),
    ]


def test_retry_and_purge_are_all_or_nothing(cli, dead):
    error_line(cli("dlq", "retry", "2", "missing"), 1, "no dead job with id 'missing'")
    error_line(cli("dlq", "purge", "3", "1"), 1, "no dead job with id '1'")  # job 1 is alive
    assert dead_ids(dead) == ["2", "3", "flaky"]
    assert job_row(dead, "1").state == "pending"


def test_purge(cli, dead):
    assert cli.ok("dlq", "purge", "3").stdout == "purged 1 job(s): 3\n"
    with pytest.raises(NotFound):
        jobs.get(dead, "3")
    assert dead_ids(dead) == ["2", "flaky"]
    assert cli.ok("dlq", "purge", "--all").stdout == "purged 2 job(s): 2 flaky\n"
    assert dead_ids(dead) == []
    assert [r.id for r in jobs.listing(dead)] == ["1"]


def test_bad_arguments(sqlite_url, tmp_path):
    cli = Cli(sqlite_url, tmp_path)
    error_line(cli("dlq", "retry"), 2, "give job ids or --all")
    error_line(cli("dlq", "purge", "--all", "2"), 2, "not both")
    error_line(cli("dlq", "purge", "no/such id"), 2, "invalid job id")
    usage_error(cli("dlq", "resurrect"), "invalid choice")
