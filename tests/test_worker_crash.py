"""Crash recovery with real processes: a worker or a supervisor is SIGKILLed in the
middle of a job, and no job is lost, run twice at once, or left running."""

import signal
import time

import psutil

from queuectl.states import LIVE_WORKER_STATES as LIVE
from queuectl.store import Store
from worker_support import (
    FAST,
    LONG,
    alive,
    all_jobs,
    configure,
    epoch,
    job,
    job_in,
    kill_all,
    live_workers,
    processes_of,
    read_lines,
    supervisors,  # noqa: F401  (fixture)
    wait_lines,
    wait_until,
    wait_workers,
    worker_rows,
)


def busy_row(db, sup_pid, job_id, with_pgid=True):
    """The live worker row of supervisor `sup_pid` that heartbeated holding `job_id`."""

    def find():
        for row in live_workers(db, sup_pid):
            if row.job_id == job_id and (row.job_pgid or not with_pgid):
                return row
        return None

    return wait_until(find, timeout=LONG, message=f"a worker row busy with job {job_id}")


def test_sigkilled_worker_loses_its_attempt_and_is_replaced(cli, db, supervisors, tmp_path):
    configure(db, **FAST, backoff_max=0.2)
    side = tmp_path / "attempts.log"
    go = tmp_path / "go"
    # Every attempt waits for `go`: the first is killed; the second is held until the
    # test has looked at the recovered row, so nothing depends on timing.
    cli.ok("enqueue", "--id", "victim", "--max-retries", "3",
           f'echo "$QUEUECTL_ATTEMPT" >> "{side}"; while [ ! -e "{go}" ]; do sleep 0.05; done; echo finished')
    sup = supervisors.start("--concurrency", "1")
    wait_lines(side, 1)
    busy_row(db, sup.pid, "victim")

    entry = next(w for w in cli.json("status")["workers"] if w["job_id"] == "victim")
    assert entry["state"] == "busy"
    worker = psutil.Process(entry["pid"])
    assert worker.ppid() == sup.pid
    job_procs = worker.children(recursive=True)
    assert job_procs, "the job's shell should be a child of the worker"

    worker.kill()

    assert wait_lines(side, 2) == ["1", "2"]
    retried = job(db, "victim")
    assert retried["state"] == "running"
    assert retried["attempts"] == 1
    assert retried["last_error"] == "worker lost"
    assert retried["worker_id"] != entry["id"]
    # Nothing of the first attempt survives its worker.
    wait_until(lambda: not any(alive(p) for p in job_procs), timeout=LONG, message="the killed attempt's processes to end")

    workers = {w["id"]: w for w in cli.json("status")["workers"]}
    assert workers[entry["id"]]["state"] == "dead"
    live = [w for w in workers.values() if w["state"] in ("idle", "busy", "stopping")]
    assert len(live) == 1, workers
    replacement = live[0]
    assert replacement["id"] == retried["worker_id"]
    assert replacement["pid"] != entry["pid"]
    assert psutil.Process(replacement["pid"]).ppid() == sup.pid

    go.touch()
    done = wait_until(lambda: job_in(db, "victim", "completed", "dead"), timeout=LONG, message="the retry to finish")
    assert (done["state"], done["attempts"], done["last_error"], done["output"]) == ("completed", 1, None, "finished\n")
    assert read_lines(side) == ["1", "2"]

    assert cli("worker", "stop", timeout=LONG).returncode == 0
    assert sup.wait() == 0


def test_a_jobs_background_processes_die_with_its_sigkilled_worker(cli, db, supervisors):
    configure(db, **FAST)
    cli.ok("enqueue", "--id", "forker", "--max-retries", "0", "sleep 300 & sleep 300")
    sup = supervisors.start("--concurrency", "1")
    sleepers = wait_until(lambda: (found := processes_of(cli.db_url, ["sleep", "300"])) and len(found) == 2 and found,
                          timeout=LONG, message="both sleeps to start")
    row = busy_row(db, sup.pid, "forker", with_pgid=False)
    worker = psutil.Process(row.pid)
    assert worker.ppid() == sup.pid
    assert all(p in worker.children(recursive=True) for p in sleepers)

    worker.kill()

    wait_until(lambda: not any(alive(p) for p in sleepers), timeout=LONG, message="the job's grandchildren to be killed")
    dead = wait_until(lambda: job_in(db, "forker", "dead"), timeout=LONG, message="the job to be charged")
    assert (dead["attempts"], dead["last_error"]) == (1, "worker lost")
    assert processes_of(cli.db_url, ["sleep", "300"]) == []
    wait_workers(db, sup, 1)  # and a replacement worker is running


