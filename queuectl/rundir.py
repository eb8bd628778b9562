"""This user's runtime directory on this host: where workers publish their jobs'
process groups (worker/jobgroup.py) and where idle pools wait to be woken
(store/wakeup.py)."""

import os
import stat
from pathlib import Path

from queuectl.errors import QueuectlError


def runtime_path() -> Path:
    """Where runtime_dir() is, without creating or checking it (a sender that finds
    nothing there has nobody to wake)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base, "queuectl") if base else _state_home() / "queuectl" / "run"


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/queuectl, else $XDG_STATE_HOME/queuectl/run (by default
    ~/.local/state/queuectl/run): a directory private to this user, the same for every
    process of the user on this host (see docs/design.md, "Where job groups are published").

    Never a predictable name in a shared /tmp: another user could create it first and
    so stop every `worker start` of this user."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = runtime_path()
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
    missing: list[Path] = []
    while not os.path.lexists(path) and (parents or not missing):
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:  # another process of this user made it meanwhile
            pass
