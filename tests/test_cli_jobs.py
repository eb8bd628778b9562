"""Reading jobs from the command line: list (jobs), show, logs, status."""

import json
import re
from datetime import timedelta

import pytest

from conftest import Cli
from queuectl.store.models import WORKERS
from queuectl.timeutil import utcnow
from support import enqueue, error_line, fail_once, finish, kill, take, usage_error

TIMESTAMP_KEYS = ("run_at", "created_at", "updated_at", "started_at", "finished_at")
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def populated(db):
    """One job in every state, plus a named job in another queue; returns the clock used."""
    now = utcnow().replace(microsecond=0)
    assert enqueue(db, "echo pending", now=now) == "1"
    assert enqueue(db, "sleep 100", now=now) == "2"
    take(db, "2", now=now)
    assert enqueue(db, "echo hello; echo world", now=now) == "3"
    finish(db, "3", output="hello\nworld\n", now=now)
    assert enqueue(db, "exit 4", now=now, max_retries=2) == "4"
    fail_once(db, "4", now=now + timedelta(hours=1), exit_code=4, error="exit code 4")  # retry at now+1h+1s
    assert enqueue(db, "exit 5", now=now, max_retries=0) == "5"
    kill(db, "5", now=now, exit_code=5, error="exit code 5", output="boom\n")
    enqueue(db, "make nightly", id="nightly", queue="other", priority=9, delay="2h", now=now)
    return now


def ids(rows) -> list[str]:
    return [row["id"] for row in rows]


def test_list_json_and_text(cli, populated):
    rows = json.loads(cli.ok("list", "--json").stdout)  # exactly one JSON document: an array
    assert isinstance(rows, list)
    assert ids(rows) == ["1", "2", "3", "4", "5", "nightly"]  # enqueue order, dead jobs included
    assert [r["state"] for r in rows] == ["pending", "running", "completed", "failed", "dead", "pending"]
    for row in rows:
        for key in TIMESTAMP_KEYS:
            assert row[key] is None or ISO_Z.fullmatch(row[key]), (key, row[key])
    assert rows[5]["run_at"] == (populated + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert cli.json("jobs") == rows  # alias

    lines = cli.ok("list").stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "RUNS", "FAILED", "PRIO", "QUEUE", "RUN_AT", "COMMAND"]
    # Runs (ended attempts of any kind) beside failed attempts: a job that completed
    # once no longer looks like it never ran.
    assert [line.split()[:4] for line in lines[1:]] == [
        ["1", "pending", "0", "0"], ["2", "running", "0", "0"], ["3", "completed", "1", "0"],
        ["4", "failed", "1", "1"], ["5", "dead", "1", "1"], ["nightly", "pending", "0", "0"],
    ]
    assert lines[6].endswith("make nightly")


def test_list_filters(cli, populated):
    assert ids(cli.json("list", "--state", "processing")) == ["2"]  # alias of running
    assert ids(cli.json("list", "--state", "dead")) == ["5"]
    assert ids(cli.json("jobs", "--state", "Pending", "--queue", "other")) == ["nightly"]
    assert ids(cli.json("list", "--limit", "2")) == ["1", "2"]


def test_list_bad_arguments(cli):
    line = error_line(cli("list", "--state", "sleeping"), 2, "unknown state 'sleeping'")
    for state in ("pending", "running", "failed", "completed", "dead", "processing"):
        assert state in line
    error_line(cli("list", "--queue", "no such/queue"), 2, "invalid queue name")
    usage_error(cli("list", "--limit", "0"), "--limit")
    usage_error(cli("jobs", "--limit", "many"), "--limit")
    usage_error(cli("list", "--limit", str(2**63)), "--limit")  # beyond what a database can count


def test_show_and_logs(cli, populated):
    job = cli.json("show", "3")
    assert (job["id"], job["state"], job["exit_code"], job["output"]) == ("3", "completed", 0, "hello\nworld\n")
    assert ISO_Z.fullmatch(job["finished_at"])

    text = cli.ok("show", "3").stdout
    assert re.search(r"^id:\s+3$", text, re.M)
    assert re.search(r"^state:\s+completed$", text, re.M)
    assert re.search(r"^command:\s+echo hello; echo world$", text, re.M)
    assert text.endswith("output:\nhello\nworld\n")

    dead = cli.json("show", "5")
    assert (dead["state"], dead["attempts"], dead["exit_code"], dead["last_error"]) == ("dead", 1, 5, "exit code 5")

    assert cli.ok("logs", "3").stdout == "hello\nworld\n"
    assert cli.ok("logs", "1").stdout == ""


def test_missing_job(cli, populated):
    error_line(cli("show", "99"), 1, "no job with id '99'")
    error_line(cli("logs", "nope"), 1, "no job with id 'nope'")
    error_line(cli("show", "a b"), 2, "invalid job id")
    error_line(cli("logs", "²"), 2, "invalid job id")  # a digit to str.isdigit(), not to int()


