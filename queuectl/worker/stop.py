"""`queuectl worker stop`: signal this host's supervisors, flag the others' rows, wait."""

import os
import signal
import time

from queuectl.errors import StillRunning
from queuectl.states import StopMode
from queuectl.worker import identity

_POLL = 0.1


def _is_queuectl(proc) -> bool:
    try:
        return "queuectl" in " ".join(proc.cmdline())
    except Exception:
        return False


def stop(store, *, now: bool, timeout: float | None, wait: bool = True, hostname: str | None = None) -> str:
    """Ask every running supervisor to stop; what was done. StillRunning if some are
    still running once `timeout` has passed."""
    hostname = hostname or identity.default_hostname()
    mode = StopMode.NOW if now else StopMode.GRACEFUL
    # A live-looking row of this host whose process is gone is a crashed supervisor,
    # not a running one (the next supervisor started here declares it dead). Every
    # supervisor polls its row: this is how other hosts hear of the stop.
    supervisors = store.request_stop(mode, lambda row: row.host != hostname or identity.local_process(row.pid, row.pid_started) is not None)
    if not supervisors:
        return "no supervisors are running"
    signalled = 0
    for row in supervisors:
        if row.host != hostname:
            continue
        proc = identity.local_process(row.pid, row.pid_started)
        if proc is not None and _is_queuectl(proc):
            try:
                os.kill(row.pid, signal.SIGUSR1 if now else signal.SIGTERM)
                signalled += 1
            except ProcessLookupError:
                pass
    remote = sum(1 for row in supervisors if row.host != hostname)
    what = f"asked {len(supervisors)} supervisor(s) to stop {'now' if now else 'after their running jobs'}"
    what += f" ({signalled} signalled here, {remote} on other hosts via the database)"
    if not wait:
        return what
    ids = [row.id for row in supervisors]
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        running = [r for r in store.live_supervisors() if r.id in ids]
        running = [r for r in running if r.host != hostname or identity.local_process(r.pid, r.pid_started)]
        if not running:
            return f"{what}; all stopped"
        if deadline is not None and time.monotonic() >= deadline:
            raise StillRunning(f"{what}; {len(running)} still running after {timeout:g}s")
        time.sleep(_POLL)
