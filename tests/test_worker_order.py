"""What runs first: higher priority, then enqueue order; and not before run_at."""

from worker_support import FAST, LONG, configure, epoch, job_in, read_lines, supervisors, wait_until, wait_workers  # noqa: F401  (fixture)


def test_higher_priority_is_claimed_first_then_enqueue_order(cli, db, supervisors, tmp_path):
    side = tmp_path / "order.log"
    jobs_file = tmp_path / "jobs"
    # Enqueued low first, while no worker runs.
    specs = [("low-1", 0), ("low-2", 0), ("high", 10), ("negative", -3), ("mid", 5), ("high-2", 10)]
    jobs_file.write_text("".join(f'{{"id": "{name}", "priority": {prio}, "command": "echo {name} >> {side}"}}\n' for name, prio in specs))
    cli.ok("enqueue", "--file", jobs_file)

    sup = supervisors.start("--burst", "--concurrency", "1")
    assert sup.wait() == 0, sup.log()
    assert read_lines(side) == ["high", "high-2", "mid", "low-1", "low-2", "negative"]


def test_delayed_job_does_not_start_before_its_run_at(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    side = tmp_path / "when.log"
    sup = supervisors.start("--concurrency", "1")
    wait_workers(db, sup, 1)  # an idle worker is ready and polling

    later = cli.json("enqueue", "--id", "later", "--delay", "2s", f'date +%s.%N >> "{side}"')
    cli.ok("enqueue", "--id", "now", "echo now")
    run_at = epoch(later["run_at"])
    assert run_at - epoch(later["created_at"]) >= 2.0

    done = wait_until(lambda: job_in(db, "later", "completed", "dead"), timeout=LONG, message="the delayed job")
    assert done["state"] == "completed"
    ran_at = float(read_lines(side)[0])
    assert ran_at >= run_at
    assert epoch(done["started_at"]) >= run_at
    assert ran_at - run_at < 8.0  # and it does run once due (slack for a loaded machine)
    now = wait_until(lambda: job_in(db, "now", "completed", "dead"), timeout=LONG, message="the undelayed job")
    assert now["state"] == "completed"
    if epoch(now["created_at"]) < run_at:
        # Enqueued while the delayed job was not yet due (the usual case; a loaded
        # machine can make the CLI slower than 2 s): it runs first, not behind it.
        assert epoch(now["finished_at"]) <= epoch(done["started_at"])

    assert cli("worker", "stop", timeout=LONG).returncode == 0
    assert sup.wait() == 0
