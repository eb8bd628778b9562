"""Which idle slot of a worker process looks for work (docs/design.md section 19).

One idle slot at a time waits for work (the Waiter: LISTEN/NOTIFY, the host's local
wake-up, the safety poll) and claims; the other idle slots of the process sleep on a
condition and cost nothing. When the look-out claims a job it hands the watch to the
next idle slot, which claims at once in turn (the job may have come with others), so a
burst fills the process's slots one claim apart and a lone job costs one claim. An
idle process therefore costs what one idle worker did, however many slots it has.
"""

import threading
from typing import TYPE_CHECKING, Any

from queuectl.worker.outage import ride_out

if TYPE_CHECKING:
    from queuectl.worker.slot import Slot


class Lookout:
    def __init__(self, process: Any):
        """process: its worker.Worker (not imported: worker.py imports this module)."""
        self.p = process
        self._cond = threading.Condition()
        self._looking = False  # a slot is on the watch
        self.closed = False  # stopping, or a burst is over: nobody looks any more

    def next_job(self, slot: "Slot"):
        """Wait until a job is claimed for `slot`; None once the process stops."""
        with self._cond:
            while self._looking and not self.closed:
                self._cond.wait()
            if self.closed:
                return None
            self._looking = True
        try:
            return self._look(slot)
        finally:
            with self._cond:
                self._looking = False
                self._cond.notify()  # the next idle slot takes the watch

    def _look(self, slot: "Slot"):
        p = self.p
        while not p.should_exit():
            job = ride_out(slot.claim, give_up=p.should_exit)
            if job is not None:
                return job
            # Ridden out: a failed read here must not crash the slot's thread (a crash
            # stops the process now, killing the other slots' jobs).
            if p.o.burst and ride_out(p.drained, give_up=p.should_exit):
                break
            p.waiter.wait(p.cfg["poll-interval"], p.interrupted, ending=p.o.burst)
        self.close()
        return None

    def claimed(self, found: bool) -> None:
        """A busy slot's outcome was recorded with a claim that found a job or not.
        If no slot is on the watch, the next one to take it starts from that (a claim
        that found a job: claim again at once; else look before claiming), as a lone
        worker does after each job."""
        with self._cond:
            if not self._looking:
                self.p.waiter.found(found)

    def close(self) -> None:
        """Stop the watch for good and release every idle slot (they exit)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
