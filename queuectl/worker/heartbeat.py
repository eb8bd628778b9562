"""A worker's heartbeat, from a thread of its own.

The job loop never waits on the database for a heartbeat (a locked SQLite file once
held a job 13 s past its timeout with its output pipe full), and a heartbeat never
waits for a job. The beat itself is the worker's: this only paces it.
"""

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("queuectl.worker")
# After a failed beat, the next try comes sooner than a whole interval.
RETRY_AFTER = 1.0


class Heartbeat:
    def __init__(self, beat: Callable[[], bool], interval: Callable[[], float | None], name: str = "heartbeat"):
        """beat() writes one heartbeat and says whether it reached the database;
        interval() is the current heartbeat-interval (config can change it), or None
        for "not until now() is called" (nothing to write while idle). Also paces
        other periodic writes of a worker (its job's output: name 'output')."""
        self._beat = beat
        self._interval = interval
        self._name = name
        self._wake = threading.Event()
        self._stopping = False
        # True while the thread waits without a deadline (interval() said None).
        self._parked = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def now(self) -> None:
        """Beat at once (a job has started: its process group goes in the row)."""
        self._wake.set()

    def unpark(self) -> None:
        """Make interval() count again if the thread waits without a deadline (the
        output thread, idle, when a job starts); else leave it be. A job start in a
        busy drain then costs no thread switch: the output thread, already pacing
        itself, looks at the new job when its interval ends. Call it after the change
        that makes interval() a number."""
        if self._parked:
            self._wake.set()

    def stop(self, timeout: float) -> None:
        """Stop beating; wait up to `timeout` for a beat in progress to end."""
        self._stopping = True
        self._wake.set()
        if self._thread.ident is not None:  # started (a stepped test worker never starts it)
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()  # a now() from here on gets a beat of its own
            try:
                ok = self._beat()
            except Exception:  # a beat must never kill the thread that keeps the worker alive
                log.exception("%s failed", self._name)
                ok = False
            interval = self._interval()
            if not ok:
                interval = RETRY_AFTER if interval is None else min(RETRY_AFTER, interval)
            if interval is None:
                # Parked, then a second look: unpark() after the change either sees
                # the flag or the change is seen here (no wake-up lost between them).
                self._parked = True
                interval = self._interval()
            self._wake.wait(interval)
            self._parked = False
