"""`queuectl enqueue`: every way to add a job, and every way to get it wrong.

Validation happens before the database is touched, so the bad-input cases run on
SQLite only; everything that depends on the database runs on every backend.
"""

import json
import os
import shlex
import subprocess
from datetime import datetime, timedelta

import pytest

from conftest import env_for
from queuectl.store import config as settings
from queuectl.store import jobs as jobs_api
from queuectl.store import open_database
from support import all_ids, config_value, dead_row, enqueue, error_line, job_row, kill, usage_error

JOB_KEYS = {
    "id", "command", "state", "attempts", "max_retries", "priority", "queue", "run_at", "timeout", "cwd",
    "created_at", "updated_at", "started_at", "finished_at", "exit_code", "last_error", "output", "worker_id", "cancel_requested_at", "unique_key",
    "output_size", "runs", "has_dependents", "schedule",
}


def parse_iso(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00")




# --- happy paths -----------------------------------------------------------------------


def test_shell_command_string(cli, tmp_path):
    result = cli.ok("enqueue", "echo 'a b' && exit 3")
    assert result.stdout == "enqueued id=1 cmd=echo 'a b' && exit 3\n"
    assert result.stderr == ""

    job = cli.json("show", "1")
    assert set(job) == JOB_KEYS | {"history", "dependencies", "dependents"}
    assert (job["runs"], job["history"], job["output_size"]) == (0, [], None)
    assert job["command"] == "echo 'a b' && exit 3"
    assert (job["state"], job["attempts"], job["max_retries"], job["priority"], job["queue"]) == ("pending", 0, 3, 0, "default")
    assert job["timeout"] is None
    assert job["cwd"] == os.path.realpath(tmp_path)  # the directory enqueue ran in
    assert job["run_at"] == job["created_at"] == job["updated_at"]
    parse_iso(job["run_at"])
    for key in ("started_at", "finished_at", "exit_code", "last_error", "output", "worker_id"):
        assert job[key] is None, key


def test_several_words_are_joined_with_shell_quoting(cli, tmp_path):
    words = ["printf", "%s|", "a b", "it's", "$HOME", ""]
    result = cli.ok("enqueue", "--", *words)
    command = shlex.join(words)
    assert result.stdout == f"enqueued id=1 cmd={command}\n"
    # The shell gets the very words back.
    ran = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    assert ran.stdout == "a b|it's|$HOME||"


def test_every_flag(cli, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    job = cli.json(
        "enqueue", "--id", "nightly.backup:v1-2_x", "--max-retries", "5", "--priority", "-7", "--delay", "5m",
        "--timeout", "2h", "--queue", "reports", "--cwd", workdir, "make report",
    )
    assert job["id"] == "nightly.backup:v1-2_x"
    assert job["command"] == "make report"
    assert (job["max_retries"], job["priority"], job["queue"], job["timeout"]) == (5, -7, "reports", 7200.0)
    assert job["cwd"] == str(workdir)
    assert parse_iso(job["run_at"]) - parse_iso(job["created_at"]) == timedelta(minutes=5)

    # --retries is an alias; --run-at takes an offset and stores UTC.
    job = cli.json("enqueue", "--retries", "0", "--run-at", "2030-01-01T02:00:00+02:00", "--id", "x" * 128, "true")
    assert (job["id"], job["max_retries"], job["run_at"]) == ("x" * 128, 0, "2030-01-01T00:00:00.000Z")


def test_json_spec(cli, tmp_path):
    spec = {
        "id": "spec-1", "command": "echo from spec", "max_retries": 0, "priority": 4,
        "run_at": "2031-05-06T07:08:09", "timeout": "90s", "queue": "q1", "cwd": str(tmp_path),
    }
    job = cli.json("enqueue", json.dumps(spec))
    assert (job["id"], job["command"]) == ("spec-1", "echo from spec")
    assert job["run_at"] == "2031-05-06T07:08:09.000Z"  # no offset: UTC
    assert (job["max_retries"], job["priority"], job["timeout"], job["queue"]) == (0, 4, 90.0, "q1")

    # Flags fill what the spec leaves out; the spec's own keys win (its run_at beats --delay).
    job = cli.json(
        "enqueue", "--priority", "9", "--queue", "fromflag", "--delay", "1h",
        '  {"command": "x", "queue": "fromspec", "run_at": "2030-01-01T00:00:00Z", "delay": null}',
    )
    assert (job["priority"], job["queue"], job["run_at"]) == (9, "fromspec", "2030-01-01T00:00:00.000Z")
    # Only "command" is required; the defaults apply.
    job = cli.json("enqueue", '{"command": "only a command", "delay": 90}')
    assert (job["max_retries"], job["priority"], job["queue"]) == (3, 0, "default")
    assert job["id"].isdigit()
    assert parse_iso(job["run_at"]) - parse_iso(job["created_at"]) == timedelta(seconds=90)


def test_durations(cli):
    lines = [{"command": "true", "timeout": t} for t in ("90", "90s", "5m", "2h", "1d", 90, "1.5m", " 5M ")]
    result = cli.ok("enqueue", "--file", "-", "--json", input="\n".join(json.dumps(line) for line in lines) + "\n")
    assert [job["timeout"] for job in json.loads(result.stdout)] == [90.0, 90.0, 300.0, 7200.0, 86400.0, 90.0, 90.0, 300.0]


def test_timeout_zero_means_none_even_with_a_configured_default(cli, db):
    with db.begin() as conn:
        settings.set_value(conn, "job-timeout", "5m")
        settings.set_value(conn, "max-retries", "7")
    assert cli.json("enqueue", "true")["timeout"] == 300.0
    job = cli.json("enqueue", "--timeout", "0", "true")
    assert job["timeout"] is None
    assert job["max_retries"] == 7


def test_unnamed_ids_count_up_and_failures_take_none(cli, db):
    assert cli.ok("enqueue", "true").stdout.startswith("enqueued id=1 ")
    assert cli.ok("enqueue", "true").stdout.startswith("enqueued id=2 ")
    twins = '{"command": "a", "id": "twin"}\n{"command": "b", "id": "twin"}\n'
    error_line(cli("enqueue", "--file", "-", input=twins), 1, "<stdin>: line 2: job id 'twin' appears more than once")
    error_line(cli("enqueue", "--priority", "x", "true"), 2)
    assert cli.ok("enqueue", "true").stdout.startswith("enqueued id=3 ")
    assert all_ids(db) == ["1", "2", "3"]


def test_db_flag_wins_over_the_environment(scli, sqlite_db, tmp_path):
    other = tmp_path / "other" / "queue.db"
    other.parent.mkdir()  # a --db directory that does not exist is refused (#12)
    scli.ok("--db", other, "enqueue", "echo elsewhere")
    assert all_ids(sqlite_db) == []
    elsewhere = open_database(str(other))
    try:
        assert [j.command for j in jobs_api.listing(elsewhere)] == ["echo elsewhere"]
    finally:
        elsewhere.dispose()


def test_an_empty_db_flag_is_refused_but_an_empty_environment_variable_is_unset(scli, sqlite_db, tmp_path):
    error_line(scli("--db", "", "enqueue", "true"), 2, "--db is empty")
    error_line(scli("--db", " ", "status"), 2, "--db is empty")
    assert all_ids(sqlite_db) == []
    home = tmp_path / "xdg"
    env = env_for(scli.db_url)
    env.update(QUEUECTL_DB="", XDG_DATA_HOME=str(home))
    scli.ok("enqueue", "echo default", env=env)
    fallback = open_database(str(home / "queuectl" / "queue.db"))
    try:
        assert [j.command for j in jobs_api.listing(fallback)] == ["echo default"]
    finally:
        fallback.dispose()


# --- duplicates --------------------------------------------------------------------------


def test_duplicate_id_of_a_live_or_dead_job(cli, db):
    enqueue(db, "echo original", id="dup", priority=1)
    enqueue(db, "echo dead one", id="gone", max_retries=0)
    kill(db, "gone")
    seq_before = config_value(db, "_seq")

    error_line(cli("enqueue", "--id", "dup", "echo other"), 1, "'dup'", "already exists")
    error_line(cli("enqueue", '{"id": "gone", "command": "echo other"}'), 1, "'gone'", "already exists")

    live = job_row(db, "dup")
    assert (live.command, live.priority, live.state) == ("echo original", 1, "pending")
    dead = dead_row(db, "gone")
    assert (dead.command, dead.last_error) == ("echo dead one", "exit code 3")
    assert job_row(db, "gone") is None
    assert all_ids(db) == ["dup", "gone"]
    assert config_value(db, "_seq") == seq_before


# --- --file ------------------------------------------------------------------------------


def test_file_is_all_or_nothing(cli, db, tmp_path):
    path = tmp_path / "jobs.txt"
    good = [
        "# nightly batch",
        "echo one",
        "",
        '{"command": "echo two", "id": "two"}',
        "   echo three   ",
        '{"command": "echo four", "priority": 8, "queue": "other"}',
    ]
    path.write_text("\n".join(good + ['{"command": "echo five", "bogus": 1}', "echo six"]) + "\n")
    error_line(cli("enqueue", "--file", path), 2, "line 7", "bogus")
    assert all_ids(db) == []

    path.write_text("\n".join(good) + "\r\n")
    jobs = json.loads(cli.ok("enqueue", "--file", path, "--queue", "batch", "--priority", "2", "--json").stdout)
    assert [j["command"] for j in jobs] == ["echo one", "echo two", "echo three", "echo four"]
    assert [j["queue"] for j in jobs] == ["batch", "batch", "batch", "other"]
    assert [j["priority"] for j in jobs] == [2, 2, 2, 8]
    assert jobs[1]["id"] == "two"
    ids = all_ids(db)
    assert ids == [j["id"] for j in jobs] and len(set(ids)) == 4

    # The same file again: "two" exists, so nothing at all is added.
    error_line(cli("enqueue", "--file", path), 1, f"{path}: line 4: a job with id 'two' already exists")
    assert all_ids(db) == ids


def test_file_from_stdin(cli, db, tmp_path):
    result = cli.ok("enqueue", "--file", "-", input='echo a\n{"command": "echo b", "priority": 5}\n')
    assert result.stdout == "enqueued 2 jobs (ids 1..2)\n"
    assert [(j.command, j.priority) for j in jobs_api.listing(db)] == [("echo a", 0), ("echo b", 5)]

    error_line(cli("enqueue", "-f", "-", input='echo c\n{"command": ""}\n'), 2, "<stdin>: line 2", "empty")
    error_line(cli("enqueue", "--file", "-", input="echo ok\necho a\x00b\n"), 2, "line 2", "NUL byte")
    # no jobs in it: nothing to do, no failure (#12)
    assert cli.ok("enqueue", "--file", "-", input="\n# only a comment\n").stdout == "no jobs\n"
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"echo ok\necho caf\xe9\n")
    error_line(cli("enqueue", "--file", latin1), 2, "line 2: not valid UTF-8")
    assert all_ids(db) == ["1", "2"]


# --- bad input -----------------------------------------------------------------------------

BAD_INPUT = {
    "bad JSON": (['{"command": "echo"'], "invalid JSON job spec"),
    "JSON with trailing text": (['{"command": "echo"} and more'], "invalid JSON job spec"),
    "JSON without command": (["{}"], '"command"'),
    "command not a string": (['{"command": ["ls", "-l"]}'], "must be a string, not an array"),
    "null JSON command": (['{"command": null}'], "must be a string, not null"),
    "undecodable byte in the command": (["echo caf\udce9"], "not valid UTF-8"),
    "lone surrogate in a JSON command": (['{"command": "echo \\ud800"}'], "not valid UTF-8"),
    "no command": ([], "empty"),
    "empty command": ([""], "empty"),
    "blank command": (["  \t "], "empty"),
    "empty JSON command": (['{"command": "  "}'], "empty"),
    "unknown key": (['{"command": "true", "retries": 2}'], "unknown key(s) in job spec: retries (valid: id, command,"),
    "negative retries": (["--max-retries", "-1", "true"], "invalid max_retries '-1'"),
    "negative retries alias": (["--retries=-1", "true"], "invalid max_retries"),
    "negative JSON retries": (['{"command": "true", "max_retries": -1}'], "invalid max_retries -1"),
    "boolean JSON retries": (['{"command": "true", "max_retries": true}'], "invalid max_retries True"),
    "too many retries": (["--retries", "1001", "true"], "invalid max_retries"),
    "word priority": (["--priority", "high", "true"], "invalid priority 'high'"),
    "bad delay": (["--delay", "5x", "true"], "invalid delay '5x'"),
    "week delay": (["--delay", "1w", "true"], "invalid delay"),
    "negative timeout": (["--timeout=-5", "true"], "invalid timeout"),
    "bad JSON delay": (['{"command": "true", "delay": "soon"}'], "invalid delay"),
    "JSON delay beyond any float": (['{"command": "true", "delay": 1%s}' % ("0" * 400)], "invalid delay"),
    "bad timestamp": (["--run-at", "tomorrow", "true"], "invalid timestamp 'tomorrow'"),
    "impossible date": (["--run-at", "2030-02-30T00:00:00Z", "true"], "invalid timestamp"),
    "numeric JSON timestamp": (['{"command": "true", "run_at": 1893456000}'], "invalid timestamp"),
    "JSON delay and run_at": (['{"command": "true", "delay": "5m", "run_at": "2030-01-01T00:00:00Z"}'], "not both"),
    "all-digit id": (["--id", "123", "true"], "invalid job id '123'"),
    "id with a space": (["--id", "a b", "true"], "invalid job id"),
    "id with a slash": (["--id", "a/b", "true"], "invalid job id"),
    "empty id": (["--id=", "true"], "invalid job id ''"),
    "too long id": (["--id", "x" * 129, "true"], "invalid job id"),
    "numeric JSON id": (['{"command": "true", "id": 7}'], "invalid job id 7"),
    "bad queue": (["--queue", "my queue", "true"], "invalid queue name"),
    "missing cwd": (["--cwd", "/nonexistent/queuectl-dir", "true"], "does not exist"),
    "cwd is a file": (["--cwd", "/etc/hostname", "true"], "is not a directory"),
    "NUL byte": (['{"command": "echo a\\u0000b"}'], "NUL byte"),
    "unreadable file": (["--file", "/nonexistent/jobs.txt"], "cannot read /nonexistent/jobs.txt"),
    "file and command": (["--file", "-", "true"], "not both"),
    "file and id": (["--file", "-", "--id", "x"], "--id"),
}


@pytest.mark.parametrize("args, fragment", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_line_exit_2_and_writes_nothing(scli, sqlite_db, args, fragment):
    existing = enqueue(sqlite_db, "echo before")
    seq_before = config_value(sqlite_db, "_seq")
    error_line(scli("enqueue", *args, input=""), 2, fragment)
    assert all_ids(sqlite_db) == [existing]
    assert config_value(sqlite_db, "_seq") == seq_before


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--delay", "5m", "--run-at", "2030-01-01T00:00:00Z", "true"], "not allowed with argument"),
        (["--bogus", "true"], "unrecognized arguments: --bogus"),
    ],
    ids=["delay and run-at", "unknown flag"],
)
def test_usage_errors(scli, sqlite_db, args, fragment):
    usage_error(scli("enqueue", *args), fragment)
    assert all_ids(sqlite_db) == []


def test_a_directory_name_that_is_not_utf8_is_refused(scli, sqlite_db, tmp_path):
    latin1 = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9"))
    os.mkdir(latin1)
    error_line(scli("enqueue", "--cwd", latin1, "true"), 2, "working directory", "not valid UTF-8")
    error_line(scli("enqueue", "true", cwd=os.fsencode(latin1)), 2, "working directory", "not valid UTF-8")  # the default cwd
    assert all_ids(sqlite_db) == []


def test_json_spec_must_be_an_object():
    # On the command line a spec starts with '{', so only the library can be handed
    # another JSON value; it is refused the same way.
    from queuectl import jobspec
    from queuectl.errors import ValidationError

    for text in ("[1]", '"true"', "3", "null"):
        with pytest.raises(ValidationError, match="must be an object"):
            jobspec.from_json(text)
