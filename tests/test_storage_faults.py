"""Storage that cannot be used: every command fails with exit 1 and one clear stderr
line, promptly, and leaves the data exactly as it was.

The tests run as root here, and root ignores permission bits: a read-only file or
directory is then made with a read-only bind mount inside a private mount namespace
(`unshare -m`, so nothing is left mounted outside the command), and a full disk with
a 1 MiB tmpfs (unmounted at teardown). Each skips with its reason where that is not
permitted.
"""

import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import Cli, env_for
from fault_support import run_many
from queuectl.store import Database, open_database
from queuectl.store import jobs as jobs_api
from queuectl.store.models import CONFIG
from support import error_line

ROOT = os.geteuid() == 0


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contents(db) -> tuple:
    """Every job (live and dead) and every config row, through the library."""
    with db.read() as conn:
        config = conn.execute(select(CONFIG.c.key, CONFIG.c.value).order_by(CONFIG.c.key)).all()
    return [tuple(r) for r in jobs_api.listing(db)], [tuple(r) for r in config]


def seeded(path: Path, *commands: str) -> tuple:
    """A migrated SQLite file holding `commands`, closed (WAL checkpointed); its contents."""
    db = open_database(str(path))
    try:
        from queuectl import jobspec

        jobs_api.enqueue(db, [jobspec.build(c) for c in commands])
        return contents(db)
    finally:
        db.dispose()


def read_back(path: Path) -> tuple:
    db = Database("sqlite:///" + str(path))  # no migration: just look
    try:
        return contents(db)
    finally:
        db.dispose()


# --- not a database --------------------------------------------------------------------

GARBAGE = {
    "random-4k": random.Random(1).randbytes(4096),
    "random-100k": random.Random(2).randbytes(100 * 1024),
    "text": b"hello, I am a shopping list\n",
}
COMMANDS = [["list"], ["enqueue", "true"], ["status"], ["config", "set", "max-retries", "2"], ["dlq", "purge", "--all"],
            ["db", "upgrade"], ["worker", "start", "--burst"]]


@pytest.mark.parametrize("garbage", GARBAGE, ids=GARBAGE)
def test_file_that_is_not_a_database(tmp_path, garbage):
    path = tmp_path / "queue.db"
    path.write_bytes(GARBAGE[garbage])
    for _args, result, _ in run_many(str(path), tmp_path, COMMANDS if garbage == "random-4k" else COMMANDS[:2]):
        error_line(result, 1, "not a database")
    assert path.read_bytes() == GARBAGE[garbage]  # not one byte changed
    assert not (tmp_path / "queue.db-wal").exists() and not (tmp_path / "queue.db-journal").exists()


def test_file_that_is_not_a_database_is_named_in_a_clean_message(tmp_path):
    path = tmp_path / "queue.db"
    path.write_bytes(GARBAGE["random-4k"])
    line = error_line(Cli(str(path), tmp_path)("list"), 1, "not a database")
    assert not line.startswith("queuectl: error: unexpected error:") and "sqlalche.me" not in line, line
    assert str(path) in line, line


# --- read-only file and directory ---------------------------------------------------------


def _unshare_works(tmp_path: Path) -> str | None:
    """None if a read-only bind mount in a private mount namespace works here, else why not."""
    if not shutil.which("unshare"):
        return "unshare(1) is not installed"
    probe = tmp_path / "ro-probe"
    probe.mkdir()
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && ! touch "$1/x" 2>/dev/null'
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(probe)], capture_output=True, text=True)
    if result.returncode != 0:
        return f"read-only bind mounts are not permitted here: {result.stderr.strip() or result.returncode}"
    return None


