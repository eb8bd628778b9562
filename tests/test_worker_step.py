"""A worker stepped in-process with a fake clock: the state machine of one worker
(claim, run, record, retry with backoff, the DLQ, burst's end) without a supervisor,
signals or a heartbeat thread. Jobs are real `sh -c` processes; the database is real;
only time is the test's."""

import os
from datetime import timedelta

import pytest

from queuectl.states import JobState, WorkerState
from queuectl.store import Store
from queuectl.worker.jobgroup import JobGroup
from queuectl.worker.worker import Worker, WorkerOptions
from support import T0, dead_row, enqueue, job_row


class FakeClock:
    """Wall time and monotonic time that move only when the test says so."""

    def __init__(self):
        self.wall = T0
        self.mono = 1000.0

    def now(self):
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def step(db, clock, tmp_path, monkeypatch):
    """Make a stepped worker (after the test has set its config); shut down at the end."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    made = []

    def make(queues=(), burst=False) -> Worker:
        options = WorkerOptions(
            url=db.url, worker_ids=(f"w-step-{len(made)}",), supervisor_id="s-step", supervisor_pid=os.getppid(),
            index=1, count=1, queues=queues, hostname="step-host", burst=burst,
        )
        worker = Worker(options, [JobGroup(options.worker_ids[0])], clock=clock.now, monotonic=clock.monotonic)
        worker.open(store=Store(db), heartbeat=False)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.shutdown()


def state_of(db, job_id):
    row = job_row(db, job_id)
    return (row.state, row.attempts) if row is not None else (dead_row(db, job_id).state, dead_row(db, job_id).attempts)


def test_a_job_runs_once_and_is_recorded_at_the_workers_time(db, clock, step):
    job_id = enqueue(db, "echo hi")
    worker = step()
    clock.advance(5)
    assert worker.loop_once() is True
    row = job_row(db, job_id)
    assert (row.state, row.exit_code, row.output, row.attempts) == ("completed", 0, "hi\n", 0)
    assert row.started_at == row.finished_at == T0 + timedelta(seconds=5)
    assert worker.loop_once() is False  # nothing left
    assert (worker.slots[0].processed, worker.slots[0].failed) == (1, 0)


def test_success_claims_the_next_job_in_the_same_write(db, step):
    first, second = enqueue(db, "echo 1"), enqueue(db, "echo 2")
    worker = step()
    assert worker.loop_once() is True
    assert job_row(db, first).state == "completed"
    assert worker.slots[0].next_job is not None and worker.slots[0].next_job.id == second
    assert job_row(db, second).state == "running"  # claimed by the write that recorded the first
    assert worker.loop_once() is True
    assert worker.slots[0].next_job is None and job_row(db, second).state == "completed"


def test_failures_back_off_by_the_clock_and_end_in_the_dlq(db, clock, step):
    Store(db).set_config("backoff-base", "3")
    job_id = enqueue(db, "echo no; exit 3", max_retries=2)
    worker = step(burst=True)

    assert worker.loop_once() is True
    row = job_row(db, job_id)
    assert (row.state, row.attempts, row.exit_code, row.last_error) == ("failed", 1, 3, "exit code 3")
    assert row.run_at == T0 + timedelta(seconds=1)  # 3 ** 0
    assert worker.loop_once() is False  # not due yet
    assert worker.drained() is False  # a retry is pending: burst must not end

    clock.advance(0.999)
    assert worker.loop_once() is False
    clock.advance(0.001)
    assert worker.loop_once() is True
    row = job_row(db, job_id)
    assert (row.state, row.attempts) == ("failed", 2)
    assert row.run_at == T0 + timedelta(seconds=1 + 3)  # 3 ** 1

    clock.advance(3)
    assert worker.loop_once() is True
    dead = dead_row(db, job_id)
    assert (dead.state, dead.attempts, dead.output) == ("dead", 3, "no\n")
    assert dead.dead_at == T0 + timedelta(seconds=4)
    assert worker.drained() is True
    assert (worker.slots[0].processed, worker.slots[0].failed) == (3, 3)


def test_a_delayed_job_waits_for_its_time(db, clock, step):
    job_id = enqueue(db, "true", delay="1m")
    worker = step()
    assert worker.waiter.work_may_exist() is False
    assert worker.loop_once() is False
    clock.advance(59.9)
    assert worker.loop_once() is False
    clock.advance(0.1)
    assert worker.waiter.work_may_exist() is True
    assert worker.loop_once() is True
    assert state_of(db, job_id) == (JobState.COMPLETED.value, 0)


def test_a_worker_takes_only_its_queues(db, step):
    other = enqueue(db, "true", queue="other")
    mine = enqueue(db, "true", queue="mine")
    worker = step(queues=("mine",))
    assert worker.loop_once() is True
    assert worker.loop_once() is False
    assert state_of(db, mine)[0] == "completed" and state_of(db, other)[0] == "pending"


def test_a_worker_declared_dead_learns_it_from_its_heartbeat_and_stops(db, step):
    worker = step()
    assert worker._heartbeat() is True and worker.declared_dead is False
    assert Store(db).declare_dead(worker.o.worker_ids[0], silent_since=None, cfg=worker.cfg) == []
    assert worker._heartbeat() is True  # it reached the database...
    assert worker.declared_dead is True  # ...and found its row dead
    assert worker.should_exit() is True
    enqueue(db, "true")
    assert worker.loop_once() is True  # exits: claims nothing
    assert worker.slots[0].next_job is None


def test_a_clean_stop_gives_back_a_job_claimed_but_not_started(db, step):
    enqueue(db, "true")
    second = enqueue(db, "true")
    worker = step()
    worker.loop_once()  # runs the first, claims the second in the same write
    assert job_row(db, second).state == "running"
    worker.shutdown()
    assert (job_row(db, second).state, job_row(db, second).attempts, job_row(db, second).worker_id) == ("pending", 0, None)
    with db.read() as conn:
        from queuectl.store import workers

        (row,) = [r for r in workers.worker_rows(conn) if r.id == worker.o.worker_ids[0]]
    assert (row.state, row.processed) == (WorkerState.STOPPED.value, 1)