def test_status_text_and_json(cli, db, populated):
    now = populated
    with db.begin() as conn:
        base = {"role": "worker", "pid_started": 0.0, "supervisor_id": "sup-1", "supervisor_pid": 4241, "job_pgid": None,
                "processed": 3, "failed": 1, "stop_request": None, "started_at": now, "last_heartbeat": now, "stopped_at": None}
        conn.execute(WORKERS.insert(), [
            dict(base, id="worker-busy", host="elsewhere.example", pid=4242, state="busy", job_id="2", queues="default,other"),
            dict(base, id="worker-gone", host="elsewhere.example", pid=4243, state="stopped", job_id=None, queues=None,
                 stopped_at=now - timedelta(hours=1)),
            dict(base, id="sup-1", role="supervisor", host="elsewhere.example", pid=4241, state="idle", job_id=None, queues=None),
        ])

    report = cli.json("status")
    assert set(report) == {"jobs", "pending", "next_scheduled", "queues", "unserved", "workers"}
    assert report["jobs"] == {"pending": 2, "running": 1, "failed": 1, "completed": 1, "dead": 1, "cancelled": 0, "blocked": 0}
    assert report["pending"] == {"ready": 1, "scheduled": 1}  # "nightly" is due in 2h
    default, other = report["queues"]
    shown = {k: v for k, v in default.items() if not k.startswith("oldest")}
    assert shown == {"queue": "default", "ready": 1, "scheduled": 0, "running": 1, "failed": 1, "dead": 1, "cancelled": 0, "paused": False,
                     "max_running": None}
    assert default["oldest_ready_at"] == populated.strftime("%Y-%m-%dT%H:%M:%S.000Z") and default["oldest_ready_age"] >= 0
    assert other == {"queue": "other", "ready": 0, "scheduled": 1, "running": 0, "failed": 0, "dead": 0, "cancelled": 0,
                     "oldest_ready_at": None, "oldest_ready_age": None, "paused": False, "max_running": None}
    assert report["unserved"] == []  # worker-busy takes default and other
    retry_at = (now + timedelta(hours=1, seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert report["next_scheduled"] == {"id": "4", "run_at": retry_at}
    [worker] = report["workers"]  # neither the supervisor nor a long-stopped worker
    assert (worker["id"], worker["host"], worker["pid"], worker["state"], worker["job_id"]) == ("worker-busy", "elsewhere.example", 4242, "busy", "2")
    assert (worker["processed"], worker["failed"], worker["queues"]) == (3, 1, ["default", "other"])

    lines = cli.ok("status").stdout.splitlines()
    assert lines[:12] == [
        "=== Queue Status ===",
        "Pending: 2",
        "  ready now: 1",
        "  scheduled later: 1",
        "Running: 1",
        "Failed: 1",
        "Completed: 1",
        "Dead (DLQ): 1",
        "Cancelled: 0",
        "Blocked: 0",
        f"Next Scheduled Job: 4 at {retry_at}",
        "",
    ]
    assert lines[12] == "=== Queues ==="
    assert lines[13].split() == ["QUEUE", "READY", "SCHEDULED", "RUNNING", "FAILED", "DEAD", "CANCELLED", "OLDEST_READY", "CONTROLS"]
    assert lines[14].split()[:7] == ["default", "1", "0", "1", "1", "1", "0"] and re.fullmatch(r"\d+s", lines[14].split()[7])
    assert lines[15].split() == ["other", "0", "1", "0", "0", "0", "0", "-", "-"]
    assert lines[16:18] == ["", "=== Workers ==="]
    assert lines[18].split() == ["WORKER", "HOST", "PID", "STATE", "JOB", "HEARTBEAT", "CPU", "RSS", "RAN", "FAILED", "QUEUES"]
    assert lines[19].split()[:5] == ["worker-busy", "elsewhere.example", "4242", "busy", "2"]
    assert lines[19].split()[-1] == "default,other"
    assert len(lines) == 20


def test_an_empty_queue(cli):
    assert cli.json("list") == []
    assert cli.json("status") == {
        "jobs": {"pending": 0, "running": 0, "failed": 0, "completed": 0, "dead": 0, "cancelled": 0, "blocked": 0},
        "pending": {"ready": 0, "scheduled": 0},
        "next_scheduled": None,
        "queues": [],
        "unserved": [],
        "workers": [],
    }
    text = cli.ok("status").stdout
    assert text.startswith("=== Queue Status ===\nPending: 0\n")
    assert ("\nDead (DLQ): 0\nCancelled: 0\nBlocked: 0\nNext Scheduled Job: none\n\n=== Queues ===\n"
            "no pending, running, failed, dead or cancelled jobs\n\n") in text
    assert text.endswith("=== Workers ===\nno workers running\n")


def test_ids_are_never_reused_after_a_purge(cli, db):
    assert [enqueue(db, f"exit {n}", max_retries=0) for n in range(3)] == ["1", "2", "3"]
    kill(db, "2")
    kill(db, "3")
    assert cli.ok("dlq", "purge", "--all").stdout == "purged 2 job(s): 2 3\n"
    assert cli.ok("enqueue", "true").stdout == "enqueued id=4 cmd=true\n"
    assert [j["id"] for j in cli.json("list")] == ["1", "4"]


def test_unusable_database_is_exit_1(tmp_path):
    # A directory is no SQLite file; nothing listens on port 1.
    error_line(Cli(str(tmp_path), tmp_path)("list"), 1, "database")
    error_line(Cli("postgresql+psycopg://nobody@127.0.0.1:1/none", tmp_path)("status"), 1, "database")


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("mysql://localhost/queue", "unsupported database 'mysql'"),
        ("postgresql+psycopg://me:secret@host:port/queue", "invalid database URL 'postgresql+psycopg://***@host:port/queue'"),
        ("postgresql+psycopg://me:sec/ret@secret@host:port/queue", "invalid database URL 'postgresql+psycopg://***@host:port/queue'"),
        ("postgresql+psycopg://me@[::1/queue", "invalid database URL"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite://", "in-memory"),
        ("/tmp/caf\udce9/queue.db", "not valid UTF-8"),
    ],
)
def test_a_database_setting_that_cannot_work_is_exit_2(tmp_path, url, fragment):
    line = error_line(Cli(url, tmp_path)("list"), 2, fragment)
    assert "secret" not in line
