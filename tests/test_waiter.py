"""How an idle worker waits for work (queuectl.worker.waiter), in-process on real
databases: the read-only look before a claim, the poll, an interruption, and on
PostgreSQL the LISTEN connection that an enqueue wakes. Times are measured with
time.monotonic and bounded generously (a loaded 2-core machine must pass)."""

import logging
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from queuectl import jobspec
from queuectl.store import Store
from queuectl.worker.waiter import LISTEN_FALLBACK_POLL, Waiter
from support import T0, enqueue

# What "at once" and "returned early" mean here: far above any real latency, far
# below the poll intervals they are compared with.
PROMPT = 2.0
LONG_POLL = 5.0


class CountingStore(Store):
    """The real Store, counting the read-only looks (work_due) the waiter makes."""

    def __init__(self, db):
        super().__init__(db)
        self.looks = 0

    def work_due(self, queues, now=None):
        self.looks += 1
        return super().work_due(queues, now)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture
def make_waiter(db, monkeypatch):
    """Waiters on db (LISTEN on PostgreSQL unless a test turns it off); closed at the end."""
    monkeypatch.delenv("QUEUECTL_LISTEN", raising=False)
    made = []

    def make(queues=(), clock=None) -> Waiter:
        waiter = Waiter(CountingStore(db), queues, **({"clock": clock} if clock else {}))
        made.append(waiter)
        return waiter

    yield make
    for waiter in made:
        waiter.close()


def timed_wait(waiter: Waiter, poll_interval: float, interrupted=lambda: False) -> float:
    start = time.monotonic()
    waiter.wait(poll_interval, interrupted)
    return time.monotonic() - start


def enqueue_once_waiting(db):
    """An interrupted() for wait() and a thread that enqueues one job (through its own
    connection) as soon as wait() first calls it, i.e. once the waiter is waiting (and
    listening: the listener connects before its first look at interrupted())."""
    waiting = threading.Event()
    errors = []

    def interrupted() -> bool:
        waiting.set()
        return False

    def enqueue_job() -> None:
        try:
            assert waiting.wait(30), "wait() never looked at interrupted()"
            Store(db).enqueue([jobspec.build("echo woken")])
        except BaseException as err:  # reported by the test, not lost in the thread
            errors.append(err)

    thread = threading.Thread(target=enqueue_job, daemon=True)
    thread.start()
    return interrupted, thread, errors


def listening(waiter: Waiter) -> None:
    """Skip unless the waiter has a LISTEN connection (PostgreSQL)."""
    if waiter.listener is None:
        pytest.skip("no LISTEN on this backend: idle workers poll")


# --- work_may_exist ---------------------------------------------------------------------------


def test_work_may_exist_right_after_a_claim_found_a_job_without_a_look(make_waiter):
    waiter = make_waiter()
    waiter.found(True)
    assert waiter.work_may_exist() is True  # the queue is empty: a look would have said no
    assert waiter.work_may_exist() is True  # until a claim finds nothing
    assert waiter.store.looks == 0
    waiter.found(False)
    assert waiter.work_may_exist() is False
    assert waiter.store.looks == 1


def test_work_may_exist_is_false_on_an_empty_queue_and_true_once_a_job_is_due(db, make_waiter):
    clock = Clock()
    waiter = make_waiter(queues=("a",), clock=clock)
    other_queue = make_waiter(queues=("b",), clock=clock)
    assert waiter.work_may_exist() is False
    enqueue(db, now=T0, queue="a", delay="60s")
    assert waiter.work_may_exist() is False  # not due yet
    clock.now = T0 + timedelta(seconds=60)
    assert waiter.work_may_exist() is True
    assert other_queue.work_may_exist() is False
    assert (waiter.store.looks, other_queue.store.looks) == (3, 1)


# --- wait -------------------------------------------------------------------------------------


