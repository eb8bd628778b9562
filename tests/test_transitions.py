"""The job state machine (queuectl.store.transitions) driven with an explicit, controllable clock."""

import random

import pytest

from queuectl.errors import NotFound
from queuectl.store import Store, dlq, jobs, transitions
from queuectl.store import config as settings
from queuectl.timeutil import after
from support import CFG, T0, dead_row, enqueue, job_row, seconds

US = seconds(0.000001)


def claim(db, now, worker="w1", queues=None):
    with db.begin() as conn:
        row = transitions.claim(conn, worker, queues, now)
    return row.id if row is not None else None


def fail(db, job_id, now, worker="w1", cfg=CFG, **kw):
    kw.setdefault("error", "exit code 3")
    kw.setdefault("exit_code", 3)
    kw.setdefault("output", "boom\n")
    with db.begin() as conn:
        return transitions.fail(conn, job_id, worker, now=now, cfg=cfg, **kw)


def complete(db, job_id, now, worker="w1", exit_code=0, output="ok\n"):
    with db.begin() as conn:
        return transitions.complete(conn, job_id, worker, exit_code=exit_code, output=output, now=now)


def release(db, job_id, now, worker="w1"):
    with db.begin() as conn:
        return transitions.release(conn, job_id, worker, now=now)


# --- claiming ------------------------------------------------------------------------------


def test_claim_order_is_priority_then_run_at_then_enqueue_order(db):
    early = T0 - seconds(3600)
    enqueue(db, id="low-old", now=early)
    enqueue(db, id="negative", now=early, priority=-1)
    enqueue(db, id="high-late", now=early, priority=5, run_at=T0 - seconds(10))
    enqueue(db, id="high-early", now=early, priority=5, run_at=T0 - seconds(20))
    enqueue(db, id="low-fifo", now=early)  # same priority and run_at as low-old, enqueued later
    enqueue(db, id="low-earlier", now=early, run_at=T0 - seconds(7200))  # enqueued last, due first
    enqueue(db, id="future", now=early, priority=100, run_at=T0 + US)

    order = [claim(db, T0) for _ in range(7)]
    assert order == ["high-early", "high-late", "low-earlier", "low-old", "low-fifo", "negative", None]
    assert claim(db, T0 + US) == "future"


def test_unnamed_jobs_are_claimed_in_enqueue_order(db):
    ids = [enqueue(db, f"echo {n}") for n in range(5)]
    assert ids == ["1", "2", "3", "4", "5"]
    assert [claim(db, T0) for _ in ids] == ids


def test_claim_marks_the_job_running_for_its_worker(db):
    job_id = enqueue(db, "echo hi", max_retries=2, timeout="30s")
    with db.begin() as conn:
        row = transitions.claim(conn, "w-claim", None, T0 + seconds(1))
    assert (row.id, row.command, row.attempts, row.max_retries, row.timeout) == (job_id, "echo hi", 0, 2, 30.0)
    job = job_row(db, job_id)
    assert (job.state, job.worker_id, job.started_at, job.updated_at) == ("running", "w-claim", T0 + seconds(1), T0 + seconds(1))
    assert claim(db, T0 + seconds(2), worker="w2") is None  # never claimed twice


def test_delayed_jobs_are_not_claimable_early(db):
    delayed = enqueue(db, delay="1m")
    scheduled = enqueue(db, run_at="2030-01-01T12:05:00Z")
    assert claim(db, T0) is None
    assert claim(db, T0 + seconds(60) - US) is None
    assert claim(db, T0 + seconds(60)) == delayed
    assert claim(db, T0 + seconds(300) - US) is None
    assert claim(db, T0 + seconds(300)) == scheduled


def test_claim_only_from_the_given_queues(db):
    a = enqueue(db, queue="a")
    b = enqueue(db, queue="b")
    c = enqueue(db, queue="c")
    assert claim(db, T0, queues=("b",)) == b
    assert claim(db, T0, queues=("b",)) is None
    assert claim(db, T0, queues=("c", "zzz")) == c
    assert claim(db, T0, queues=None) == a


# --- success, failure, backoff and the DLQ ---------------------------------------------------


