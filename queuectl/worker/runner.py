"""Running one job's command: `sh -c` in its own process group, output captured
without ever blocking the job, a timeout, and no process left behind."""

import errno
import math
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

# After SIGTERM, a job's process group has this long before SIGKILL.
KILL_GRACE = 2.0
_READ_SIZE = 65536


@dataclass
class Outcome:
    exit_code: int | None
    output: str
    error: str | None  # None means success
    stopped: bool = False  # killed because the worker was told to stop now


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


class _Tail:
    """The last `limit` bytes of a stream, in bounded memory."""

    def __init__(self, limit: int):
        self.limit = limit
        self.buffer = bytearray()

    def add(self, data: bytes) -> None:
        if not self.limit:
            return
        self.buffer += data
        if len(self.buffer) > 2 * self.limit:
            del self.buffer[: len(self.buffer) - self.limit]

    def text(self) -> str:
        data = bytes(self.buffer[-self.limit :]) if self.limit else b""
        # PostgreSQL text cannot hold NUL; invalid UTF-8 becomes U+FFFD.
        return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def run(
    command: str,
    *,
    cwd: str,
    env: dict[str, str],
    timeout: float | None,
    output_limit: int,
    on_start: Callable[[int], None],
    on_end: Callable[[], None],
    tick: Callable[[], bool | float],
    tick_interval: float = 0.1,
) -> Outcome:
    """Run `command` to its end. `on_start(pgid)` once its process group exists and
    `on_end()` once that group is killed; `tick()` is called about every tick_interval
    seconds while it runs, and returns True to have the job killed at once (stop now:
    the Outcome says `stopped`), or a number of seconds to have it terminated: SIGTERM
    now, SIGKILL once those have passed (a cancel)."""
    tail = _Tail(output_limit)
    try:
        # No preexec_fn, so CPython starts the shell with vfork + exec, the cheapest
        # way there is. If this worker dies, the supervisor (or, when the supervisor
        # died too, the next one on this host) kills the job's group: see jobgroup.py.
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as err:
        return Outcome(None, "", f"cannot start the job in {cwd!r}: {err.strerror or err}")
    pgid = proc.pid  # start_new_session: the shell leads its own process group
    on_start(pgid)
    assert proc.stdout is not None  # stdout=PIPE
    out_fd = proc.stdout.fileno()
    os.set_blocking(out_fd, False)
    exit_fd = os.pidfd_open(proc.pid)
    deadline = time.monotonic() + timeout if timeout else None
    next_tick = time.monotonic() + tick_interval
    timed_out = stopped = terminated = False
    kill_at = None
    watching = [out_fd, exit_fd]
    try:
        while True:
            now = time.monotonic()
            wake = next_tick
            if deadline and not timed_out:
                wake = min(wake, deadline)
            if kill_at:
                wake = min(wake, kill_at)
            ready, _, _ = select.select(watching, [], [], max(0.0, wake - now))
            if out_fd in ready:
                data = _read(out_fd)
                if data:
                    tail.add(data)
                elif data == b"":  # EOF: the job closed its output; keep waiting for its exit
                    watching.remove(out_fd)
            if exit_fd in ready:
                break
            now = time.monotonic()
            if deadline and not timed_out and now >= deadline:
                timed_out = True
                kill_group(pgid, signal.SIGTERM)
                kill_at = now + KILL_GRACE
            if kill_at and now >= kill_at:
                kill_group(pgid, signal.SIGKILL)
                kill_at = None
            if now >= next_tick:
                next_tick = now + tick_interval
                verdict = tick() if not stopped else False
                if verdict is True:
                    stopped = True
                    kill_group(pgid, signal.SIGKILL)
                elif verdict is not False and not terminated:
                    terminated = True
                    kill_group(pgid, signal.SIGTERM)
                    kill_at = min(kill_at or math.inf, now + float(verdict))
        returncode = proc.wait()
    finally:
        # The job is its process group: anything it left running there ends with it.
        kill_group(pgid, signal.SIGKILL)
        on_end()  # before the drain below: from here on the group id may be anyone's
    try:
        # What is still in the pipe; a daemon that escaped the group and holds the
        # pipe open must not keep us here.
        drain_until = time.monotonic() + 0.5
        while out_fd in watching and time.monotonic() < drain_until and (data := _read(out_fd)):
            tail.add(data)
    finally:
        os.close(exit_fd)
        proc.stdout.close()
        if proc.returncode is None:
            proc.wait()
    output = tail.text()
    if stopped:
        return Outcome(None, output, "stopped", stopped=True)
    if timed_out:
        return Outcome(_exit_code(returncode), output, f"timed out after {timeout:g}s")
    if returncode == 0:
        return Outcome(0, output, None)
    if returncode < 0:
        return Outcome(128 - returncode, output, f"killed by signal {_signal_name(-returncode)}")
    if returncode == 127:
        return Outcome(127, output, "exit code 127 (command not found?)")
    return Outcome(returncode, output, f"exit code {returncode}")


def _signal_name(signum: int) -> str:
    """SIGTERM, or the number of a signal Python has no name for (real-time ones)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _read(fd: int) -> bytes | None:
    try:
        return os.read(fd, _READ_SIZE)
    except BlockingIOError:
        return None
    except OSError as err:
        if err.errno == errno.EIO:
            return b""
        raise
