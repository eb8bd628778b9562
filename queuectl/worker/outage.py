"""Riding out a database outage (a PostgreSQL restart, a long lock) in the runtime.

(Retries of *jobs* are the job state machine's: store/transitions.py, `fail`.)"""

import logging
import time

from queuectl.errors import DatabaseError

log = logging.getLogger("queuectl.worker")
MAX_DELAY = 5.0


def ride_out(action, give_up=lambda: False):
    """Run action(), retrying with exponential backoff while the database is unusable.

    Returns None if give_up() turns true between tries; never raises DatabaseError.
    """
    delay = 0.2
    while True:
        try:
            return action()
        except DatabaseError as err:
            if give_up():
                return None
            log.warning("database unavailable (retrying in %.1fs): %s", delay, err)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