def test_complete(db):
    job_id = enqueue(db, max_retries=1)
    assert claim(db, T0) == job_id
    assert fail(db, job_id, T0) == "failed"
    assert claim(db, T0 + seconds(1)) == job_id
    assert complete(db, job_id, T0 + seconds(2), output="done\n")
    job = job_row(db, job_id)
    assert (job.state, job.exit_code, job.output, job.last_error, job.attempts) == ("completed", 0, "done\n", None, 1)
    assert job.finished_at == T0 + seconds(2)
    assert claim(db, T0 + seconds(3600)) is None


def test_backoff_delays_are_exact_and_then_the_job_dies(db):
    with db.begin() as conn:
        settings.set_value(conn, "backoff-base", "3")
        settings.set_value(conn, "backoff-max", "20s")
        cfg = settings.load(conn)
    job_id = enqueue(db, "exit 3", max_retries=4)
    now = T0
    for attempt, delay in enumerate([1, 3, 9, 20], 1):  # 3**0, 3**1, 3**2, then capped at 20
        assert claim(db, now - US) is None
        assert claim(db, now) == job_id
        assert fail(db, job_id, now, cfg=cfg, error=f"exit code {attempt}", output=f"try {attempt}\n") == "failed"
        job = job_row(db, job_id)
        assert (job.state, job.attempts) == ("failed", attempt)
        assert job.run_at == now + seconds(delay)
        assert (job.finished_at, job.last_error, job.exit_code, job.output) == (now, f"exit code {attempt}", 3, f"try {attempt}\n")
        now = job.run_at
    assert claim(db, now) == job_id
    assert fail(db, job_id, now, cfg=cfg, error="exit code 5") == "dead"  # attempt 5 > max_retries 4
    assert job_row(db, job_id) is None
    assert dead_row(db, job_id).attempts == 5


def test_max_retries_3_means_4_attempts_then_the_dlq_keeps_everything(db):
    job_id = enqueue(db, "sh -c 'echo oops; exit 7'", priority=3, queue="q")  # max-retries default: 3
    seq = job_row(db, job_id).seq
    now = T0
    for attempt in range(1, 5):
        assert claim(db, now) == job_id
        state = fail(db, job_id, now, error="exit code 7", exit_code=7, output=f"oops {attempt}\n")
        assert state == ("failed" if attempt <= 3 else "dead")
        if state == "failed":
            now = job_row(db, job_id).run_at
    assert job_row(db, job_id) is None
    dead = dead_row(db, job_id)
    assert (dead.id, dead.seq, dead.command, dead.state) == (job_id, seq, "sh -c 'echo oops; exit 7'", "dead")
    assert (dead.attempts, dead.max_retries, dead.priority, dead.queue) == (4, 3, 3, "q")
    assert (dead.last_error, dead.exit_code, dead.output) == ("exit code 7", 7, "oops 4\n")
    assert dead.dead_at == dead.finished_at == now
    assert jobs.get(db, job_id).state == "dead"
    assert [row.id for row in jobs.listing(db)] == [job_id]
    assert claim(db, now + seconds(86400)) is None


def test_no_retries_means_the_first_failure_is_final(db):
    job_id = enqueue(db, max_retries=0)
    assert claim(db, T0) == job_id
    assert fail(db, job_id, T0) == "dead"
    assert dead_row(db, job_id).attempts == 1


@pytest.mark.parametrize(
    "attempts, base, cap, expected",
    [(0, 2, 3600, 1), (1, 2, 3600, 1), (2, 2, 3600, 2), (5, 2, 3600, 16), (13, 2, 3600, 3600), (3, 1.5, 3600, 2.25), (2000, 1000, 60, 60)],
)
def test_backoff_delay(attempts, base, cap, expected):
    cfg = {"backoff-base": base, "backoff-max": cap, "backoff-jitter": 0}
    assert transitions.backoff_delay(attempts, cfg) == expected


