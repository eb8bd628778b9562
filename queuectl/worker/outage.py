"""Riding out a database outage (a PostgreSQL restart, a long lock, a server out of
connections) in the runtime, and saying so without flooding the log.

An outage is reported per process: its first failure at once, then at most one line
a minute however many calls fail (every worker of a pool, its heartbeat thread and
its supervisor retry on their own), and one line when the database answers again.
A failure of another kind within the minute is logged once too: a connection cut by
a restart, then the server refusing new ones for want of free connections.
A hundred workers waiting for a free connection then log a line a minute each, not
one per try.

(Retries of *jobs* are the job state machine's: store/transitions.py, `fail`.)"""

import logging
import os
import threading
import time

from queuectl.errors import DatabaseError

log = logging.getLogger("queuectl.worker")
MAX_DELAY = 5.0
# At most one line per process this often while an outage lasts.
REPORT_EVERY = 60.0


class _Outage:
    """One condition's current outage in this process: since when, and the failures
    not logged yet."""

    def __init__(self):
        self.since: float | None = None
        self.logged_at = 0.0
        self.failures = 0
        self.unlogged = 0
        self.kinds: set[str] = set()  # of the failures logged since logged_at


# The conditions reported apart, each with the line that says it is over: the
# database (any call), and an idle worker's LISTEN connection (its own connection,
# refused while the worker's other one still works).
RECOVERED = {"database": "database available again", "listen": "LISTEN connection back"}
_LOCK = threading.Lock()  # a worker's heartbeat thread reports too
_OUTAGES = {condition: _Outage() for condition in RECOVERED}


def _forget_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()
    for condition in RECOVERED:
        _OUTAGES[condition] = _Outage()  # a forked worker reports its own outages


os.register_at_fork(after_in_child=_forget_in_child)


def failed(logger: logging.Logger, what: str, err: BaseException, condition: str = "database") -> None:
    """A database call failed: log it if it is the first failure of an outage of this
    condition, or if REPORT_EVERY has passed since this process last did."""
    now, kind = time.monotonic(), type(err).__name__
    with _LOCK:
        outage = _OUTAGES[condition]
        outage.failures += 1
        if outage.since is None:
            outage.since, outage.logged_at, outage.unlogged, outage.kinds = now, now, 0, {kind}
            line = f"{what} (retrying; logged at most once a minute until it recovers): {err}"
        elif now - outage.logged_at >= REPORT_EVERY or kind not in outage.kinds:
            line = f"{what} (failing for {now - outage.since:.0f}s, {outage.unlogged} failure(s) not logged since the last line): {err}"
            if now - outage.logged_at >= REPORT_EVERY:
                outage.logged_at, outage.kinds = now, set()
            outage.unlogged = 0
            outage.kinds.add(kind)
        else:
            outage.unlogged += 1
            return
    logger.warning("%s", line)


def recovered(logger: logging.Logger, condition: str = "database") -> None:
    """A call of this condition succeeded: if an outage was reported, say it is over."""
    if _OUTAGES[condition].since is None:  # the common case, without the lock
        return
    with _LOCK:
        outage = _OUTAGES[condition]
        if outage.since is None:
            return
        took, failures = time.monotonic() - outage.since, outage.failures
        outage.since, outage.failures, outage.unlogged = None, 0, 0
    logger.info("%s after %.1fs (%d failed call(s))", RECOVERED[condition], took, failures)


def ride_out(action, give_up=lambda: False):
    """Run action(), retrying with exponential backoff while the database is unusable.

    Returns None if give_up() turns true between tries; never raises DatabaseError.
    """
    delay = 0.2
    while True:
        try:
            result = action()
        except DatabaseError as err:
            if give_up():
                return None
            failed(log, "database unavailable", err)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
            continue
        recovered(log)
        return result
