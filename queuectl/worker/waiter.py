"""How an idle worker waits for work: LISTEN/NOTIFY where the database has it,
else a cheap read-only poll every poll-interval."""

import logging
import time
from collections.abc import Callable
from datetime import datetime

from queuectl.errors import DatabaseError
from queuectl.timeutil import utcnow

log = logging.getLogger("queuectl.worker")
# With notifications, polling is only the safety net for a lost one.
LISTEN_FALLBACK_POLL = 1.0
_SLICE = 0.05


class Waiter:
    def __init__(self, store, queues: tuple[str, ...], clock: Callable[[], datetime] = utcnow):
        self.store = store
        self.queues = queues
        self.clock = clock
        self.listener = store.listener()
        self.last_claim_found = False
        self.notified = False

    def work_may_exist(self) -> bool:
        """A read-only look before taking the write lock to claim: idle pools stay cheap.

        Skipped right after a successful claim (a busy worker claims the next job at
        once) and right after a notification (an enqueue just committed).
        """
        if self.last_claim_found or self.notified:
            self.notified = False
            return True
        return self.store.work_due(self.queues, self.clock())

    def found(self, found: bool) -> None:
        self.last_claim_found = found

    def wait(self, poll_interval: float, interrupted) -> None:
        """Return when work may have arrived, poll_interval passed, or we are interrupted.
        (Heartbeats have a thread of their own: a long wait here delays none.)"""
        if self.listener is not None:
            try:
                self.notified = self.listener.wait(max(poll_interval, LISTEN_FALLBACK_POLL), interrupted)
                return
            except DatabaseError as err:
                log.warning("LISTEN connection lost (polling until it is back): %s", err)
        deadline = time.monotonic() + poll_interval
        while not interrupted():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, _SLICE))

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