def test_jitter_adds_at_most_its_fraction(db):
    cfg = dict(CFG, **{"backoff-jitter": 0.5})
    draw = random.Random(42).random()
    expected = 4 * (1 + 0.5 * draw)  # third attempt: 2 ** 2, plus jitter
    assert transitions.backoff_delay(3, cfg, random.Random(42)) == expected
    for seed in range(50):
        assert 4 <= transitions.backoff_delay(3, cfg, random.Random(seed)) <= 6

    job_id = enqueue(db)
    assert claim(db, T0) == job_id
    with db.begin() as conn:
        assert transitions.fail(conn, job_id, "w1", error="e", exit_code=1, output=None, now=T0, cfg=cfg, rng=random.Random(42)) == "failed"
    assert job_row(db, job_id).run_at == after(T0, transitions.backoff_delay(1, cfg, random.Random(42)))
    assert T0 + seconds(1) <= job_row(db, job_id).run_at <= T0 + seconds(1.5)


def test_complete_and_claim_records_success_and_takes_the_next_job_in_one_write(db):
    first, second = enqueue(db, "echo 1"), enqueue(db, "echo 2", max_retries=1)
    assert claim(db, T0) == first
    owned, nxt = Store(db).complete_and_claim(first, "w1", output="1\n", now=T0 + seconds(1), queues=None)
    assert owned is True and (nxt.id, nxt.command, nxt.attempts, nxt.max_retries) == (second, "echo 2", 0, 1)
    done, running = job_row(db, first), job_row(db, second)
    assert (done.state, done.exit_code, done.output, done.finished_at) == ("completed", 0, "1\n", T0 + seconds(1))
    # The claimed job gets none of the finished job's outcome columns.
    assert (running.state, running.worker_id, running.exit_code, running.output, running.started_at) == ("running", "w1", None, None, T0 + seconds(1))

    owned, nxt = Store(db).complete_and_claim(second, "w1", output="", now=T0 + seconds(2), queues=None)
    assert (owned, nxt) == (True, None)  # nothing left to claim


def test_complete_and_claim_by_a_former_owner_changes_nothing_but_still_claims(db):
    taken, waiting = enqueue(db), enqueue(db)
    assert claim(db, T0, worker="w-old") == taken
    with db.begin() as conn:
        transitions.recover(conn, "w-old", now=T0, cfg=CFG)  # a reaper declared w-old dead
    before = job_row(db, taken)
    owned, nxt = Store(db).complete_and_claim(taken, "w-old", output="late", now=T0 + seconds(1), queues=("default",))
    assert owned is False and nxt.id in (taken, waiting)
    after_ = job_row(db, taken)
    assert (after_.exit_code, after_.output, after_.last_error) == (before.exit_code, before.output, before.last_error)


# --- guards ------------------------------------------------------------------------------------


def snapshot(db, job_id):
    row = job_row(db, job_id)
    return (row.state, row.worker_id, row.attempts, row.exit_code, row.output, row.run_at)


def test_a_worker_that_does_not_own_the_job_cannot_change_it(db):
    job_id = enqueue(db)
    assert claim(db, T0, worker="w1") == job_id
    before = snapshot(db, job_id)
    later = T0 + seconds(5)
    assert complete(db, job_id, later, worker="w2") is False
    assert fail(db, job_id, later, worker="w2") is None
    assert release(db, job_id, later, worker="w2") is False
    with db.begin() as conn:
        assert transitions.recover(conn, "w2", now=later, cfg=CFG) == []
    assert snapshot(db, job_id) == before

    # Released by its owner: nobody owns it now, not even the old owner.
    assert release(db, job_id, later, worker="w1")
    assert complete(db, job_id, later, worker="w1") is False
    assert fail(db, job_id, later, worker="w1") is None
    assert job_row(db, job_id).state == "pending"

    # Claimed again by w2: the stale w1 cannot touch it; once completed, nobody can.
    assert claim(db, later, worker="w2") == job_id
    assert complete(db, job_id, later, worker="w1") is False
    assert complete(db, job_id, later, worker="w2")
    done = snapshot(db, job_id)
    assert fail(db, job_id, later, worker="w2") is None
    assert release(db, job_id, later, worker="w2") is False
    assert complete(db, job_id, later, worker="w2", exit_code=9) is False
    assert snapshot(db, job_id) == done
    assert done[0] == "completed"


