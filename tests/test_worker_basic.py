"""A job runs to completion on a real supervisor: its output is captured, its
environment, working directory and stdin are what the runtime promises, and bad
commands fail gracefully without hurting the pool."""

import re

from worker_support import FAST, LONG, configure, epoch, job, job_in, processes_of, supervisors, wait_until, wait_workers  # noqa: F401  (fixture)


def test_job_completes_with_output_env_cwd_and_devnull_stdin(cli, db, supervisors, tmp_path):
    workdir = tmp_path / "job dir"  # a space, to be sure the cwd is passed whole
    workdir.mkdir()
    command = (
        'echo "id=$QUEUECTL_JOB_ID attempt=$QUEUECTL_ATTEMPT"; '
        'echo "cwd=$(pwd)"; '
        'echo "stdin=$(readlink /proc/$$/fd/0)"; '
        'echo "read=$(cat | wc -c)"; '
        "echo to-stderr >&2; "
        "touch made-here"
    )
    cli.ok("enqueue", "--id", "basic", "--cwd", workdir, command)

    sup = supervisors.start("--burst", "--concurrency", "1")
    assert sup.wait() == 0, sup.log()

    shown = cli.json("show", "basic")
    assert shown["state"] == "completed"
    assert shown["exit_code"] == 0
    assert shown["attempts"] == 0
    assert shown["last_error"] is None
    assert shown["worker_id"].startswith("w-")
    assert shown["started_at"] <= shown["finished_at"]
    assert shown["output"].splitlines() == [
        "id=basic attempt=1",
        f"cwd={workdir}",
        "stdin=/dev/null",
        "read=0",
        "to-stderr",
    ]
    assert (workdir / "made-here").exists()
    assert cli.ok("logs", "basic").stdout == shown["output"]


def test_attempt_number_counts_up_across_retries(cli, db, supervisors, tmp_path):
    configure(db, backoff_max=0)  # retry at once
    seen = tmp_path / "attempts.log"
    cli.ok("enqueue", "--id", "thrice", "--max-retries", "2", f'echo "$QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT" >> "{seen}"; [ "$QUEUECTL_ATTEMPT" = 3 ]')
    sup = supervisors.start("--burst")
    assert sup.wait() == 0, sup.log()
    assert seen.read_text().splitlines() == ["thrice 1", "thrice 2", "thrice 3"]
    shown = job(db, "thrice")
    assert (shown["state"], shown["attempts"], shown["last_error"]) == ("completed", 2, None)


def test_bad_commands_fail_gracefully_and_the_pool_keeps_working(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    gone = tmp_path / "gone"
    gone.mkdir()
    jobs_file = tmp_path / "bad.jobs"
    jobs_file.write_text(
        "\n".join(
            [
                '{"id": "notfound", "command": "no-such-command-qctl --flag"}',
                '{"id": "syntax", "command": "echo \\"unterminated"}',
                '{"id": "syntax2", "command": "if then fi"}',
                '{"id": "slow", "command": "sleep 30", "timeout": 1}',
                f'{{"id": "nocwd", "command": "true", "cwd": "{gone}"}}',
            ]
        )
        + "\n"
    )
    cli.ok("enqueue", "--max-retries", "0", "--file", jobs_file)
    gone.rmdir()  # the directory vanishes before the job runs

    sup = supervisors.start("--concurrency", "2")
    ids = ["notfound", "syntax", "syntax2", "slow", "nocwd"]
    wait_until(lambda: all(job_in(db, i, "dead") for i in ids), timeout=LONG, message="every bad job in the DLQ")

    dead = {row["id"]: row for row in cli.json("dlq", "list")}
    assert set(dead) == set(ids)
    for row in dead.values():
        assert row["attempts"] == 1 and row["state"] == "dead"

    assert dead["notfound"]["exit_code"] == 127
    assert "127" in dead["notfound"]["last_error"] and "not found" in dead["notfound"]["last_error"]
    assert "not found" in job(db, "notfound")["output"]  # listings leave outputs out

    for name in ("syntax", "syntax2"):
        assert dead[name]["exit_code"] == 2, dead[name]
        assert dead[name]["last_error"] == "exit code 2"
        assert "syntax error" in job(db, name)["output"].lower()

    slow = dead["slow"]
    assert "timed out" in slow["last_error"], slow
    assert slow["last_error"] == "timed out after 1s"
    assert slow["exit_code"] == 128 + 15  # SIGTERM ended it within the grace period
    # Killed at its timeout, not left to run its 30 seconds.

    assert 1.0 <= epoch(slow["finished_at"]) - epoch(slow["started_at"]) < 15
    assert processes_of(cli.db_url, ["sleep", "30"]) == []

    assert dead["nocwd"]["exit_code"] is None
    assert dead["nocwd"]["last_error"].startswith("cannot start the job in")

    # The same pool still runs good work.
    assert len(wait_workers(db, sup, 2)) == 2
    cli.ok("enqueue", "--id", "good", "echo still alive")
    wait_until(lambda: job_in(db, "good", "completed", "dead"), timeout=LONG, message="the good job to finish")
    good = cli.json("show", "good")
    assert (good["state"], good["output"]) == ("completed", "still alive\n")

    stop = cli("worker", "stop", timeout=LONG)
    assert stop.returncode == 0, stop.stderr
    assert sup.wait() == 0


def test_output_keeps_only_the_configured_tail(cli, db, supervisors):
    configure(db, output_limit=100)
    cli.ok("enqueue", "--id", "loud", "seq 1 1000")
    sup = supervisors.start("--burst")
    assert sup.wait() == 0, sup.log()
    out = job(db, "loud")["output"]
    assert len(out) == 100
    assert out.endswith("999\n1000\n")


def test_the_worker_log_has_a_line_per_job_start_and_end(cli, db, supervisors):
    """#12: a successful job leaves a trace on the worker's screen too, with its time."""
    configure(db, backoff_max=0)
    cli.ok("enqueue", "--id", "ok", "echo fine")
    cli.ok("enqueue", "--id", "bad", "--max-retries", "1", "exit 4")
    cli.ok("enqueue", "--id", "esc", "--max-retries", "0", "true \x1b[2J")
    sup = supervisors.start("--burst")
    assert sup.wait() == 0, sup.log()
    lines = [line.split(" INFO ", 1)[1] for line in sup.log().splitlines() if " INFO job " in line]
    assert "job ok started (attempt 1): echo fine" in lines
    assert any(re.fullmatch(r"job ok completed in \d+\.\d{3}s \(exit 0\)", line) for line in lines), lines
    assert any(re.fullmatch(r"job bad failed in \d+\.\d{3}s: exit code 4; now failed", line) for line in lines), lines
    assert "job bad started (attempt 2): exit 4" in lines
    assert any(re.fullmatch(r"job bad failed in \d+\.\d{3}s: exit code 4; now dead", line) for line in lines), lines
    assert "job esc started (attempt 1): true \\x1b[2J" in lines  # no raw escape reaches a terminal
    assert "\x1b" not in sup.log()
