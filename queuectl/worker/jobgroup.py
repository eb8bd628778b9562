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

The same mapping carries the worker's last successful heartbeat (a CLOCK_MONOTONIC
time, the same clock in every process of the host): a supervisor sees a hung worker
(SIGSTOP, a stuck thread) without asking the database, and fences its job in time.
"""

import ctypes
import mmap
import os
import stat
from pathlib import Path

import psutil

from queuectl.errors import QueuectlError
from queuectl.worker.runner import kill_group


class _Cell(ctypes.Structure):
    # The group first, at offset 0: kill_orphaned reads only that.
    _fields_ = [("pgid", ctypes.c_int32), ("_pad", ctypes.c_int32), ("beat", ctypes.c_double)]


_SIZE = ctypes.sizeof(_Cell)
_PGID_SIZE = ctypes.sizeof(ctypes.c_int32)


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/queuectl, else $XDG_STATE_HOME/queuectl/run (by default
    ~/.local/state/queuectl/run): a directory private to this user, the same for every
    process of the user on this host (see docs/design.md, "Where job groups are published").

    Never a predictable name in a shared /tmp: another user could create it first and
    so stop every `worker start` of this user."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base, "queuectl") if base else _state_home() / "queuectl" / "run"
    try:
        # XDG_RUNTIME_DIR itself is made (and removed) by the session manager.
        _make_private(path, parents=not base)
    except OSError as err:
        raise QueuectlError(
            f"cannot create {path}: {err.strerror or err}; set XDG_RUNTIME_DIR (or XDG_STATE_HOME) to a directory of this user"
        ) from None
    info = os.lstat(path)
    # Another user could have made it first (or planted a symlink).
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise QueuectlError(f"{path} is not a private directory of this user; remove it or set XDG_RUNTIME_DIR")
    return path


def _state_home() -> Path:
    """$XDG_STATE_HOME, else ~/.local/state (the XDG base directory spec)."""
    base = os.environ.get("XDG_STATE_HOME")
    return Path(base) if base and os.path.isabs(base) else Path(os.path.expanduser("~"), ".local", "state")


def _make_private(path: Path, parents: bool) -> None:
    """mkdir (-p with `parents`), each directory it creates 0700 (the XDG base directory
    spec asks that of the base directories too)."""
    missing = []
    while not os.path.lexists(path) and (parents or not missing):
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:  # another process of this user made it meanwhile
            pass


def _path(worker_id: str) -> Path:
    return runtime_dir() / f"{worker_id}.pgid"


class JobGroup:
    """A worker's published job process group (`.value`, 0 when no job runs) and
    the time.monotonic() of its last heartbeat that reached the database (`.beat`)."""

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

    @value.setter
    def value(self, pgid: int) -> None:
        self._cell.pgid = pgid

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
    """A dead worker of this host: kill its job's process group if it is still one of
    `job_ids` (the jobs the worker held), then forget it. True if a group was killed."""
    path = _path(worker_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    pgid = ctypes.c_int32.from_buffer_copy(data[:_PGID_SIZE]).value if len(data) >= _PGID_SIZE else 0
    killed = bool(pgid and job_ids and _group_runs(pgid, set(job_ids)) and kill_group(pgid))
    path.unlink(missing_ok=True)
    return killed


def _group_runs(pgid: int, job_ids: set[str]) -> bool:
    """Whether process group `pgid` still runs one of these jobs: a recycled pid must
    not get an unrelated group killed. Every job process inherits QUEUECTL_JOB_ID."""
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.environ().get("QUEUECTL_JOB_ID") in job_ids:
                return True
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return False