def test_sigkilled_supervisor_lets_workers_finish_then_restart_completes_everything(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    done_log = tmp_path / "done.log"
    jobs_file = tmp_path / "jobs"
    good = ["a", "b", "c", "d"]
    lines = [f'{{"id": "{i}", "command": "sleep 1.7731; echo $QUEUECTL_JOB_ID >> {done_log}"}}' for i in good]
    lines.insert(1, '{"id": "bad", "command": "sleep 1.7731; exit 5", "max_retries": 0}')
    jobs_file.write_text("\n".join(lines) + "\n")
    cli.ok("enqueue", "--file", jobs_file)

    sup = supervisors.start("--concurrency", "2")
    running = wait_until(lambda: (rows := [j for j in all_jobs(db) if j["state"] == "running"]) and len(rows) == 2 and rows,
                         timeout=LONG, message="two running jobs")
    held = [j["id"] for j in running]
    workers = sup.children()
    assert len(workers) == 2

    sup.signal(signal.SIGKILL)
    assert sup.wait() == -signal.SIGKILL

    # Orphaned workers finish the job they hold, record it, and exit without taking more.
    wait_until(lambda: not any(alive(w) for w in workers), timeout=LONG, message="the orphaned workers to exit")
    after = {j["id"]: j for j in all_jobs(db)}
    for name in held:
        expected = ("dead", 1, "exit code 5") if name == "bad" else ("completed", 0, None)
        assert (after[name]["state"], after[name]["attempts"], after[name]["last_error"]) == expected
    assert not [j for j in after.values() if j["state"] == "running"]
    assert len([j for j in after.values() if j["state"] == "pending"]) >= 2  # the rest waited
    assert processes_of(cli.db_url, ["sleep", "1.7731"]) == []
    assert {r.state for r in worker_rows(db)} == {"stopped"}  # they deregistered themselves

    restarted = supervisors.start("--burst", "--concurrency", "2")
    assert restarted.wait() == 0, restarted.log()

    final = {j["id"]: j for j in all_jobs(db)}
    assert set(final) == set(good) | {"bad"}
    assert all(final[i]["state"] == "completed" and final[i]["attempts"] == 0 for i in good)
    assert (final["bad"]["state"], final["bad"]["attempts"], final["bad"]["last_error"]) == ("dead", 1, "exit code 5")
    assert not any(j["last_error"] == "worker lost" for j in final.values())
    assert sorted(read_lines(done_log)) == good  # each exactly once
    # The killed supervisor's row was declared dead by the new one.
    old = [r for r in worker_rows(db, role="supervisor") if r.pid == sup.pid]
    assert [r.state for r in old] == ["dead"]
    assert processes_of(cli.db_url) == []


def test_whole_tree_sigkilled_then_restart_recovers_jobs_and_kills_strays(cli, db, supervisors, tmp_path):
    configure(db, **FAST, backoff_max=0.2)
    side = tmp_path / "attempts.log"
    # On the first attempt `sleep 77.7` is a child of the shell, not exec'd: when the
    # worker dies the kernel kills the shell, but the sleep lives on as a stray.
    command = f'echo "$QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT" >> "{side}"; if [ "$QUEUECTL_ATTEMPT" = 1 ]; then sleep 77.7; fi; echo ok'
    for name in ("t1", "t2"):
        cli.ok("enqueue", "--id", name, "--max-retries", "2", command)
    sup = supervisors.start("--concurrency", "2")
    # Killed as soon as both jobs have started, typically before their first heartbeat
    # could put their process groups in the database: the groups are found through
    # the workers' files in the runtime directory (queuectl/worker/jobgroup.py).
    wait_lines(side, 2)
    workers = sup.children()
    assert len(workers) == 2

    # The supervisor and its workers at once (not the jobs): no one left to clean up.
    kill_all([psutil.Process(sup.pid)] + workers)
    sup.wait()
    strays = wait_until(
        lambda: (found := processes_of(cli.db_url, ["sleep", "77.7"])) and len(found) == 2 and found,
        timeout=LONG,
        message="the scenario to leave orphaned job processes",
    )

    restarted = supervisors.start("--burst", "--concurrency", "2")
    assert restarted.wait() == 0, restarted.log()

    for name in ("t1", "t2"):
        row = job(db, name)
        assert (row["state"], row["attempts"], row["output"]) == ("completed", 1, "ok\n"), row
    assert sorted(read_lines(side)) == ["t1 1", "t1 2", "t2 1", "t2 2"]
    # The restarted supervisor killed the dead workers' job groups (long before the
    # 77.7 s sleeps would have ended by themselves).
    assert not any(alive(p) for p in strays)
    assert processes_of(cli.db_url) == []
    dead_rows = [r for r in worker_rows(db) if r.supervisor_pid == sup.pid]
    assert sorted(r.state for r in dead_rows) == ["dead", "dead"]
    assert "declared worker" in restarted.log()


def test_other_hosts_dead_worker_is_recovered_within_heartbeat_timeout(cli, db, supervisors, tmp_path):
    interval, timeout = 0.2, 1.5
    configure(db, heartbeat_interval=interval, heartbeat_timeout=timeout, backoff_max=0.2, poll_interval=0.05)
    side = tmp_path / "attempts.log"
    cli.ok("enqueue", "--id", "remote", "--max-retries", "2",
           f'echo "$QUEUECTL_ATTEMPT $(hostname)" >> "{side}"; [ "$QUEUECTL_ATTEMPT" -gt 1 ] || exec sleep 60')

    host_a = supervisors.start("--concurrency", "1", hostname="hostA")
    wait_lines(side, 1)
    row_a = busy_row(db, host_a.pid, "remote")
    assert row_a.host == "hostA"
    host_b = supervisors.start("--concurrency", "1", hostname="hostB")
    wait_workers(db, host_b, 1)
    # While A is alive and heartbeating, B leaves its rows alone.
    assert job(db, "remote")["worker_id"] == row_a.id

    killed_at = time.time()
    kill_all([psutil.Process(host_a.pid)] + host_a.children())
    host_a.wait()

    def a_declared_dead():
        rows = [r for r in worker_rows(db) if r.id == row_a.id and r.state == "dead"]
        return rows[0] if rows else None

    dead = wait_until(a_declared_dead, timeout=LONG, interval=0.05, message="hostB to declare hostA's worker dead")
    delay = dead.stopped_at.timestamp() - killed_at
    print(f"hostB recovered hostA's job {delay:.2f}s after the kill (heartbeat-timeout {timeout}s, interval {interval}s)")
    # Never before the heartbeat really went stale...
    assert (dead.stopped_at - dead.last_heartbeat).total_seconds() >= timeout
    # ...and at worst one reaper period after it did (plus slack for a loaded machine).
    assert delay <= timeout + interval + 1.0, delay

    done = wait_until(lambda: job_in(db, "remote", "completed", "dead"), timeout=LONG, message="the job to complete on hostB")
    assert (done["state"], done["attempts"]) == ("completed", 1)
    assert done["worker_id"] in {r.id for r in live_workers(db, host_b.pid)}
    assert [line.split()[0] for line in read_lines(side)] == ["1", "2"]
    supervisor_a = [r for r in worker_rows(db, role="supervisor") if r.host == "hostA"]
    wait_until(lambda: all(r.state == "dead" for r in worker_rows(db, role="supervisor") if r.host == "hostA"),
               timeout=LONG, message="hostA's supervisor row to be declared dead")
    assert len(supervisor_a) == 1
    assert epoch(done["finished_at"]) >= killed_at


def test_a_supervisor_declared_dead_by_another_host_stops_itself(cli, db, supervisors, tmp_path):
    """A supervisor that was silent longer than heartbeat-timeout (frozen, cut off) has
    been declared dead and its jobs recovered elsewhere. When it comes back it must not
    go on claiming jobs unseen by `worker stop` (which lists live rows only): its next
    heartbeat tells it, and it stops at once, its running job killed."""
    configure(db, **FAST)
    side = tmp_path / "started"
    cli.ok("enqueue", "--id", "long", f"echo x >> {side}; sleep 300")
    sup = supervisors.start("--hostname", "host-a")
    wait_lines(side, 1)
    (row,) = [r for r in worker_rows(db, role="supervisor") if r.host == "host-a" and r.state in LIVE]
    # What another host's reaper does to a supervisor whose heartbeat went stale.
    assert Store(db).declare_dead(row.id, silent_since=None, cfg=Store(db).config()) == []
    assert sup.wait(timeout=LONG) == 1, sup.log()
    assert "was declared dead" in sup.log()
    assert not processes_of(cli.db_url, ["sleep", "300"])