class ReadOnly:
    """Runs the CLI with `target` (a file or a directory) read-only for it.

    Not root: the permission bits do it. Root (who ignores them): a read-only bind
    mount of target onto itself, private to the one command's mount namespace."""

    def __init__(self, db_path: Path, target: Path, tmp_path: Path):
        self.db_path, self.target, self.tmp_path = db_path, target, tmp_path
        target.chmod(0o555 if target.is_dir() else 0o444)  # what a user would do
        if ROOT:
            reason = _unshare_works(tmp_path)
            if reason:
                pytest.skip(f"running as root, which ignores permission bits, and {reason}")

    def __call__(self, *args) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "queuectl", *map(str, args)]
        if ROOT:
            script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
            argv = ["unshare", "-m", "sh", "-c", script, "sh", str(self.target), *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env_for(str(self.db_path)), cwd=self.tmp_path)

    def restore(self):
        self.target.chmod(0o700 if self.target.is_dir() else 0o600)


def test_read_only_database_file(tmp_path):
    path = tmp_path / "queue.db"
    before = seeded(path, "echo keep me")
    checksum = digest(path)
    ro = ReadOnly(path, path, tmp_path)
    try:
        listed = ro("list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert "echo keep me" in listed.stdout
        assert ro("status").returncode == 0
        assert ro("show", "1").returncode == 0

        for args in (["enqueue", "true"], ["enqueue", "--id", "x", "true"], ["config", "set", "max-retries", "5"]):
            error_line(ro(*args), 1, "readonly database")
    finally:
        ro.restore()
    assert digest(path) == checksum
    assert read_back(path) == before


def test_read_only_database_directory(tmp_path):
    """Nothing can be created beside the database (no -wal, -shm or .lock files).

    SQLite cannot read a WAL database without creating its -shm file, so reads fail
    too (exit 1, one line: "unable to open database file"); writes certainly do."""
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "queue.db"
    before = seeded(path, "echo keep me")
    checksum = digest(path)
    ro = ReadOnly(path, folder, tmp_path)
    try:
        for args in (["list"], ["status"]):
            result = ro(*args)
            if result.returncode != 0:
                error_line(result, 1, "database")
        for args in (["enqueue", "true"], ["config", "set", "max-retries", "5"], ["worker", "start", "--burst"]):
            error_line(ro(*args), 1, "database")
    finally:
        ro.restore()
    assert digest(path) == checksum
    assert read_back(path) == before


# --- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, unmounted at teardown."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mountpoint)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as stream:
        try:
            while True:
                stream.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == 28, err  # ENOSPC
    assert shutil.disk_usage(folder).free < 4096
    return filler


@pytest.mark.parametrize("held_open", [True, False], ids=["database-in-use", "database-closed"])
def test_full_disk(small_disk, tmp_path, held_open):
    """In use (a worker holds the database open: its -wal and -shm exist), a write fails
    with "database or disk is full". Closed, even the -shm cannot be created: every
    command fails with SQLite's "disk I/O error". Either way: exit 1, nothing lost, and
    once space is freed everything works again."""
    path = small_disk / "queue.db"
    cli = Cli(str(path), tmp_path)
    seeded(path, "echo 0", "echo 1", "echo 2")
    holder = open_database(str(path), durable=False) if held_open else None
    try:
        before = contents(holder) if holder else read_back(path)
        filler = fill(small_disk)

        big = "echo " + "z" * 100_000  # more than any page left over in the WAL
        commands = [["enqueue", "true"], ["enqueue", big], ["config", "set", "max-retries", "7"]] + ([["list", "--json"]] if held_open else [])
        for args, result, _ in run_many(str(path), tmp_path, commands):
            if args[0] == "list":
                assert result.returncode == 0, result.stderr  # reads still work
                assert [j["id"] for j in json.loads(result.stdout)] == ["1", "2", "3"]
                continue
            line = error_line(result, 1, str(path))
            assert ("database or disk is full" if held_open else "disk I/O error") in line, line
        if held_open:
            assert contents(holder) == before

        filler.unlink()
        cli.ok("enqueue", "--id", "after", "true")
        now = contents(holder) if holder else read_back(path)
        assert now[0][:3] == before[0] and [j[0] for j in now[0]] == ["1", "2", "3", "after"]
    finally:
        if holder:
            holder.dispose()


# --- a database from a newer queuectl ---------------------------------------------------------


def test_newer_schema_is_refused_by_every_command_and_not_touched(db, db_url, tmp_path):
    """(test_migrations covers enqueue/list/db/worker start; these are the other commands,
    and on SQLite the file is compared byte for byte.)"""
    from support import enqueue

    enqueue(db, "echo keep", id="keep")
    with db.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
        conn.exec_driver_sql("CREATE TABLE from_the_future (x INTEGER)")
    with db.engine.connect() as conn:
        before = [conn.exec_driver_sql(f"SELECT * FROM {t}").all() for t in ("jobs", "dead_jobs", "config", "workers", "alembic_version")]
    db.dispose()  # SQLite: checkpointed, so the file alone holds everything
    sqlite_file = None if "://" in db_url else Path(db_url)
    checksum = digest(sqlite_file) if sqlite_file else None

    commands = [["status"], ["show", "keep"], ["logs", "keep"], ["config", "list"], ["config", "set", "max-retries", "1"],
                ["config", "unset", "max-retries"], ["dlq", "retry", "--all"], ["dlq", "purge", "--all"], ["worker", "stop"]]
    for _args, result, _ in run_many(db_url, tmp_path, commands):
        error_line(result, 1, "revision 9999", "upgrade queuectl")

    if sqlite_file:
        assert digest(sqlite_file) == checksum
    with db.engine.connect() as conn:
        after = [conn.exec_driver_sql(f"SELECT * FROM {t}").all() for t in ("jobs", "dead_jobs", "config", "workers", "alembic_version")]
    assert after == before


# --- an unreachable PostgreSQL -----------------------------------------------------------------

PG_COMMANDS = [["list"], ["enqueue", "true"], ["config", "set", "max-retries", "2"], ["worker", "start", "--burst"],
               ["worker", "stop"], ["db", "upgrade"]]


def test_unreachable_postgresql_is_exit_1_promptly(tmp_path):
    pytest.importorskip("psycopg")
    url = "postgresql+psycopg://postgres@127.0.0.1:1/none"
    # One at a time, so that each one's time is its own (interpreter start-up included).
    for args, result, seconds in run_many(url, tmp_path, PG_COMMANDS, parallel=1):
        line = error_line(result, 1, "database postgresql+psycopg://postgres@127.0.0.1:1/none", "refused")
        assert seconds < 15, (args, seconds, line)


class SilentServer:
    """Accepts TCP connections and never says a word (a hung host, a half-dead proxy);
    records when the first connection arrived."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.first_connection: float | None = None
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.first_connection is None:
                self.first_connection = time.monotonic()
            self.held.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_postgresql_that_never_answers_gives_up_within_15s(tmp_path):
    """connect_timeout must end the wait: measured from the moment the connection was
    made, so that a slow start-up on a loaded machine does not count."""
    pytest.importorskip("psycopg")
    server = SilentServer()
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/none"
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "queuectl", "enqueue", "true"], capture_output=True, text=True,
                                env=env_for(url), cwd=tmp_path, timeout=90)
        ended = time.monotonic()
    finally:
        server.close()
    error_line(result, 1, "timeout")
    assert server.first_connection is not None
    assert ended - server.first_connection < 15, (ended - server.first_connection, ended - started)


# --- a schema someone changed by hand ----------------------------------------------------------


def test_a_statement_the_database_refuses_is_one_line_without_sql(db, cli):
    """A column dropped by hand (the revision still says head): the statements fail in
    the database. One line naming the driver's error, exit 1; never the SQL text."""
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN cwd")
    for args in (["list"], ["enqueue", "true"]):
        result = cli(*args)
        line = error_line(result, 1, "cwd")
        assert "SELECT" not in result.stderr and "INSERT" not in result.stderr and "[SQL" not in result.stderr, line
