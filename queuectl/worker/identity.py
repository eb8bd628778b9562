"""Who is who: host identity, ids, and whether a recorded pid is still that process."""

import os
import secrets
import socket

import psutil

# A pid's create_time() as recorded and as read later differ by float rounding only.
_START_TIME_SLACK = 0.5


def default_hostname() -> str:
    return os.environ.get("QUEUECTL_HOSTNAME") or socket.gethostname()


def new_id(prefix: str) -> str:
    """A unique id per process start, never reused."""
    return f"{prefix}-{secrets.token_hex(6)}"


def start_time(pid: int | None = None) -> float:
    return psutil.Process(pid or os.getpid()).create_time()


def local_process(pid: int, pid_started: float) -> psutil.Process | None:
    """The process `pid` on this machine if it is the one recorded (not a recycled pid)."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - pid_started) > _START_TIME_SLACK:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None
