"""`queuectl status --watch`: the status, and the last jobs to finish, redrawn every
interval until `q` or Ctrl-C (both exit 0).

On a terminal each frame is drawn over the last on the alternate screen: cursor
home, every line followed by clear-to-end-of-line, then clear-below, so no frame
is ever blanked first (no flicker); lines are cut to the terminal's width and the
frame to its height. Piped, each snapshot is printed under a `--- TIME ---` line,
with no escape sequence but the state colours of --color always; with --json, one
JSON document per line. A reader that leaves (`| head`) ends the watch quietly.

Keys are read only while stdin is a terminal, in cbreak mode (one key at a time,
unechoed; Ctrl-C still interrupts). The terminal's settings and screen are given
back at exit, on SIGTERM too, and while Ctrl-Z has the watch stopped.
"""

import json
import os
import select
import shutil
import signal
import sys
import termios
import time
import tty
from contextlib import contextmanager

from queuectl import status as status_mod
from queuectl.cli import render, status_view
from queuectl.errors import DatabaseError
from queuectl.timeutil import iso, utcnow

# How many of the jobs that ended last each frame shows.
FINISHED = 5
QUIT_KEYS = b"qQ"

ENTER_SCREEN = "\x1b[?1049h\x1b[?25l"  # the alternate screen, cursor hidden
LEAVE_SCREEN = "\x1b[?25h\x1b[?1049l"  # cursor shown, the user's screen back
HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"


def run(store, interval: float, *, json_lines: bool = False, colour: bool = False) -> int:
    """Show a frame of `store`'s status every `interval` seconds until q, Ctrl-C,
    SIGTERM or the reader of stdout leaving; 0."""
    on_screen = render.is_terminal() and not json_lines
    terminal = _Terminal(on_screen)
    try:
        with terminal, _signals(terminal) as wakeup:
            keys = terminal.keys
            next_frame = time.monotonic()
            while True:
                if on_screen:
                    _draw(_screen_lines(store, interval, colour))
                else:
                    _print_snapshot(store, json_lines, colour)
                # Frames keep to the interval's beat; a read slower than that
                # starts the count again rather than drawing back to back.
                next_frame = max(next_frame + interval, time.monotonic())
                if _wait(keys, wakeup, next_frame):
                    return 0
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader left; the flush at exit must not complain about it again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _frame(store) -> dict:
    """This moment's report, or {"error": ...} while the database cannot be used (a
    live view outlives a database restart: the next frame tries again)."""
    try:
        return status_mod.report(store, finished=FINISHED)
    except DatabaseError as err:
        return {"error": " ".join(str(err).split())}


def _report_lines(report: dict, colour: bool, width: int | None) -> list[str]:
    if "error" in report:
        return [f"database unusable: {render.escape(report['error'])}", "(trying again every interval)"]
    return status_view.lines(report, colour=colour, width=width)


def _screen_lines(store, interval: float, colour: bool) -> list[str]:
    """A frame for the terminal: lines cut to its width, as many as it has rows."""
    size = shutil.get_terminal_size()
    width = max(size.columns - 1, 1)  # a line that fills the last column would wrap before CLEAR_LINE
    header = f"queuectl status every {interval:g}s  {iso(utcnow())}  (q or Ctrl-C to quit)"
    lines = [header, ""] + _report_lines(_frame(store), colour, width)
    if len(lines) > size.lines:
        hidden = len(lines) - size.lines + 1
        lines = lines[: size.lines - 1] + [f"... {hidden} more lines (a taller terminal shows them)"]
    return [render.cut(line, width) for line in lines]


def _draw(lines: list[str]) -> None:
    # No newline after the last line: on the terminal's last row it would scroll.
    sys.stdout.write(HOME + "\n".join(line + CLEAR_LINE for line in lines) + CLEAR_BELOW)
    sys.stdout.flush()


def _print_snapshot(store, json_lines: bool, colour: bool) -> None:
    report = _frame(store)
    if json_lines:
        sys.stdout.write(json.dumps({"time": iso(utcnow()), **report}, default=str) + "\n")
    else:
        sys.stdout.write(f"--- {iso(utcnow())} ---\n" + "\n".join(_report_lines(report, colour, None)) + "\n\n")
    sys.stdout.flush()


def _wait(keys: int | None, wakeup: int | None, until: float) -> bool:
    """Wait until `until` (time.monotonic) for a key on `keys`; True if it was q.
    A resize of the terminal (a byte on `wakeup`) ends the wait early, to redraw."""
    watched = [fd for fd in (keys, wakeup) if fd is not None]
    while (left := until - time.monotonic()) > 0:
        ready, _, _ = select.select(watched, [], [], left)
        if wakeup in ready:
            os.read(wakeup, 512)
            return False
        if keys in ready:
            typed = os.read(keys, 64)
            if not typed:  # the terminal hung up: no more keys, the interval still runs
                watched.remove(keys)
            elif any(key in QUIT_KEYS for key in typed):
                return True
    return False


class _Terminal:
    """What the watch changes on the terminal, and gives back at exit or on Ctrl-Z:
    stdin's settings, in cbreak mode while stdin is a terminal (then `keys` is its
    descriptor, else None), and the alternate screen when stdout is one (`on_screen`).
    Started in the background, the shell stops us at the first change (SIGTTOU)
    until `fg`, as it stops any program that takes the keyboard."""

    def __init__(self, on_screen: bool):
        self.on_screen = on_screen
        self.keys = sys.stdin.fileno() if render.is_terminal(sys.stdin) else None
        self.saved = termios.tcgetattr(self.keys) if self.keys is not None else None

    def take(self) -> None:
        if self.keys is not None:
            tty.setcbreak(self.keys)
        if self.on_screen:
            sys.stdout.write(ENTER_SCREEN)
            sys.stdout.flush()

    def give_back(self) -> None:
        if self.on_screen:
            sys.stdout.write(LEAVE_SCREEN)
            sys.stdout.flush()
        if self.keys is not None and self.saved is not None:
            termios.tcsetattr(self.keys, termios.TCSADRAIN, self.saved)

    def suspend(self, *_) -> None:
        """SIGTSTP (Ctrl-Z): the shell's terminal back while stopped, ours again on `fg`
        (the signal's byte on the wakeup descriptor then redraws at once)."""
        self.give_back()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until SIGCONT
        signal.signal(signal.SIGTSTP, self.suspend)
        self.take()

    def __enter__(self):
        self.take()
        return self

    def __exit__(self, *_) -> None:
        self.give_back()


@contextmanager
def _signals(terminal: _Terminal):
    """SIGTERM ends the watch like Ctrl-C, so the terminal is given back; Ctrl-Z gives
    it back while stopped. On a screen, also a descriptor that becomes readable when
    the window is resized or the watch resumed, to redraw at once (else None)."""
    handlers = {signal.SIGTERM: signal.default_int_handler, signal.SIGTSTP: terminal.suspend}
    read_end = write_end = None
    if terminal.on_screen:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        # A Python-level handler is what makes a signal write to the wakeup descriptor.
        handlers[signal.SIGWINCH] = lambda *_: None
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    old_wakeup = signal.set_wakeup_fd(write_end) if write_end is not None else None
    try:
        yield read_end
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if read_end is not None and write_end is not None and old_wakeup is not None:
            signal.set_wakeup_fd(old_wakeup)
            os.close(read_end)
            os.close(write_end)
