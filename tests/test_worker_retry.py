"""A failing job is retried after the configured exponential backoff, lands in the
dead-letter queue once out of retries, and `dlq retry` gives it another run."""

from worker_support import LONG, configure, job, job_in, read_lines, supervisors, wait_until  # noqa: F401  (fixture)

# Slack above a computed retry time: claim latency (poll-interval, or up to one
# LISTEN slice on PostgreSQL) plus a loaded machine. Lower bounds are exact.
LATE = 4.0


def test_retries_back_off_exponentially_then_dead_letter_then_dlq_retry(cli, db, supervisors, tmp_path):
    # Through the real CLI: the values the workers read are what `config set` stored.
    cli.ok("config", "set", "backoff-base", "3")
    cli.ok("config", "set", "backoff-jitter", "0")
    side = tmp_path / "attempts.log"
    fixed = tmp_path / "fixed"
    command = f'echo "$QUEUECTL_ATTEMPT $(date +%s.%N)" >> "{side}"; echo "attempt $QUEUECTL_ATTEMPT"; [ -e "{fixed}" ] || exit 3'
    cli.ok("enqueue", "--id", "flaky", "--max-retries", "2", command)

    # --burst waits for a failed job's retry before it exits.
    sup = supervisors.start("--burst")
    assert sup.wait() == 0, sup.log()

    attempts = [line.split() for line in read_lines(side)]
    assert [a for a, _ in attempts] == ["1", "2", "3"]  # max_retries=2: three attempts
    t1, t2, t3 = (float(t) for _, t in attempts)
    # Delay before retry n is backoff-base ** (n - 1): 1 s, then 3 s (the default base 2 would give 2 s).
    assert 1.0 <= t2 - t1 < 1.0 + LATE, attempts
    assert 3.0 <= t3 - t2 < 3.0 + LATE, attempts

    dead = cli.json("dlq", "list")
    assert [d["id"] for d in dead] == ["flaky"]
    entry = dead[0]
    assert entry["state"] == "dead"
    assert entry["attempts"] == 3
    assert entry["exit_code"] == 3
    assert entry["last_error"] == "exit code 3"
    assert job(db, "flaky")["output"] == "attempt 3\n"  # listings leave outputs out
    assert cli.json("list", "--state", "dead")[0]["id"] == "flaky"
    assert cli.json("list", "--state", "pending") == []

    # Back from the DLQ with its attempts reset; this time the command succeeds.
    fixed.touch()
    assert "retried 1 job" in cli.ok("dlq", "retry", "flaky").stdout
    back = job(db, "flaky")
    assert (back["state"], back["attempts"]) == ("pending", 0)
    assert cli.json("dlq", "list") == []

    sup = supervisors.start("--burst")
    assert sup.wait() == 0, sup.log()
    assert [line.split()[0] for line in read_lines(side)] == ["1", "2", "3", "1"]
    done = cli.json("show", "flaky")
    assert (done["state"], done["attempts"], done["exit_code"], done["last_error"]) == ("completed", 0, 0, None)
    assert done["output"] == "attempt 1\n"


def test_retry_waits_in_failed_state_until_its_run_at(cli, db, supervisors, tmp_path):
    """Between attempts the job is 'failed' with run_at = finish + backoff, and no
    worker claims it early even though workers are idle."""
    configure(db, backoff_base=2, backoff_max=2.5, heartbeat_interval=0.2)
    side = tmp_path / "starts.log"
    cli.ok("enqueue", "--id", "twice", "--max-retries", "3", f'date +%s.%N >> "{side}"; [ "$QUEUECTL_ATTEMPT" = 4 ]')
    sup = supervisors.start("--concurrency", "2")

    final = wait_until(lambda: job_in(db, "twice", "completed", "dead"), timeout=LONG, message="the job to finish")
    assert final["state"] == "completed" and final["attempts"] == 3
    starts = [float(t) for t in read_lines(side)]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # 2 ** 0, 2 ** 1, then 2 ** 2 capped by backoff-max at 2.5.
    for gap, delay in zip(gaps, (1.0, 2.0, 2.5)):
        assert delay <= gap < delay + LATE, gaps
    assert cli("worker", "stop", timeout=LONG).returncode == 0
    assert sup.wait() == 0
