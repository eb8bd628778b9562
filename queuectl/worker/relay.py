"""A pool's one LISTEN connection (PostgreSQL): the supervisor listens, and passes each
notification on to one idle worker of its pool through the pool's local wake-up socket
(store/wakeup.py), as an enqueue on SQLite does. docs/design.md section 20.

Before, every worker process held a LISTEN connection of its own: 2 connections per
worker, and every NOTIFY woke every idle worker of every host, each then racing for
the job with a claim. Now a host holds one listening connection, and a NOTIFY wakes one
idle worker per host (EPOLLEXCLUSIVE); the woken one passes the wake-up on while it
finds jobs, exactly as on SQLite.
"""

import logging
import os
import threading

from queuectl.errors import DatabaseError
from queuectl.worker import outage
from queuectl.worker.waiter import LISTEN_FALLBACK_POLL

log = logging.getLogger("queuectl.supervisor")
# After the LISTEN connection is lost: the first retry, doubled up to the last. The
# pool's workers meanwhile look for work every second (their safety poll).
RETRY = (0.5, 30.0)


class Relay:
    def __init__(self, listener, wake):
        """listener: a PostgresListener (store.listener()); wake: the pool's WakeSocket."""
        self.listener = listener
        self.wake = wake
        self._stopping = False
        self._stopped = threading.Event()  # ends a backoff's wait at once
        self._stop_read, self._stop_write = os.pipe()
        os.set_blocking(self._stop_read, False)
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        try:
            os.write(self._stop_write, b"x")
        except OSError:
            pass
        self._thread.join(timeout=5.0)
        self.listener.close()
        os.close(self._stop_read)
        os.close(self._stop_write)

    def _run(self) -> None:
        delay = RETRY[0]
        while not self._stopping:
            try:
                notified = self.listener.wait(LISTEN_FALLBACK_POLL * 30, lambda: self._stopping, self._stop_read)
            except DatabaseError as err:
                # Logged like every outage of this process: the first, then once a minute.
                outage.failed(log, "LISTEN connection lost (workers look for work every second until it is back)", err, "listen")
                self._stopped.wait(delay)  # a stop does not wait out the backoff
                delay = min(delay * 2, RETRY[1])
                continue
            outage.recovered(log, "listen")
            delay = RETRY[0]
            if notified:
                self.wake.poke()
