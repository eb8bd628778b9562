"""Where a worker publishes its running job's process group, so that whoever
outlives the worker can kill the job.

Each worker has a 16-byte file in a per-user runtime directory, mapped into memory
(MAP_SHARED) before the worker is forked: publishing a job's group is a plain
memory store, no system call and no database write on the hot path. The mapping
is shared with the supervisor (which kills the group the moment its worker dies)
and the file outlives both processes, so when the whole tree is SIGKILLed a later
supervisor on this host still finds the group, checks it really is the job it
recovers (its environment names the job) and kills it before the job can run
again. This replaces PR_SET_PDEATHSIG, which needed an extra exec per job (~1 ms,
`setpriv`) and killed only the shell, not the processes it started.

Before a group is killed, its leader's start time is compared with the one
published (no database): a group id that the kernel has handed to a stranger since
the job ended is never killed, and a job that emptied its environment (`env -i`) is
still recognised. The worker publishes that start time without reading /proc when
it can (see _leader_ticks): the read cost about 0.3 ms of CPU per job.

The same mapping carries the worker's last successful heartbeat (a CLOCK_MONOTONIC
time, the same clock in every process of the host): a supervisor sees a hung worker
(SIGSTOP, a stuck thread) without asking the database, and fences its job in time.
"""

import ctypes
import mmap
import os
from pathlib import Path

import psutil

from queuectl.rundir import runtime_dir
from queuectl.worker.runner import kill_group


class _Cell(ctypes.Structure):
    # The group first, at offset 0: files of earlier versions held only that (and a beat).
    _fields_ = [
        ("pgid", ctypes.c_int32),
        ("_pad", ctypes.c_int32),
        ("beat", ctypes.c_double),
        ("start", ctypes.c_uint64),  # the group leader's start time, see _start_ticks
    ]


_SIZE = ctypes.sizeof(_Cell)
_PGID_SIZE = ctypes.sizeof(ctypes.c_int32)


def _path(worker_id: str) -> Path:
    return runtime_dir() / f"{worker_id}.pgid"


class JobGroup:
    """A worker's published job process group (`.value`, 0 when no job runs) and
    the time.monotonic() of its last heartbeat that reached the database (`.beat`).
    Published by the worker (`publish`, `clear`), killed by whoever outlives it (`kill`)."""

    def __init__(self, worker_id: str):
        self.path = _path(worker_id)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self._cell = _Cell.from_buffer(self._map)

    @property
    def value(self) -> int:
        return self._cell.pgid

    def publish(self, pgid: int, born: tuple[int, int] | None = None) -> None:
        """A job started, in group `pgid` led by its shell (whose pid it is); `born`:
        CLOCK_BOOTTIME (ns) just before and just after that shell was forked."""
        # The start first: whoever sees the group sees its start with it.
        self._cell.start = _leader_ticks(pgid, born) or 0
        self._cell.pgid = pgid

    def clear(self) -> None:
        """The job's group was killed: from here on its id may be anyone's."""
        self._cell.pgid = 0

    def kill(self) -> bool:
        """Kill the published group if it is still the job's. True if it was killed."""
        pgid = self._cell.pgid
        return bool(pgid and _same_group(pgid, self._cell.start) and kill_group(pgid))

    @property
    def beat(self) -> float:
        return self._cell.beat

    @beat.setter
    def beat(self, when: float) -> None:
        self._cell.beat = when

    def remove(self) -> None:
        """The worker ended and its job group was dealt with: forget it."""
        self.path.unlink(missing_ok=True)


def kill_orphaned(worker_id: str, job_ids: list[str]) -> bool:
    """A dead worker of this host: kill its job's process group if it is still the job
    the worker held (one of `job_ids`), then forget it. True if a group was killed."""
    path = _path(worker_id)
    try:
        with open(path, "rb") as file:
            data = file.read()
            written = os.fstat(file.fileno()).st_mtime
    except FileNotFoundError:
        return False
    killed = False
    # A file from before the last boot (the fallback directory is not a tmpfs) names
    # groups that ended with it: their ids are anyone's now.
    if job_ids and len(data) >= _PGID_SIZE and written >= psutil.boot_time():
        pgid = ctypes.c_int32.from_buffer_copy(data[:_PGID_SIZE]).value
        if len(data) >= _SIZE:
            same = _same_group(pgid, _Cell.from_buffer_copy(data[:_SIZE]).start)
        else:  # written by an earlier version, with no start time: the job's environment tells
            same = _group_runs(pgid, set(job_ids))
        killed = bool(pgid and same and kill_group(pgid))
    path.unlink(missing_ok=True)
    return killed


def _same_group(pgid: int, start: int) -> bool:
    """Whether process group `pgid` is still the one whose leader started at `start`.

    With its leader alive, the start times tell. With no leader, the group is what the
    job left running, or nothing: Linux does not hand out a pid number while a process
    group of that id exists, so a leaderless group `pgid` cannot be a stranger's."""
    leader = _start_ticks(pgid)
    return leader is None or leader == start


_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
# Whether this process has seen the kernel's start times agree with CLOCK_BOOTTIME:
# None until its first job whose birth falls within one tick, which is read from
# /proc as well (see _leader_ticks).
_boottime_agrees: bool | None = None


def _leader_ticks(pid: int, born: tuple[int, int] | None) -> int | None:
    """A new job's leader's start time, as _start_ticks gives it. The kernel stamps a
    process at fork with CLOCK_BOOTTIME and shows it in clock ticks (10 ms), rounded
    down; so when the clock read just before and just after the fork (`born`) fall in
    the same tick, that tick is the start time, no /proc read needed (most jobs: a
    fork takes a quarter of a millisecond). Checked once per process against /proc, so that a
    kernel that stamped otherwise would only cost the read, never a wrong guard."""
    global _boottime_agrees
    if born is None or _boottime_agrees is False or born[0] // _TICK_NS != born[1] // _TICK_NS:
        return _start_ticks(pid)
    tick = born[0] // _TICK_NS
    if _boottime_agrees is None:
        read = _start_ticks(pid)  # the leader has not been reaped yet: readable
        _boottime_agrees = read == tick
        return read
    return tick


def _start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (/proc/<pid>/stat, field 22),
    None if no such process. A pid and its start time name one process for the whole
    uptime: a recycled pid starts later. Readable for a zombie (not yet reaped) too."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat_line = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')'.
    return int(stat_line[stat_line.rindex(b")") + 2 :].split()[19])


def _group_runs(pgid: int, job_ids: set[str]) -> bool:
    """Whether process group `pgid` still runs one of these jobs: every job process
    inherits QUEUECTL_JOB_ID (unless it empties its environment)."""
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.environ().get("QUEUECTL_JOB_ID") in job_ids:
                return True
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return False
