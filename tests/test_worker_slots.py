"""Several job slots in one worker process (worker.py, slot.py, lookout.py): they run
jobs side by side, `ps` and `status` show each, a process's death or hang takes every
slot's job down with it and each is recovered, a cancel reaches only its own job, and
an idle process's heartbeat costs the same however many slots it has."""

import os
import signal
import threading
import time

import psutil
from sqlalchemy import event

from queuectl.errors import DatabaseError
from queuectl.states import LIVE_WORKER_STATES as LIVE
from queuectl.store import Store
from queuectl.timeutil import utcnow
from queuectl.worker.jobgroup import JobGroup
from queuectl.worker.supervisor import default_processes, split
from queuectl.worker.worker import Worker, WorkerOptions
from support import enqueue
from worker_support import (
    FAST,
    LONG,
    alive,
    configure,
    job,
    job_in,
    live_workers,
    read_lines,
    supervisors,  # noqa: F401  (fixture)
    wait_lines,
    wait_until,
    wait_workers,
    worker_rows,
)


def gated(side, go, tag="$QUEUECTL_JOB_ID") -> str:
    """A job that says it started, then waits for the test's `go` file."""
    return f'echo "{tag}-$QUEUECTL_ATTEMPT" >> "{side}"; while [ ! -e "{go}" ]; do sleep 0.05; done; echo done'


def title(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline())


def test_slots_are_spread_evenly_over_the_processes():
    assert [list(r) for r in split(5, 2)] == [[1, 2, 3], [4, 5]]
    assert [list(r) for r in split(2, 4)] == [[1], [2]]
    assert [list(r) for r in split(64, 2)] == [list(range(1, 33)), list(range(33, 65))]
    assert default_processes(1) == 1
    assert default_processes(64) == min(len(os.sched_getaffinity(0)), 4)


def test_a_pool_of_more_slots_than_one_pool_can_hold_is_refused_in_one_line(cli, db):
    result = cli("worker", "start", "-c", "100000")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    assert result.stderr.strip().splitlines()[-1].endswith("at most 1000 per pool, not 100000 (start several pools for more)"), result.stderr
    assert worker_rows(db, "supervisor") == []


