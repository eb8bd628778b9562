"""Running one job's command: `sh -c` in its own process group, output captured
without ever blocking the job, a timeout, and no process left behind."""

import codecs
import errno
import math
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from queuectl.states import TIMEOUT_ERROR

# After SIGTERM, a job's process group has this long before SIGKILL.
KILL_GRACE = 2.0
_READ_SIZE = 65536


@dataclass
class Outcome:
    exit_code: int | None
    output: str
    error: str | None  # None means success
    stopped: bool = False  # killed because the worker was told to stop now
    output_size: int | None = field(default=None, compare=False)  # characters printed in all (None: len(output))


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


class Tail:
    """The last `limit` bytes of a job's output as text, in bounded memory, and how
    many characters it printed in all; read by the worker's output stream (another
    thread) while the job runs.

    Text, because the database stores text: output is decoded as UTF-8 as it comes
    (a character split across two reads is kept whole), and what is not UTF-8 is kept
    as backslash escapes (a byte 0xff becomes the four characters \\xff, NUL becomes
    \\x00, which PostgreSQL text cannot hold), so binary output is shown, never
    silently mangled. `size` counts characters of that text, so a reader that has
    seen `n` of them knows which part of the kept tail is new.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.size = 0
        self._text = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
        self._lock = threading.Lock()

    def add(self, data: bytes, final: bool = False) -> None:
        text = self._decoder.decode(data, final)
        if "\x00" in text:
            text = text.replace("\x00", "\\x00")
        with self._lock:
            self.size += len(text)
            if not self.limit:
                return
            self._text += text
            if len(self._text) > 2 * self.limit:
                self._text = self._text[-self.limit :]

    def snapshot(self) -> tuple[str, int]:
        """(the kept tail: at most `limit` bytes in UTF-8, characters printed in all)."""
        with self._lock:
            text, size = self._text[-self.limit :] if self.limit else "", self.size
        encoded = text.encode("utf-8", errors="surrogatepass")
        if len(encoded) > self.limit:  # multi-byte characters: cut to the limit, on a character boundary
            text = encoded[-self.limit :].decode("utf-8", errors="ignore")
        return text, size


def run(
    command: str,
    *,
    cwd: str,
    env: dict[str, str] | dict[bytes, bytes],
    timeout: float | None,
    output_limit: int,
    on_start: Callable[[int, tuple[int, int]], None],
    on_end: Callable[[], None],
    tick: Callable[[], bool | float],
    tick_interval: float = 0.1,
    tail: Tail | None = None,
) -> Outcome:
    """Run `command` to its end. `on_start(pgid, born)` once its process group exists
    (`born`: CLOCK_BOOTTIME in ns just before and just after its leader was forked) and
    `on_end()` once that group is killed; `tick()` is called about every tick_interval
    seconds while it runs, and returns True to have the job killed at once (stop now:
    the Outcome says `stopped`), or a number of seconds to have it terminated: SIGTERM
    now, SIGKILL once those have passed (a cancel). `tail`: where the output goes,
    for a caller that reads it while the job runs (else one of output_limit)."""
    tail = tail or Tail(output_limit)
    # The job's output pipe, ours rather than Popen's (which wraps its end in a
    # buffered file object we would not use): its write end goes to the job only.
    out_fd, job_out = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(out_fd, False)  # ours only: the job's end blocks, as a pipe should
    before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    try:
        # No preexec_fn, so CPython starts the shell with vfork + exec, the cheapest
        # way there is. If this worker dies, the supervisor (or, when the supervisor
        # died too, the next one on this host) kills the job's group: see jobgroup.py.
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=cwd,
            env=env,
            stdin=_devnull(),
            stdout=job_out,
            stderr=job_out,
            start_new_session=True,
        )
    except BaseException as err:
        os.close(out_fd)
        if isinstance(err, OSError):
            return Outcome(None, "", f"cannot start the job in {cwd!r}: {err.strerror or err}")
        raise
    finally:
        os.close(job_out)  # the job's copy is the only writer left: its exit is our EOF
    pgid = proc.pid  # start_new_session: the shell leads its own process group
    on_start(pgid, (before, time.clock_gettime_ns(time.CLOCK_BOOTTIME)))
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
        os.close(out_fd)
        if proc.returncode is None:
            proc.wait()
    tail.add(b"", final=True)  # an incomplete character at the very end
    output, size = tail.snapshot()
    if stopped:
        return Outcome(None, output, "stopped", stopped=True, output_size=size)
    if timed_out:
        return Outcome(_exit_code(returncode), output, f"{TIMEOUT_ERROR} {timeout:g}s", output_size=size)
    if returncode == 0:
        return Outcome(0, output, None, output_size=size)
    if returncode < 0:
        return Outcome(128 - returncode, output, f"killed by signal {_signal_name(-returncode)}", output_size=size)
    if returncode == 127:
        return Outcome(127, output, "exit code 127 (command not found?)", output_size=size)
    return Outcome(returncode, output, f"exit code {returncode}", output_size=size)


def job_environment(base: dict[bytes, bytes], **extra: str) -> dict[bytes, bytes]:
    """A job's environment: its worker's (`base`, encoded once per process: Popen
    encodes every str variable anew for each job) and the job's own variables."""
    env = dict(base)
    env.update((os.fsencode(k), os.fsencode(v)) for k, v in extra.items())
    return env


_DEVNULL: int | None = None


def _devnull() -> int:
    """/dev/null, opened once per process: every job's stdin."""
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _DEVNULL


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
