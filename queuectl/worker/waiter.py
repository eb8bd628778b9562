"""How an idle worker waits for work (docs/design.md section 18): woken by the
transaction that made work claimable (LISTEN/NOTIFY on PostgreSQL, the host's
local wake-up on SQLite, store/wakeup.py) or by the time the next delayed job
comes due, with a slow poll as the safety net for a lost wake-up. Without either
(a wake-up socket that could not be bound, QUEUECTL_LISTEN=0): a cheap read-only
poll every poll-interval."""

import logging
import time
from collections.abc import Callable
from datetime import datetime

from queuectl.errors import DatabaseError
from queuectl.timeutil import utcnow
from queuectl.worker import outage

log = logging.getLogger("queuectl.worker")
# With wake-ups, polling is only the safety net for a lost one (or for work a wake-up
# cannot announce: another user's enqueue to the same SQLite file, a queue's slot
# freed by a job that ended, a database written by hand). Also the longest an idle
# worker goes without looking at its supervisor (see Worker._should_exit).
FALLBACK_POLL = 1.0
LISTEN_FALLBACK_POLL = FALLBACK_POLL
_SLICE = 0.05
# A delayed job is looked for this long after its run_at: the wait's own rounding
# (epoll counts milliseconds) must not wake it a hair too early, to find nothing.
_DUE_MARGIN = 0.001


class Waiter:
    def __init__(self, store, queues: tuple[str, ...], clock: Callable[[], datetime] = utcnow, *, wake=None, signal_fd: int | None = None):
        """wake: the pool's WakeSocket (from the supervisor), None to LISTEN or poll;
        signal_fd: the read end of the worker's signal wake-up pipe, so that a stop
        ends a long wait at once (none: the wait is sliced, as in a stepped test)."""
        self.store = store
        self.queues = queues
        self.clock = clock
        # A pool with a wake-up socket has its notifications relayed through it by
        # its supervisor (worker/relay.py): its workers hold no LISTEN connection.
        self.listener = store.listener() if wake is None else None
        self.waiting = None
        if wake is not None:
            from queuectl.store.wakeup import WakeWait

            self.waiting = WakeWait(wake, signal_fd)
        self.signal_fd = signal_fd
        self.last_claim_found = False
        self.notified = False
        self.woken = False  # the current look follows a local wake-up: pass it on if it finds a job
        self.first_due: datetime | None = None  # what the last look found (local wake-up only)
        self.looked = False  # and it is the look just before this wait

    def work_may_exist(self) -> bool:
        """A read-only look before taking the write lock to claim: idle pools stay cheap.

        Skipped right after a successful claim (a busy worker claims the next job at
        once) and right after a notification (an enqueue just committed).
        """
        if self.last_claim_found or self.notified:
            self.notified = False
            return True
        if self.waiting is not None:
            # One read for both questions: is a job due now, else when will one be
            # (the wait that follows sleeps until then).
            self.first_due, self.looked = self.store.first_due(self.queues), True
            return self.first_due is not None and self.first_due <= self.clock()
        return self.store.work_due(self.queues, self.clock())

    def found(self, found: bool) -> None:
        self.last_claim_found = found
        if self.woken and found and self.waiting is not None:
            # More jobs may have come with this one: the next idle worker looks too.
            self.waiting.wake.poke()
        self.woken = False

    def wait(self, poll_interval: float, interrupted, *, ending: bool = False) -> None:
        """Return when work may have arrived, the next delayed job is due, the
        safety poll is due, or we are interrupted. (Heartbeats have a thread of
        their own: a long wait here delays none.) ending: a burst worker waiting for
        jobs that run elsewhere to end; no wake-up announces that, so it looks again
        after poll-interval rather than the safety poll's second (a drain ended up
        to a second after its last job)."""
        if self.listener is not None:
            try:
                self.notified = self.listener.wait(poll_interval if ending else max(poll_interval, LISTEN_FALLBACK_POLL),
                                                   interrupted, self.signal_fd)
                outage.recovered(log, "listen")
                return
            except DatabaseError as err:
                outage.failed(log, "LISTEN connection lost (polling until it is back)", err, "listen")
        elif self.waiting is not None:
            self._wait_for_wake(poll_interval if ending else max(poll_interval, FALLBACK_POLL), interrupted)
            return
        deadline = time.monotonic() + poll_interval
        while not interrupted():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, _SLICE))

    def _wait_for_wake(self, fallback: float, interrupted) -> None:
        assert self.waiting is not None
        timeout = fallback
        due = self.first_due
        if not self.looked:  # woken, the claim found nothing: look once more
            try:
                due = self.store.first_due(self.queues)
            except DatabaseError as err:
                log.debug("next due job not known (waiting %gs): %s", fallback, err)
                due = None
        self.looked = False
        if due is not None:
            left = (due - self.clock()).total_seconds() + _DUE_MARGIN
            # Due already, yet the claim missed it (taken meanwhile, its queue filled
            # up): look again soon, not in a loop.
            timeout = min(timeout, left if left > 0 else _SLICE)
        deadline = time.monotonic() + timeout
        while not interrupted():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # Without the signal pipe, slices: a stop is noticed within one.
            if self.waiting.wait(left if self.signal_fd is not None else min(left, _SLICE)):
                self.notified = self.woken = True
                return

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.waiting is not None:
            self.waiting.close()
