"""The local wake-up: a SQLite transaction that made work claimable wakes this
host's idle workers the moment it has committed (docs/design.md section 18).

SQLite has no server to carry a notification, so the host carries it. Each
supervisor binds one unix datagram socket, `<runtime dir>/wake-<database>-<supervisor id>`
(<database>: a hash of the SQLite file's real path),
before it forks its workers; they inherit it and, when idle, wait on it in epoll
with EPOLLEXCLUSIVE, so one datagram wakes one idle worker, not the whole pool.
The committing process sends one byte to every socket of that database
(a few microseconds each, never blocking); a socket nobody holds any more (its
pool was SIGKILLed) refuses the byte and its file is removed.

A woken worker takes every byte waiting (they all say the same thing) and, when
its claim finds a job, passes one byte on (`poke`): the next idle worker looks
too, and so on while jobs are found. So a burst of jobs reaches every idle worker
one claim apart, and a lone job costs one claim, not one per idle worker.

Best effort by design: the workers' slow safety poll (worker/waiter.py) covers a
lost byte, a full socket buffer, and writers that send none (another user, the
sqlite3 shell).
"""

import hashlib
import os
import select
import socket
import stat

from queuectl.rundir import runtime_dir, runtime_path

_BYTE = b"\x01"


def _prefix(database: str) -> str:
    """The names of the wake-up sockets of the SQLite file `database` start so: one
    prefix per file, whatever path names it (symbolic links resolved)."""
    digest = hashlib.sha256(os.path.realpath(database).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"wake-{digest}-"


def _open_dir(path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _at(dir_fd: int, name: str) -> str:
    """A socket address through the directory's descriptor: a unix socket's path may
    not exceed 107 bytes, and a runtime directory under a long $HOME can."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def wake(database: str) -> int:
    """Send one byte to each pool waiting on `database`; how many took it. Never
    raises: a wake-up that cannot be sent is the safety poll's to cover."""
    prefix = _prefix(database)
    try:
        dir_fd = _open_dir(runtime_path())
    except OSError:
        return 0  # no pool of this user has ever run on this host
    sent = 0
    try:
        sender = _sender()
        for name in os.listdir(dir_fd):
            if not name.startswith(prefix):
                continue
            try:
                sender.sendto(_BYTE, _at(dir_fd, name))
                sent += 1
            except (ConnectionRefusedError, FileNotFoundError):
                # Nobody holds it any more (its pool was SIGKILLed), or it was just
                # removed (its pool stopped).
                _remove_stale(dir_fd, name)
            except OSError:
                pass  # its buffer is full (it will wake anyway), or a stranger's file
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return sent


def _remove_stale(dir_fd: int, name: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(name, dir_fd=dir_fd).st_mode):
            os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


_SENDER: socket.socket | None = None


def _sender() -> socket.socket:
    """One unbound datagram socket per process, for every wake-up it sends."""
    global _SENDER
    if _SENDER is None:
        _SENDER = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _SENDER.setblocking(False)
    return _SENDER


def _forget_sender_in_child() -> None:
    global _SENDER
    _SENDER = None  # the parent's stays the parent's (closed with it)


os.register_at_fork(after_in_child=_forget_sender_in_child)


class WakeSocket:
    """A pool's wake-up socket: bound by its supervisor, shared by its workers."""

    def __init__(self, database: str, name: str):
        """Bind `<runtime dir>/wake-<database>-<name>`. OSError (or QueuectlError for
        the runtime directory) if it cannot be."""
        # The files of pools SIGKILLed before are swept first (refused, so removed),
        # so that none outlives a restart; the byte this sends a live pool costs it
        # one look.
        wake(database)
        self.name = _prefix(database) + name
        self.dir_fd = _open_dir(runtime_dir())
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(_at(self.dir_fd, self.name))
        except OSError:
            self.sock.close()
            os.close(self.dir_fd)
            raise
        self.sock.setblocking(False)
        self.owner = os.getpid()

    def fileno(self) -> int:
        return self.sock.fileno()

    def take(self) -> bool:
        """Take every byte waiting; whether there was one."""
        taken = False
        while True:
            try:
                self.sock.recv(16)
                taken = True
            except BlockingIOError:
                return taken
            except InterruptedError:
                continue
            except OSError:
                return taken

    def poke(self) -> None:
        """Wake one more idle worker of this pool (pass the baton on)."""
        try:
            _sender().sendto(_BYTE, _at(self.dir_fd, self.name))
        except OSError:
            pass

    def close(self) -> None:
        """The supervisor's end: nobody waits here any more. (A worker only lets go
        of its inherited descriptors when it exits.)"""
        if os.getpid() == self.owner:
            try:
                os.unlink(self.name, dir_fd=self.dir_fd)
            except OSError:
                pass
        self.sock.close()
        os.close(self.dir_fd)


class WakeWait:
    """One worker's wait on its pool's wake-up socket and on its own signals."""

    def __init__(self, wake: WakeSocket, signal_fd: int | None):
        self.wake = wake
        self.signal_fd = signal_fd
        self.epoll = select.epoll()
        # EPOLLEXCLUSIVE: a byte wakes one of the idle workers waiting, not all of them.
        self.epoll.register(wake.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
        if signal_fd is not None:
            self.epoll.register(signal_fd, select.EPOLLIN)

    def wait(self, timeout: float) -> bool:
        """Until a wake-up (True), a signal or the timeout (False)."""
        try:
            events = self.epoll.poll(max(0.0, timeout))
        except InterruptedError:
            events = []
        woken = False
        for fd, _mask in events:
            if fd == self.signal_fd:
                drain_pipe(fd)
        if any(fd == self.wake.fileno() for fd, _ in events):
            woken = self.wake.take()
        return woken

    def close(self) -> None:
        self.epoll.close()


def drain_pipe(fd: int) -> None:
    """Empty a non-blocking signal wake-up pipe (signal.set_wakeup_fd): its bytes only
    say that a signal came, which the handlers already recorded."""
    try:
        while os.read(fd, 64):
            pass
    except OSError:
        pass
