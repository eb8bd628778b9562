"""Helpers for the worker-runtime tests: real supervisors started through the CLI,
tracked so that every process they (or their jobs) started is killed at teardown,
plus fast library reads for polling (a CLI call costs ~0.7 s of CPU).

Import the fixtures into a test module with
`from worker_support import supervisors  # noqa: F401`.
"""

import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from conftest import env_for, wait_until
from queuectl.states import LIVE_WORKER_STATES
from queuectl.store import config as settings
from queuectl.store import jobs as jobs_mod
from queuectl.store.database import resolve_url
from queuectl.store.models import WORKERS

# Bounds for waits: generous, because a loaded 2-core machine is slow, but finite.
STARTUP = 60.0
LONG = 90.0


# --- processes -----------------------------------------------------------------------


def alive(pid_or_proc) -> bool:
    """True if the process exists and is not a zombie (PID 1 here may not reap orphans)."""
    try:
        proc = pid_or_proc if isinstance(pid_or_proc, psutil.Process) else psutil.Process(pid_or_proc)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def processes_of(db_url: str, cmdline: list[str] | None = None) -> list[psutil.Process]:
    """Live processes of this user whose environment points at this test's database:
    supervisors, workers, jobs and anything those jobs started (they inherit it).
    With `cmdline`, only processes whose argv is exactly that."""
    urls = {db_url, resolve_url(db_url)}
    found = []
    for proc in psutil.process_iter(["pid", "uids", "cmdline"]):
        try:
            if proc.pid == os.getpid() or proc.info["uids"] is None or proc.info["uids"].real != os.getuid():
                continue
            if cmdline is not None and proc.info["cmdline"] != cmdline:
                continue
            if proc.environ().get("QUEUECTL_DB") in urls and alive(proc):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def kill_all(procs) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


class Supervisor:
    """A `queuectl worker start` process started by a test."""

    def __init__(self, popen: subprocess.Popen, log_path: Path):
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = LONG) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"supervisor {self.pid} still running after {timeout}s; its log:\n{self.log()}") from None

    def children(self) -> list[psutil.Process]:
        try:
            return [c for c in psutil.Process(self.pid).children() if alive(c)]
        except psutil.Error:
            return []


class Supervisors:
    """Starts supervisors for one test and guarantees they are gone afterwards."""

    def __init__(self, cli, db_url: str, tmp_path: Path):
        self.cli = cli
        self.db_url = db_url
        self.tmp_path = tmp_path
        self.started: list[Supervisor] = []
        self.pids: list[int] = []  # processes not started by us directly (--detach)

    def env(self, **extra) -> dict:
        return env_for(self.db_url, **extra)

    def start(self, *args, hostname: str | None = None, env: dict | None = None) -> Supervisor:
        log_path = self.tmp_path / f"supervisor-{len(self.started) + 1}.log"
        extra = {"QUEUECTL_HOSTNAME": hostname} if hostname else {}
        with open(log_path, "w") as log:
            # A file, not a pipe: nobody reads a pipe while the test runs, and a full
            # pipe would block the supervisor's logging.
            popen = self.cli.spawn("worker", "start", *args, stdout=log, stderr=subprocess.STDOUT, env=env or self.env(**extra))
        sup = Supervisor(popen, log_path)
        self.started.append(sup)
        return sup

    def start_script(self, code: str, **extra_env) -> Supervisor:
        """Run `python -c code` (which drives a supervisor itself) in the test's environment."""
        import sys

        log_path = self.tmp_path / f"supervisor-{len(self.started) + 1}.log"
        with open(log_path, "w") as log:
            popen = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, env=self.env(**extra_env), cwd=self.tmp_path)
        sup = Supervisor(popen, log_path)
        self.started.append(sup)
        return sup

    def adopt(self, pid: int) -> None:
        self.pids.append(pid)

    def cleanup(self) -> None:
        running = {sup.pid for sup in self.started if sup.popen.poll() is None}
        for _ in range(50):
            victims = []
            for sup in self.started:
                if sup.popen.poll() is None:
                    victims += tree(sup.pid)
            for pid in self.pids:
                victims += tree(pid)
            victims += processes_of(self.db_url)
            victims = [p for p in victims if alive(p)]
            if not victims:
                break
            kill_all(victims)
            # Our own children are reaped by Popen.wait (psutil reaping them would leave
            # Popen a made-up exit status of 0); orphans may stay zombies, which is dead.
            for sup in self.started:
                try:
                    sup.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            deadline = time.monotonic() + 5
            while any(alive(p) for p in victims) and time.monotonic() < deadline:
                time.sleep(0.02)
        for sup in self.started:
            # Shown by pytest only when the test failed.
            how = "killed at teardown" if sup.pid in running else f"exit {sup.popen.returncode}"
            print(f"--- log of supervisor pid {sup.pid} ({how}) ---")
            print(sup.log())