def test_the_slots_of_one_process_run_jobs_side_by_side_and_each_is_shown(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    side, go = tmp_path / "started.log", tmp_path / "go"
    for name in ("a", "b", "c"):
        cli.ok("enqueue", "--id", name, gated(side, go))
    sup = supervisors.start("--concurrency", "4", "--processes", "1")
    assert sorted(wait_lines(side, 3)) == ["a-1", "b-1", "c-1"]
    rows = wait_until(lambda: (rows := live_workers(db, sup.pid)) and sum(1 for r in rows if r.job_id) == 3 and rows,
                      timeout=LONG, message="three busy slots")
    assert len(rows) == 4 and len({r.pid for r in rows}) == 1, rows
    (process,) = sup.children()
    assert process.pid == rows[0].pid
    # One row per slot in `status`, the process's pid on each; its title names each slot's job.
    shown = {w["id"]: w for w in cli.json("status")["workers"] if w["state"] in LIVE}
    assert sorted(w["job_id"] or "-" for w in shown.values()) == ["-", "a", "b", "c"]
    text = wait_until(lambda: (t := title(process.pid)).count("busy") == 3 and t, timeout=LONG, message="the title to show three jobs")
    assert text.startswith("queuectl worker 1/1 slot 1 ")
    for name in ("a", "b", "c"):
        assert f"busy job={name}" in text, text
    assert "slot 4" in text and "idle" in text, text
    go.touch()
    for name in ("a", "b", "c"):
        assert wait_until(lambda name=name: job_in(db, name, "completed"), timeout=LONG, message=f"job {name}")["attempts"] == 0
    assert cli("worker", "stop", timeout=LONG).returncode == 0
    assert sup.wait() == 0
    assert all(r.state == "stopped" for r in worker_rows(db) if r.pid == process.pid)


def test_a_sigkilled_process_loses_every_slots_attempt_and_is_replaced(cli, db, supervisors, tmp_path):
    configure(db, **FAST, backoff_max=0.2)
    side, go = tmp_path / "started.log", tmp_path / "go"
    cli.ok("enqueue", "--id", "one", "--max-retries", "2", gated(side, go))
    cli.ok("enqueue", "--id", "two", "--max-retries", "2", gated(side, go))
    sup = supervisors.start("--concurrency", "3", "--processes", "1")
    assert sorted(wait_lines(side, 2)) == ["one-1", "two-1"]
    (process,) = sup.children()
    job_procs = process.children(recursive=True)
    old_ids = {r.id for r in live_workers(db, sup.pid)}
    assert len(old_ids) == 3

    process.kill()

    # Both jobs' shells die with their process; each attempt is charged and run again
    # by the replacement, once each.
    wait_until(lambda: not any(alive(p) for p in job_procs), timeout=LONG, message="the killed attempts' processes to end")
    assert sorted(wait_lines(side, 4)) == ["one-1", "one-2", "two-1", "two-2"]
    for name in ("one", "two"):
        row = job(db, name)
        assert (row["state"], row["attempts"], row["last_error"]) == ("running", 1, "worker lost"), row
    assert {r.id: r.state for r in worker_rows(db) if r.id in old_ids} == dict.fromkeys(old_ids, "dead")
    new = wait_workers(db, sup, 3)
    assert not {r.id for r in new} & old_ids and {r.pid for r in new} != {process.pid}
    go.touch()
    for name in ("one", "two"):
        done = wait_until(lambda name=name: job_in(db, name, "completed", "dead"), timeout=LONG, message=f"job {name}'s retry")
        assert (done["state"], done["attempts"]) == ("completed", 1)
    assert sorted(read_lines(side)) == ["one-1", "one-2", "two-1", "two-2"]


def test_a_hung_process_is_fenced_with_every_slots_job(cli, db, supervisors, tmp_path):
    configure(db, heartbeat_interval=0.2, heartbeat_timeout=3, backoff_max=0.2, poll_interval=0.05)
    side = tmp_path / "started.log"
    for name in ("x", "y"):
        # The first attempt hangs with its process; the retry ends at once.
        command = f'echo "{name}-$QUEUECTL_ATTEMPT" >> "{side}"; [ "$QUEUECTL_ATTEMPT" = 1 ] && exec sleep 300; true'
        cli.ok("enqueue", "--id", name, "--max-retries", "2", command)
    sup = supervisors.start("--concurrency", "2", "--processes", "1")
    assert sorted(wait_lines(side, 2)) == ["x-1", "y-1"]
    (process,) = sup.children()
    sleepers = wait_until(lambda: (s := [p for p in process.children(recursive=True) if p.name() == "sleep"]) and len(s) == 2 and s,
                          timeout=LONG, message="both sleeps")
    os.kill(process.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    wait_until(lambda: not any(alive(p) for p in sleepers), timeout=LONG, message="both jobs of the hung process to be killed")
    killed_after = time.monotonic() - stopped
    wait_until(lambda: not alive(process), timeout=LONG, message="the hung process to be killed")
    for name in ("x", "y"):
        final = wait_until(lambda name=name: job_in(db, name, "completed", "dead"), timeout=LONG, message=f"job {name}'s retry")
        assert (final["state"], final["attempts"]) == ("completed", 1), final
    assert killed_after < 3 + 10, killed_after


def test_a_cancel_stops_only_its_own_slots_job(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    side, go = tmp_path / "started.log", tmp_path / "go"
    cli.ok("enqueue", "--id", "keep", gated(side, go))
    cli.ok("enqueue", "--id", "drop", gated(side, go))
    sup = supervisors.start("--concurrency", "2", "--processes", "1")
    wait_lines(side, 2)
    wait_until(lambda: sum(1 for r in live_workers(db, sup.pid) if r.job_id) == 2, timeout=LONG, message="two busy slots")
    cli.ok("cancel", "drop")
    assert wait_until(lambda: job_in(db, "drop", "cancelled"), timeout=LONG, message="the cancel")["last_error"] == "cancelled"
    assert job(db, "keep")["state"] == "running"
    go.touch()
    assert wait_until(lambda: job_in(db, "keep", "completed", "dead", "failed"), timeout=LONG, message="the other job")["state"] == "completed"


def test_a_slot_declared_dead_stops_its_process_and_the_other_slots_give_their_jobs_back_unrun(cli, db, supervisors, tmp_path):
    configure(db, **FAST, backoff_max=0.2)
    side, go = tmp_path / "started.log", tmp_path / "go"
    cli.ok("enqueue", "--id", "lost", "--max-retries", "2", gated(side, go))
    cli.ok("enqueue", "--id", "kept", "--max-retries", "2", gated(side, go))
    # Two slots, both busy: no idle slot of the process may claim the lost job's retry.
    sup = supervisors.start("--concurrency", "2", "--processes", "1")
    assert sorted(wait_lines(side, 2)) == ["kept-1", "lost-1"]
    owners = wait_until(lambda: (o := {r.job_id: r.id for r in live_workers(db, sup.pid) if r.job_id}) and len(o) == 2 and o,
                        timeout=LONG, message="two busy slots")
    (process,) = sup.children()
    store = Store(db)
    # As a reaper does (another host that found the row silent too long): "lost" is
    # charged its attempt and recovered.
    assert store.declare_dead(owners["lost"], silent_since=None, cfg=store.config()) == [("lost", "failed")]

    # The whole process stops; the slot whose row is alive gives "kept" back unrun
    # (docs/design.md section 19), so it starts again as attempt 1.
    wait_until(lambda: not alive(process), timeout=LONG, message="the process of the dead slot to stop")
    assert sorted(wait_lines(side, 4)) == ["kept-1", "kept-1", "lost-1", "lost-2"]
    go.touch()
    for name, attempts in (("kept", 0), ("lost", 1)):
        done = wait_until(lambda name=name: job_in(db, name, "completed", "dead"), timeout=LONG, message=f"job {name}")
        assert (done["state"], done["attempts"]) == ("completed", attempts), done


def test_a_graceful_stop_lets_every_slot_finish_its_job(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    side, go = tmp_path / "started.log", tmp_path / "go"
    cli.ok("enqueue", "--id", "p", gated(side, go))
    cli.ok("enqueue", "--id", "q", gated(side, go))
    sup = supervisors.start("--concurrency", "3", "--processes", "1")
    wait_lines(side, 2)
    sup.signal(signal.SIGTERM)
    wait_until(lambda: sum(1 for r in live_workers(db, sup.pid) if r.state == "stopping") >= 1, timeout=LONG, message="the slots to say they stop")
    cli.ok("enqueue", "--id", "late", "true")  # taken by nobody: the pool is stopping
    go.touch()
    assert sup.wait() == 0
    assert [job(db, n)["state"] for n in ("p", "q", "late")] == ["completed", "completed", "pending"]


def test_a_burst_over_several_slots_runs_everything_and_exits(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    out = tmp_path / "ran.log"
    for i in range(12):
        cli.ok("enqueue", "--id", f"j{i}", f'sleep 0.2; echo {i} >> "{out}"')
    sup = supervisors.start("--concurrency", "4", "--processes", "2", "--burst")
    assert sup.wait() == 0
    assert sorted(int(x) for x in read_lines(out)) == list(range(12))
    rows = [r for r in worker_rows(db) if r.state == "stopped"]
    assert len(rows) == 4 and len({r.pid for r in rows}) == 2


def test_a_burst_ends_within_a_poll_interval_of_its_last_job(cli, db, supervisors, tmp_path):
    """An idle burst worker waits for the jobs still running elsewhere; once the last
    one ends, the pool exits within about a poll-interval (0.05 s here), not at the
    safety poll (1 s): a drain's end is its own figure (bench/run.py --only drain)."""
    configure(db, **FAST)
    side, go = tmp_path / "side", tmp_path / "go"
    cli.ok("enqueue", "--id", "last", gated(side, go))
    sup = supervisors.start("--concurrency", "2", "--processes", "2", "--burst")
    wait_lines(side, 1)
    # The other process takes this one and then waits, its last look just made.
    cli.ok("enqueue", "--id", "quick", "true")
    wait_until(lambda: job(db, "quick")["state"] == "completed", LONG, message="the quick job done")
    go.touch()
    released = time.monotonic()
    assert sup.wait(timeout=LONG) == 0
    took = time.monotonic() - released
    assert job(db, "last")["state"] == "completed"
    # The gated job notices `go` within 0.05 s; before, the idle worker looked again
    # only a second after its last look.
    assert took < 0.6, f"the pool exited {took:.2f}s after its last job was released"


def _many_slots(db, tmp_path, monkeypatch, slots: int, burst: bool = False) -> Worker:
    run = tmp_path / f"run-{slots}"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    ids = tuple(f"w-beat-{slots}-{i}" for i in range(slots))
    options = WorkerOptions(url=db.url, worker_ids=ids, supervisor_id="s-beat", supervisor_pid=os.getppid(),
                            index=1, count=1, queues=(), hostname="beat-host", burst=burst)
    worker = Worker(options, [JobGroup(i) for i in ids])
    worker.open(store=Store(db), heartbeat=False)
    return worker


def test_an_idle_processs_heartbeat_costs_the_same_for_one_slot_or_thirty_two(db, tmp_path, monkeypatch):
    def statements_per_beat(worker: Worker) -> int:
        seen: list[str] = []
        lock = threading.Lock()

        def count(_conn, _cursor, statement, *_rest):
            with lock:
                seen.append(statement)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert worker._heartbeat() is True
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        return len(seen)

    costs = {}
    for slots in (1, 32):
        worker = _many_slots(db, tmp_path, monkeypatch, slots)
        try:
            statements_per_beat(worker)  # the first beat writes each row's state
            costs[slots] = statements_per_beat(worker)
            assert {r.id for r in worker_rows(db) if r.state == "idle"} >= set(worker.o.worker_ids)
        finally:
            worker.shutdown()
    assert costs[32] == costs[1] <= 4, costs


def test_a_job_that_ends_while_the_heartbeat_reads_its_slot_does_not_fail_the_beat(db, tmp_path, monkeypatch):
    # The heartbeat thread reads each slot's job while the slots' threads end theirs:
    # the beat must go by the fields it took, not look at slot.job again.
    worker = _many_slots(db, tmp_path, monkeypatch, 2)
    try:
        enqueue(db, "true", now=utcnow())
        slot = worker.slots[0]
        slot.job = slot.claim()
        assert slot.job is not None
        take_fields = slot.beat_fields

        def then_the_job_ends() -> dict:
            fields = take_fields()
            slot.job = None  # the slot's thread, between this read and the next
            return fields

        slot.beat_fields = then_the_job_ends  # type: ignore[method-assign]
        assert worker._heartbeat() is True
    finally:
        worker.shutdown()


def test_a_burst_look_at_the_queue_that_fails_is_ridden_out_not_a_crash(db, tmp_path, monkeypatch):
    # A failed read (a locked SQLite file, the one connection busy too long) in the
    # look-out's "drained?" must not end the slot's thread: that crash stops the
    # process now and kills every other slot's running job.
    worker = _many_slots(db, tmp_path, monkeypatch, 2, burst=True)
    real, calls = worker.store.drained, []

    def unusable_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise DatabaseError("database is locked")
        return real(*args)

    try:
        monkeypatch.setattr(worker.store, "drained", unusable_once)
        assert worker.lookout.next_job(worker.slots[0]) is None
        assert worker.lookout.closed and len(calls) == 2
    finally:
        worker.shutdown()
