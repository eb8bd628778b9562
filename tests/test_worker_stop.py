"""Stopping workers: `worker stop` (graceful or --now) from another process, Ctrl-C
once or twice, and a detached supervisor."""

import ctypes
import os
import re
import signal
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import psutil

from queuectl.states import LIVE_WORKER_STATES as LIVE
from queuectl.timeutil import utcnow
from worker_support import (
    FAST,
    LONG,
    alive,
    configure,
    epoch,
    job,
    job_in,
    kill_all,
    live_workers,
    processes_of,
    read_lines,
    supervisors,  # noqa: F401  (fixture)
    wait_until,
    wait_workers,
    worker_rows,
)


def running(db, job_id):
    return wait_until(lambda: job_in(db, job_id, "running"), timeout=LONG, message=f"job {job_id} to be running")


def live_in_status(cli):
    workers = cli.json("status")["workers"]
    return [w for w in workers if w["state"] in LIVE]


def test_stop_lets_the_running_job_finish(cli, db, supervisors):
    configure(db, **FAST)
    cli.ok("enqueue", "--id", "slow", "sleep 2; echo slept")
    sup = supervisors.start("--concurrency", "1")
    running(db, "slow")

    stop = cli("worker", "stop", timeout=LONG)  # returns once the supervisor is gone
    assert stop.returncode == 0, stop.stderr
    assert "all stopped" in stop.stdout
    assert sup.wait(timeout=5) == 0

    row = job(db, "slow")
    assert (row["state"], row["attempts"], row["output"]) == ("completed", 0, "slept\n")
    assert epoch(row["finished_at"]) - epoch(row["started_at"]) >= 2.0
    assert live_in_status(cli) == []


def test_stop_twice_is_still_graceful(cli, db, supervisors, tmp_path):
    """A repeated `worker stop` (SIGTERM again) must not turn into --now."""
    configure(db, **FAST)
    go = tmp_path / "go"
    cli.ok("enqueue", "--id", "held", f'while [ ! -e "{go}" ]; do sleep 0.05; done; echo finished')
    sup = supervisors.start("--concurrency", "1")
    running(db, "held")
    for _ in range(2):
        assert cli("worker", "stop", "--no-wait").returncode == 0

    # Give the signals time to act, measured in heartbeats rather than guessed: the
    # supervisor forwards a stop right after a heartbeat, and a busy worker checks
    # for "stop now" before each of its own.
    sent = utcnow()
    wait_until(lambda: all(r.last_heartbeat > sent or r.state not in LIVE for r in worker_rows(db, role="supervisor")),
               timeout=LONG, message="a supervisor heartbeat")
    seen = utcnow() + timedelta(seconds=0.3)
    wait_until(lambda: all(r.last_heartbeat > seen or r.state not in LIVE for r in worker_rows(db)), timeout=LONG, message="worker heartbeats")

    assert job(db, "held")["state"] == "running"  # not killed
    go.touch()
    assert sup.wait() == 0
    row = job(db, "held")
    assert (row["state"], row["attempts"], row["output"]) == ("completed", 0, "finished\n")


