"""`queuectl worker stop`: signal this host's supervisors, flag the others' rows, wait."""

import os
import signal
import time
from dataclasses import dataclass

from queuectl.worker import identity, registry

_POLL = 0.1


@dataclass
class StopResult:
    message: str
    exit_code: int = 0


def _is_queuectl(proc) -> bool:
    try:
        return "queuectl" in " ".join(proc.cmdline())
    except Exception:
        return False


def stop(db, *, now: bool, timeout: float | None, wait: bool = True, hostname: str | None = None) -> StopResult:
    hostname = hostname or identity.default_hostname()
    mode = "now" if now else "graceful"
    with db.begin() as conn:
        # A live-looking row of this host whose process is gone is a crashed supervisor,
        # not a running one (the next supervisor started here declares it dead).
        supervisors = [
            row for row in registry.live_supervisors(conn) if row.host != hostname or identity.local_process(row.pid, row.pid_started)
        ]
        if not supervisors:
            return StopResult("no supervisors are running")
        # Every supervisor polls its row: this is how other hosts hear of the stop.
        registry.request_stop(conn, [s.id for s in supervisors], mode)
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
        return StopResult(what)
    ids = [row.id for row in supervisors]
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with db.read() as conn:
            running = [r for r in registry.live_supervisors(conn) if r.id in ids]
        running = [r for r in running if r.host != hostname or identity.local_process(r.pid, r.pid_started)]
        if not running:
            return StopResult(f"{what}; all stopped")
        if deadline is not None and time.monotonic() >= deadline:
            return StopResult(f"{what}; {len(running)} still running after {timeout:g}s", exit_code=1)
        time.sleep(_POLL)
