"""`status --watch` (#12): a live view redrawn in place on a terminal (run here under a
pseudo-terminal), one snapshot per interval when piped, q / Ctrl-C / SIGTERM end it
with exit 0 and the terminal as it was; and the store's read of the jobs that ended last."""

import fcntl
import json
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from datetime import timedelta

from sqlalchemy import event

from conftest import env_for, wait_until
from queuectl.cli import render, watch
from queuectl.errors import DatabaseError
from queuectl.store import Store
from queuectl.timeutil import utcnow
from support import enqueue, error_line, finish, kill

DEADLINE = 20  # seconds: generous, for a loaded two-core machine
SGR = re.compile(r"\x1b\[[0-9;]*m")


class Output:
    """Everything a child writes to a descriptor, read by a thread (so it never blocks)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the pty's other side closed
                return
            if not chunk:
                return
            self.chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


# --- piped -----------------------------------------------------------------------------


def spawn_piped(cli, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "queuectl", "status", "--watch", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_for(cli.db_url), cwd=cli.cwd,
    )


def output_of(proc: subprocess.Popen) -> Output:
    assert proc.stdout is not None
    return Output(proc.stdout.fileno())


def test_piped_it_prints_a_snapshot_per_interval_until_interrupted(cli):
    cli.ok("enqueue", "true")
    proc = spawn_piped(cli, "0.2")
    out = output_of(proc)
    try:
        wait_until(lambda: out.text.count("\n--- ") + out.text.startswith("--- ") >= 3, DEADLINE, message="three snapshots")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=DEADLINE) == 0
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert stderr == ""
    snapshots = [s for s in re.split(r"^--- \S+ ---$", out.text, flags=re.M) if s.strip()]
    assert len(snapshots) >= 2
    for snapshot in snapshots[:-1]:  # the last may have been cut by the interrupt
        assert "Pending: 1" in snapshot and "=== Workers ===" in snapshot and "=== Last Finished ===" in snapshot
    assert "\x1b" not in out.text


def test_piped_json_is_one_document_per_line(cli, db):
    now = utcnow()
    finish(db, enqueue(db, "echo done", now=now), now=now)
    proc = spawn_piped(cli, "0.2", "--json")
    out = output_of(proc)
    try:
        wait_until(lambda: out.text.count("\n") >= 2, DEADLINE, message="two JSON lines")
    finally:
        proc.terminate()
        assert proc.wait(timeout=DEADLINE) == 0
    for line in out.text.splitlines()[:2]:
        document = json.loads(line)
        assert document["jobs"]["completed"] == 1
        assert [(j["state"], j["command"], j["exit_code"]) for j in document["finished"]] == [("completed", "echo done", 0)]
        assert "time" in document


def test_a_reader_that_leaves_ends_it_quietly(scli):
    proc = spawn_piped(scli, "0.2")
    proc.stdout.close()  # type: ignore[union-attr]  # as `| head` does once it has read enough
    assert proc.wait(timeout=DEADLINE) == 0
    assert proc.stderr is not None and proc.stderr.read() == b""


def test_a_bad_interval_is_one_line_and_exit_2(scli):
    for value in ("0", "0s", "-1", "--watch=-2s", "soon"):
        args = ["status", value] if value.startswith("--") else ["status", "--watch", value]
        error_line(scli(*args), 2, "--watch interval")


# --- on a terminal ---------------------------------------------------------------------


class Terminal:
    """`queuectl status --watch` on a pseudo-terminal of `columns` x `rows`."""

    def __init__(self, cli, *args, columns: int = 120, rows: int = 40, before: tuple = ()):
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.settings = termios.tcgetattr(self.slave)
        env = env_for(cli.db_url)
        env.pop("NO_COLOR", None)
        env.update(COLUMNS=str(columns), LINES=str(rows), TERM="xterm")
        # shutil.get_terminal_size prefers $COLUMNS/$LINES; set to the pty's size anyway.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "queuectl", *before, "status", "--watch", *args],
            stdin=self.slave, stdout=self.slave, stderr=self.slave, env=env, cwd=cli.cwd, start_new_session=True,
        )
        self.out = Output(self.master)

    def frames(self) -> list[list[str]]:
        """Every complete frame drawn so far, as its lines of visible text."""
        drawn = self.out.text.split(watch.HOME)[1:]
        complete = [f.split(watch.CLEAR_BELOW)[0] for f in drawn if watch.CLEAR_BELOW in f]
        return [[SGR.sub("", line).replace(watch.CLEAR_LINE, "").rstrip("\r") for line in f.split("\n")] for f in complete]

    def screen_shows(self, text: str) -> list[str] | None:
        frames = self.frames()
        return frames[-1] if frames and any(text in line for line in frames[-1]) else None

    def in_cbreak_mode(self) -> bool:
        lflag = termios.tcgetattr(self.slave)[3]
        return not lflag & (termios.ECHO | termios.ICANON)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.slave)
        self.out.thread.join(timeout=DEADLINE)
        os.close(self.master)


def test_on_a_terminal_it_redraws_in_place_and_q_quits(cli):
    term = Terminal(cli, "0.2")
    try:
        wait_until(lambda: term.screen_shows("Pending: 0"), DEADLINE, message="a first frame")
        assert term.in_cbreak_mode()
        cli.ok("enqueue", "true")
        frame = wait_until(lambda: term.screen_shows("Pending: 1"), DEADLINE, message="the enqueued job on screen")
        assert frame[0].startswith("queuectl status every 0.2s")
        assert "=== Last Finished ===" in frame and "no finished jobs" in frame
        os.write(term.master, b"q")
        assert term.proc.wait(timeout=DEADLINE) == 0
        # The cursor shown, the user's screen back.
        wait_until(lambda: term.out.text.endswith(watch.LEAVE_SCREEN), DEADLINE, message="the screen restored")
        assert term.out.text.startswith(watch.ENTER_SCREEN)
        assert "Traceback" not in term.out.text
        assert termios.tcgetattr(term.slave) == term.settings
    finally:
        term.close()


def test_on_a_terminal_sigterm_also_restores_it(scli):
    term = Terminal(scli, "0.2")
    try:
        wait_until(lambda: term.screen_shows("Pending: 0") and term.in_cbreak_mode(), DEADLINE, message="a first frame")
        term.proc.terminate()
        assert term.proc.wait(timeout=DEADLINE) == 0
        wait_until(lambda: term.out.text.endswith(watch.LEAVE_SCREEN), DEADLINE, message="the screen restored")
        assert termios.tcgetattr(term.slave) == term.settings
    finally:
        term.close()


def test_a_frame_fits_a_small_terminal(scli, sqlite_db):
    now = utcnow()
    finish(sqlite_db, enqueue(sqlite_db, "echo " + "x" * 300, now=now), now=now)
    kill(sqlite_db, enqueue(sqlite_db, "exit 3", now=now, max_retries=0), now=now + timedelta(seconds=1))
    term = Terminal(scli, "0.2", columns=60, rows=50, before=("--color", "always"))
    try:
        frame = wait_until(lambda: term.screen_shows("=== Last Finished ==="), DEADLINE, message="a frame")
        finished = frame[frame.index("=== Last Finished ===") + 1 :]
        assert finished[1].split()[:2] == ["2", "dead"] and finished[2].split()[:2] == ["1", "completed"]
        assert all(len(line) <= 59 for line in frame)
        assert "\x1b[32m" in term.out.text  # --color always: states coloured, cut or not
    finally:
        term.close()
    term = Terminal(scli, "0.2", columns=60, rows=10)
    try:
        frame = wait_until(lambda: term.screen_shows("more lines"), DEADLINE, message="a cut frame")
        assert len(frame) == 10
    finally:
        term.close()


# --- the store -------------------------------------------------------------------------


def test_the_last_finished_jobs_newest_first_across_both_tables(db):
    now = utcnow() - timedelta(minutes=1)
    ids = {}
    for n, (name, end) in enumerate([("old", "complete"), ("dead", "kill"), ("cancelled", "cancel"), ("new", "complete")]):
        at = now + timedelta(seconds=n)
        ids[name] = enqueue(db, f"echo {name}", now=at)
        if end == "complete":
            finish(db, ids[name], now=at)
        elif end == "kill":
            kill(db, ids[name], now=at, exit_code=9)
    store = Store(db)
    store.cancel([ids["cancelled"]])  # cancelled now: a minute after the others
    enqueue(db, "still pending", now=now)
    report_rows = store.status(now, finished=3)[4]
    assert [(r.id, r.state) for r in report_rows] == [(ids["cancelled"], "cancelled"), (ids["new"], "completed"), (ids["dead"], "dead")]
    assert report_rows[2].exit_code == 9 and report_rows[1].command == "echo new"
    assert store.status(now)[4] == []


def test_the_last_finished_jobs_are_read_through_an_index(sqlite_db):
    """No sort of the whole completed history each frame: SQLite walks ix_jobs_finished."""
    for n in range(5):
        finish(sqlite_db, enqueue(sqlite_db, f"echo {n}"))
    statements = []

    def capture(conn, cursor, sql, params, *_):
        statements.append((sql, params))

    event.listen(sqlite_db.engine, "before_cursor_execute", capture)
    Store(sqlite_db).status(utcnow(), finished=5)
    event.remove(sqlite_db.engine, "before_cursor_execute", capture)
    ordered = [(sql, params) for sql, params in statements if "FROM jobs" in sql and "finished_at DESC" in sql]
    assert len(ordered) == 1
    with sqlite_db.engine.connect() as conn:
        plan = " / ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + ordered[0][0], ordered[0][1]))
    assert "ix_jobs_finished" in plan and "TEMP B-TREE" not in plan, plan


def test_a_frame_says_when_the_database_cannot_be_used():
    """A live view outlives a database restart: the frame says so, the next one tries again."""

    class Unreachable:
        def status(self, now, finished=0):
            raise DatabaseError("the database is unreachable: connection refused")

    report = watch._frame(Unreachable())
    assert watch._report_lines(report, False, None)[0] == "database unusable: the database is unreachable: connection refused"


def test_a_line_is_cut_to_its_visible_width_colours_kept():
    coloured = "1  " + render.state_colour("completed", "completed") + "  echo hello"
    assert render.cut(coloured, 100) == coloured
    assert render.cut(coloured, 7) == "1  \x1b[32mcomp\x1b[0m"  # cut inside the colour: reset
    assert render.cut(coloured, 15) == "1  \x1b[32mcompleted\x1b[0m  e"
    assert render.cut("plain text", 5) == "plain"