def test_a_job_that_went_to_the_dlq_is_out_of_reach(db):
    job_id = enqueue(db, max_retries=0)
    assert claim(db, T0) == job_id
    assert fail(db, job_id, T0) == "dead"
    assert fail(db, job_id, T0) is None
    assert complete(db, job_id, T0) is False
    assert release(db, job_id, T0) is False
    assert dead_row(db, job_id).attempts == 1


def test_release_gives_the_job_back_without_charging_an_attempt(db):
    job_id = enqueue(db, max_retries=1)
    assert claim(db, T0) == job_id
    assert fail(db, job_id, T0) == "failed"
    retry_at = job_row(db, job_id).run_at
    assert claim(db, retry_at, worker="w1") == job_id
    assert release(db, job_id, retry_at + seconds(1), worker="w1")
    job = job_row(db, job_id)
    assert (job.state, job.attempts, job.worker_id, job.started_at) == ("pending", 1, None, None)
    assert job.updated_at == retry_at + seconds(1)
    # Runnable again at once, by anyone.
    assert claim(db, retry_at + seconds(1), worker="w2") == job_id


def test_recover_charges_an_attempt_to_every_job_a_lost_worker_held(db):
    a = enqueue(db, "a", max_retries=2)
    b = enqueue(db, "b", max_retries=0)
    c = enqueue(db, "c")
    d = enqueue(db, "d")
    assert claim(db, T0, worker="lost") == a
    assert claim(db, T0, worker="lost") == b
    assert claim(db, T0, worker="alive") == c
    later = T0 + seconds(60)
    with db.begin() as conn:
        result = transitions.recover(conn, "lost", now=later, cfg=CFG)
    assert sorted(result) == [(a, "failed"), (b, "dead")]
    job = job_row(db, a)
    assert (job.state, job.attempts, job.last_error, job.exit_code, job.run_at) == ("failed", 1, transitions.WORKER_LOST, None, later + seconds(1))
    assert (dead_row(db, b).last_error, dead_row(db, b).exit_code) == (transitions.WORKER_LOST, None)
    assert (job_row(db, c).state, job_row(db, c).worker_id) == ("running", "alive")
    assert job_row(db, d).state == "pending"
    with db.begin() as conn:
        assert transitions.recover(conn, "lost", now=later, cfg=CFG) == []


# --- the DLQ round trip -----------------------------------------------------------------------


def test_dlq_retry_and_purge(db):
    job_id = enqueue(db, "flaky", max_retries=0)
    assert claim(db, T0) == job_id
    assert fail(db, job_id, T0) == "dead"

    later = T0 + seconds(3600)
    assert dlq.retry(db, [job_id], now=later) == [job_id]
    job = job_row(db, job_id)
    assert (job.state, job.attempts, job.run_at, job.worker_id, job.started_at, job.finished_at) == ("pending", 0, later, None, None, None)
    assert dead_row(db, job_id) is None

    # It runs and dies again under the same id.
    assert claim(db, later) == job_id
    assert fail(db, job_id, later, error="again") == "dead"
    assert dead_row(db, job_id).last_error == "again"

    assert dlq.purge(db, None) == [job_id]
    with pytest.raises(NotFound):
        jobs.get(db, job_id)


def test_a_worker_that_beat_since_the_reaper_read_its_row_is_not_declared_dead(db):
    """A reaper reads a stale row, the worker beats, then the reaper writes: the write
    rechecks the age and changes nothing."""
    from queuectl.states import WorkerState
    from queuectl.store import workers as registry

    with db.begin() as conn:
        registry.register(conn, id="w-far", role="worker", host="elsewhere", pid_started=0.0, now=T0)
    stale_before = T0 + seconds(30)
    with db.begin() as conn:
        assert [row.id for row in registry.suspects(conn, host="here", stale_before=stale_before)] == ["w-far"]
        assert registry.heartbeat(conn, "w-far", T0 + seconds(31))  # meanwhile, it beat
    with db.begin() as conn:
        assert registry.end(conn, "w-far", WorkerState.DEAD, T0 + seconds(32), silent_since=stale_before) is False
        assert registry.end(conn, "w-far", WorkerState.DEAD, T0 + seconds(32), silent_since=T0 + seconds(40)) is True