@pytest.fixture
def supervisors(cli, db_url, tmp_path):
    tracker = Supervisors(cli, db_url, tmp_path)
    try:
        yield tracker
    finally:
        tracker.cleanup()


@pytest.fixture
def sqlite_supervisors(sqlite_url, tmp_path):
    """Supervisors on a SQLite database only (for what only SQLite has: its file lock)."""
    from conftest import Cli

    tracker = Supervisors(Cli(sqlite_url, tmp_path), sqlite_url, tmp_path)
    try:
        yield tracker
    finally:
        tracker.cleanup()


# --- database reads (fast, for polling) ------------------------------------------------


def configure(db, **values) -> None:
    """Set config keys the way `queuectl config set` does (one transaction, no CLI start-up).
    Keyword names use underscores: heartbeat_interval=0.2."""
    with db.begin() as conn:
        for key, value in values.items():
            settings.set_value(conn, key.replace("_", "-"), str(value))


FAST = dict(heartbeat_interval=0.2, heartbeat_timeout=2, poll_interval=0.05)


def job(db, job_id) -> dict:
    return jobs_mod.to_dict(jobs_mod.get(db, str(job_id)))


def all_jobs(db) -> list[dict]:
    return [jobs_mod.to_dict(r) for r in jobs_mod.listing(db)]


def job_in(db, job_id, *states):
    """The job if it is in one of `states` now, else None (a wait_until predicate)."""
    row = job(db, job_id)
    return row if row["state"] in states else None


def worker_rows(db, role: str = "worker") -> list:
    with db.read() as conn:
        return conn.execute(select(WORKERS).where(WORKERS.c.role == role).order_by(WORKERS.c.started_at)).all()


def live_workers(db, supervisor_pid: int | None = None) -> list:
    rows = [r for r in worker_rows(db) if r.state in LIVE_WORKER_STATES]
    if supervisor_pid is not None:
        rows = [r for r in rows if r.supervisor_pid == supervisor_pid]
    return rows


def wait_workers(db, sup: Supervisor, count: int, timeout: float = STARTUP) -> list:
    """Wait until `sup` has `count` live, registered worker processes."""

    def ready():
        if sup.popen.poll() is not None:
            raise AssertionError(f"supervisor exited with {sup.popen.returncode}:\n{sup.log()}")
        rows = live_workers(db, sup.pid)
        return rows if len(rows) == count else None

    return wait_until(ready, timeout=timeout, interval=0.05, message=f"{count} live workers of supervisor {sup.pid}")


def epoch(iso_text: str) -> float:
    return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp()


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a side log a job appends to (missing file: none)."""
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def wait_lines(path: Path, count: int, timeout: float = LONG) -> list[str]:
    def enough():
        lines = read_lines(path)
        return lines if len(lines) >= count else None

    return wait_until(enough, timeout=timeout, message=f"{count} lines in {path.name}")

