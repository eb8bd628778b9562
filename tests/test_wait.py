"""`queuectl wait` and `enqueue --wait` (#12): block until jobs finish; exit 0 when all
completed, 3 when any ended dead or cancelled, 124 on --timeout; see a job's end
within about 100 ms (a 50 ms poll)."""

import re
import subprocess
import time

from conftest import wait_until
from support import error_line
from worker_support import (
    FAST,
    LONG,
    configure,
    supervisors,  # noqa: F401  (fixture)
    )


def test_wait_exit_codes_and_what_it_says(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    cli.ok("enqueue", "--id", "slow", "sleep 0.5")
    cli.ok("enqueue", "--id", "bad", "--max-retries", "0", "exit 2")
    supervisors.start("--concurrency", "2")
    result = cli("wait", "slow", "bad", timeout=LONG)
    assert result.returncode == 3, result
    assert result.stdout == "1 of 2 job(s) completed\n"
    assert result.stderr == "queuectl: job bad ended dead: exit code 2\n"
    assert cli.json("wait", "slow", "--json") == [{"id": "slow", "state": "completed", "exit_code": 0, "last_error": None}]
    assert cli.ok("wait", "slow").stdout == "1 of 1 job(s) completed\n"
    error_line(cli("wait", "nope"), 1, "no job with id 'nope'")
    error_line(cli("wait", "slow", "--queue", "default"), 2, "not both")
    error_line(cli("wait", "--timeout", "soon"), 2, "soon")


def test_wait_without_ids_waits_for_what_is_unfinished_when_it_starts(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    for n in range(5):
        cli.ok("enqueue", "--id", f"j{n}", "--queue", "q", f"sleep 0.{n}")
    cli.ok("enqueue", "--id", "other", "--queue", "elsewhere", "sleep 300")
    supervisors.start("--concurrency", "2", "--queue", "q")
    # However many were still unfinished when it started, it returns once they all are.
    said = cli.ok("wait", "--queue", "q", timeout=LONG).stdout
    assert re.fullmatch(r"(\d) of \1 job\(s\) completed\n", said), said
    assert [r["state"] for r in cli.json("list", "--queue", "q")] == ["completed"] * 5
    assert [r["state"] for r in cli.json("list", "--queue", "elsewhere")] in (["pending"], ["running"])
    assert cli.ok("wait", "--queue", "nothing-here").stdout == "0 of 0 job(s) completed\n"


def test_wait_times_out_with_124(cli, db):
    cli.ok("enqueue", "--id", "never-run", "true")  # no worker
    start = time.monotonic()
    result = cli("wait", "never-run", "--timeout", "0.5")
    assert time.monotonic() - start < 20
    error_line(result, 124, "timed out after 0.5s", "never-run")


def test_wait_sees_the_end_within_a_fraction_of_a_second(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    gate = tmp_path / "gate"
    cli.ok("enqueue", "--id", "gated", f"while [ ! -e {gate} ]; do sleep 0.01; done")
    supervisors.start()
    waiter = cli.spawn("wait", "gated", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: db_state(db, "gated") == "running", timeout=LONG, message="the job to start")
        time.sleep(0.3)  # let `wait` settle into its poll (a pause, not a wait for a condition)
        gate.touch()
        wait_until(lambda: db_state(db, "gated") == "completed", timeout=LONG, message="the job to end")
        ended_at = time.monotonic()
        out, _ = waiter.communicate(timeout=LONG)
        returned_after = time.monotonic() - ended_at
    finally:
        waiter.kill()
    assert out == "1 of 1 job(s) completed\n"
    # 50 ms poll; generous for a loaded machine (the figure is printed for the note).
    print(f"wait returned {returned_after * 1000:.0f} ms after the job was seen completed")
    assert returned_after < 5


def db_state(db, job_id):
    from support import job_row

    row = job_row(db, job_id)
    return row.state if row is not None else None


def test_enqueue_wait_prints_the_output_and_exits_with_the_jobs_code(cli, db, supervisors):
    configure(db, **FAST)
    supervisors.start()
    ok = cli("enqueue", "--wait", "echo hello; echo to-stderr >&2", timeout=LONG)
    assert (ok.returncode, ok.stdout) == (0, "hello\nto-stderr\n"), ok
    assert ok.stderr.startswith("enqueued id=")
    bad = cli("enqueue", "--wait", "--max-retries", "0", "echo partial; exit 7", timeout=LONG)
    assert (bad.returncode, bad.stdout) == (7, "partial\n"), bad
    assert "ended dead: exit code 7" in bad.stderr
    error_line(cli("enqueue", "--wait", "--json", "true"), 2, "--wait takes one job")