def test_stop_now_kills_the_job_and_requeues_it_unrun(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    side = tmp_path / "attempts.log"
    quick = tmp_path / "quick"
    cli.ok("enqueue", "--id", "long", f'echo "$QUEUECTL_ATTEMPT" >> "{side}"; [ -e "{quick}" ] || sleep 30; echo finished')
    sup = supervisors.start("--concurrency", "1")
    running(db, "long")
    wait_until(lambda: processes_of(cli.db_url, ["sleep", "30"]), timeout=LONG, message="the sleep to start")

    started = time.monotonic()
    stop = cli("worker", "stop", "--now", timeout=LONG)
    assert stop.returncode == 0, stop.stderr
    assert sup.wait(timeout=10) == 0
    assert time.monotonic() - started < 20  # not after the 30 s job

    row = job(db, "long")
    assert (row["state"], row["attempts"], row["worker_id"], row["started_at"]) == ("pending", 0, None, None)
    assert processes_of(cli.db_url, ["sleep", "30"]) == []
    assert live_in_status(cli) == []

    # It was given back unrun: the next run is attempt 1 again, and it completes.
    quick.touch()
    again = supervisors.start("--burst")
    assert again.wait() == 0, again.log()
    assert read_lines(side) == ["1", "1"]
    row = job(db, "long")
    assert (row["state"], row["attempts"], row["output"]) == ("completed", 0, "finished\n")


def test_a_stop_signal_taken_by_another_thread_of_a_worker_still_stops_it(cli, db, supervisors, tmp_path):
    # The kernel gives a signal sent to a process to any of its threads that does not
    # block it; Python runs the handler only on the main thread, which a worker parks
    # in a wait for its slots' threads. Taken by another thread, the stop waited for a
    # slot's thread to end: in the chaos soak (tests/soak.py --seed 101) a worker went
    # on claiming jobs for 2.5 minutes after its supervisor's "stop now", until the
    # supervisor was killed. Here the signal goes to another thread on purpose.
    configure(db, **FAST)
    go = tmp_path / "go"
    for name in ("a", "b"):
        cli.ok("enqueue", "--id", name, f'while [ ! -e "{go}" ]; do sleep 0.05; done')
    sup = supervisors.start("--concurrency", "2", "--processes", "1")
    running(db, "a")
    running(db, "b")
    [worker] = sup.children()
    others = sorted(int(task.name) for task in Path(f"/proc/{worker.pid}/task").iterdir() if int(task.name) != worker.pid)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.tgkill(worker.pid, others[-1], signal.SIGUSR1) == 0, os.strerror(ctypes.get_errno())
    try:
        wait_until(lambda: not alive(worker), timeout=10, message=f"worker {worker.pid} to stop now")
    finally:
        go.touch()
    log = sup.log()
    assert "job a given back unrun" in log and "job b given back unrun" in log, log


def test_stop_with_no_supervisor_running_says_so(cli, db, supervisors):
    stop = cli("worker", "stop")
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.strip() == "no supervisors are running"

    # A supervisor that crashed leaves a row that still looks live; nothing runs, though.
    configure(db, **FAST)
    sup = supervisors.start("--concurrency", "1")
    wait_workers(db, sup, 1)
    kill_all([psutil.Process(sup.pid)] + sup.children())
    sup.wait()
    stop = cli("worker", "stop", timeout=LONG)
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.strip() == "no supervisors are running"


def test_sigint_once_is_graceful(cli, db, supervisors):
    configure(db, **FAST)
    cli.ok("enqueue", "--id", "slow", "sleep 2; echo slept")
    sup = supervisors.start("--concurrency", "2")
    running(db, "slow")
    sup.signal(signal.SIGINT)
    assert sup.wait() == 0
    row = job(db, "slow")
    assert (row["state"], row["attempts"], row["output"]) == ("completed", 0, "slept\n")
    assert "after running jobs finish" in sup.log()
    assert all(r.state == "stopped" for r in worker_rows(db))


def test_sigint_twice_stops_at_once_and_requeues(cli, db, supervisors):
    configure(db, **FAST)
    cli.ok("enqueue", "--id", "long", "sleep 30")
    sup = supervisors.start("--concurrency", "1")
    running(db, "long")
    wait_until(lambda: processes_of(cli.db_url, ["sleep", "30"]), timeout=LONG, message="the sleep to start")

    started = time.monotonic()
    sup.signal(signal.SIGINT)
    # Signals do not queue: wait until the first one was handled (the supervisor
    # heartbeats as 'stopping') before sending the second.
    wait_until(lambda: any(r.state == "stopping" for r in worker_rows(db, role="supervisor")), timeout=LONG, message="the supervisor to be stopping")
    assert job(db, "long")["state"] == "running"  # the first Ctrl-C lets it run
    sup.signal(signal.SIGINT)
    assert sup.wait() == 0
    assert time.monotonic() - started < 20

    row = job(db, "long")
    assert (row["state"], row["attempts"]) == ("pending", 0)
    assert processes_of(cli.db_url, ["sleep", "30"]) == []
    assert "killing running jobs" in sup.log()


def test_stop_that_arrives_while_a_worker_is_forked_is_not_lost(cli, db, supervisors):
    """Drives a real supervisor through the exact sequence of a stop signal arriving
    while it forks a replacement worker: `_spawn` signals the new child at once and
    the same loop pass forwards the stop to every child. A child that has not yet
    installed its own handlers must still get it (it used to be lost, and the
    supervisor then waited for that worker forever)."""
    configure(db, **FAST)
    code = textwrap.dedent(
        """
        import logging, sys
        from queuectl.store.database import resolve_url
        from queuectl.worker.supervisor import GRACEFUL, Child, PoolOptions, Supervisor

        logging.basicConfig(level=logging.INFO)
        sup = Supervisor(resolve_url(), PoolOptions(concurrency=1))
        sup.initialize()
        sup.stop_mode = GRACEFUL  # what the signal handler does, mid-spawn
        child = Child(index=2, slots=range(2, 3))
        sup.children.append(child)
        sup._spawn(child)
        sup._forward_stop()
        try:
            while not all(c.done for c in sup.children):
                sup.loop_once()
        finally:
            sup.shutdown()
        print("exited cleanly")
        """
    )
    for _ in range(3):
        sup = supervisors.start_script(code)
        assert sup.wait(timeout=30) == 0, sup.log()
        assert "exited cleanly" in sup.log()
    assert live_workers(db) == []


def test_detached_supervisor_runs_jobs_and_worker_stop_stops_it(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    env = supervisors.env(XDG_DATA_HOME=str(tmp_path / "xdg"))  # where a non-SQLite log goes
    out = cli.ok("worker", "start", "--detach", "--concurrency", "1", env=env).stdout
    match = re.fullmatch(r"started supervisor pid=(\d+) log=(\S+)\n", out)
    assert match, out
    pid, log_path = int(match.group(1)), match.group(2)
    supervisors.adopt(pid)
    assert alive(pid)
    assert "queuectl" in " ".join(psutil.Process(pid).cmdline())
    assert log_path.startswith(str(tmp_path))

    wait_until(lambda: [r for r in live_workers(db) if r.supervisor_pid == pid], timeout=LONG, message="the detached supervisor's worker")
    cli.ok("enqueue", "--id", "bg", "echo from the background")
    done = wait_until(lambda: job_in(db, "bg", "completed", "dead"), timeout=LONG, message="the job to run")
    assert done["output"] == "from the background\n"

    stop = cli("worker", "stop", timeout=LONG)
    assert stop.returncode == 0, stop.stderr
    assert "all stopped" in stop.stdout
    wait_until(lambda: not alive(pid), timeout=LONG, message="the detached supervisor to exit")
    with open(log_path) as f:
        log = f.read()
    assert "started 1 worker(s)" in log and "stopped" in log