@pytest.mark.parametrize("poll_interval", [0.3, 1.2])
def test_wait_returns_after_about_the_poll_interval_when_nothing_happens(db, make_waiter, poll_interval):
    waiter = make_waiter()
    assert (waiter.listener is not None) == db.dialect.supports_listen
    # Listening, polling is only the safety net: at least LISTEN_FALLBACK_POLL.
    expected = max(poll_interval, LISTEN_FALLBACK_POLL) if waiter.listener else poll_interval
    elapsed = timed_wait(waiter, poll_interval)
    assert expected * 0.95 <= elapsed < expected + PROMPT
    assert waiter.notified is False


def test_wait_returns_at_once_when_interrupted(make_waiter):
    waiter = make_waiter()
    assert timed_wait(waiter, LONG_POLL, lambda: True) < PROMPT  # already interrupted

    stop = threading.Event()
    stopped_at = []

    def interrupt() -> None:
        stopped_at.append(time.monotonic())
        stop.set()

    timer = threading.Timer(0.3, interrupt)
    timer.start()
    try:
        waiter.wait(30.0, stop.is_set)
        returned_at = time.monotonic()
    finally:
        timer.cancel()
        timer.join(10)
    assert stopped_at, "wait() returned before it was interrupted"
    assert returned_at - stopped_at[0] < PROMPT
    assert waiter.notified is False


def test_an_enqueue_from_another_connection_wakes_a_listening_wait(db, make_waiter):
    waiter = make_waiter()
    listening(waiter)
    interrupted, thread, errors = enqueue_once_waiting(db)
    elapsed = timed_wait(waiter, LONG_POLL, interrupted)
    thread.join(30)
    assert errors == []
    assert elapsed < LONG_POLL / 2
    assert waiter.notified is True
    # The notification stands in for the look, once.
    assert waiter.work_may_exist() is True
    assert (waiter.notified, waiter.store.looks) == (False, 0)
    assert waiter.work_may_exist() is True  # the job is really there
    assert waiter.store.looks == 1


def test_an_enqueue_during_a_wait_is_found_by_the_next_look(db, make_waiter, monkeypatch):
    """Without LISTEN (SQLite, or QUEUECTL_LISTEN=0): the wait runs its course and
    the poll's look finds the job."""
    monkeypatch.setenv("QUEUECTL_LISTEN", "0")
    waiter = make_waiter()
    assert waiter.listener is None
    interrupted, thread, errors = enqueue_once_waiting(db)
    elapsed = timed_wait(waiter, 0.5, interrupted)
    thread.join(30)
    assert errors == []
    assert 0.5 * 0.95 <= elapsed < 0.5 + PROMPT
    assert waiter.notified is False
    assert waiter.work_may_exist() is True
    assert waiter.store.looks == 1


def test_a_lost_listen_connection_falls_back_to_polling_then_listens_again(db, make_waiter, caplog):
    waiter = make_waiter()
    listening(waiter)
    waiter.wait(LONG_POLL, lambda: True)  # connects and LISTENs, then returns: interrupted
    backend = waiter.listener.conn.info.backend_pid
    with db.engine.connect() as conn:  # the server ends the listener's session (a restart, a pooler...)
        assert conn.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": backend}).scalar() is True

    with caplog.at_level(logging.WARNING, logger="queuectl.worker"):
        elapsed = timed_wait(waiter, 0.5)
    assert "LISTEN connection lost" in caplog.text
    assert 0.5 * 0.95 <= elapsed < 0.5 + PROMPT  # it polled out the interval instead
    assert waiter.notified is False
    assert waiter.listener.conn is None

    interrupted, thread, errors = enqueue_once_waiting(db)  # the next wait listens again
    elapsed = timed_wait(waiter, LONG_POLL, interrupted)
    thread.join(30)
    assert errors == []
    assert elapsed < LONG_POLL / 2
    assert waiter.notified is True
    assert waiter.listener.conn.info.backend_pid != backend
