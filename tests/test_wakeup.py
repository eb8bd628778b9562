"""The local wake-up on SQLite (store/wakeup.py, docs/design.md section 18): an idle
pool starts a job because the enqueue woke it, not because it polled; a delayed job
starts at its time although nobody enqueues anything then; a socket left by a
SIGKILLed pool breaks no enqueue. The pools here poll every 30 s, so anything
sooner is the wake-up's doing."""

import os
import socket
import time

import pytest

from queuectl import jobspec
from queuectl.store import jobs, wakeup
from worker_support import (  # noqa: F401  (fixture)
    LONG,
    configure,
    epoch,
    job_in,
    kill_all,
    sqlite_supervisors,
    tree,
    wait_until,
    wait_workers,
)

SLOW_POLL = dict(heartbeat_interval=0.2, heartbeat_timeout=5, poll_interval=30)
# Far below the 30 s poll; far above a pickup (milliseconds) on a loaded machine.
WOKEN_WITHIN = 5.0


def wake_files(runtime_dir, database: str) -> list[str]:
    """The wake-up sockets of this database's pools (the runtime directory is the
    whole test run's)."""
    where, prefix = runtime_dir / "queuectl", wakeup._prefix(database)
    return sorted(name for name in os.listdir(where) if name.startswith(prefix)) if where.exists() else []


def enqueue(db, tmp_path, **fields) -> str:
    """In-process, like `queuectl enqueue` (the same transaction, woken after it commits)."""
    (row,) = jobs.enqueue(db, [jobspec.build("true", cwd=str(tmp_path), **fields)])
    return row["id"]


def test_an_idle_pool_is_woken_by_the_enqueue_not_by_its_poll(sqlite_db, sqlite_supervisors, tmp_path):
    configure(sqlite_db, **SLOW_POLL)
    sup = sqlite_supervisors.start("--concurrency", "2")
    wait_workers(sqlite_db, sup, 2)
    for _ in range(3):  # after the first, every worker is surely asleep in its wait
        enqueued = time.time()
        job_id = enqueue(sqlite_db, tmp_path)
        done = wait_until(lambda job_id=job_id: job_in(sqlite_db, job_id, "completed"), timeout=LONG, message=f"job {job_id} completed")
        assert epoch(done["started_at"]) - enqueued < WOKEN_WITHIN, sup.log()


def test_a_delayed_job_starts_at_its_time_without_a_poll(sqlite_db, sqlite_supervisors, tmp_path):
    configure(sqlite_db, **SLOW_POLL)
    sup = sqlite_supervisors.start("--concurrency", "1")
    wait_workers(sqlite_db, sup, 1)
    job_id = enqueue(sqlite_db, tmp_path, delay="0.3s")
    done = wait_until(lambda: job_in(sqlite_db, job_id, "completed"), timeout=LONG, message=f"job {job_id} completed")
    late = epoch(done["started_at"]) - epoch(done["run_at"])
    assert 0 <= late < WOKEN_WITHIN, sup.log()


def test_a_socket_left_by_a_killed_pool_breaks_no_enqueue(sqlite_db, sqlite_url, sqlite_supervisors, runtime_dir, tmp_path):
    configure(sqlite_db, **SLOW_POLL)
    sup = sqlite_supervisors.start("--concurrency", "1")
    wait_workers(sqlite_db, sup, 1)
    left = wait_until(lambda: wake_files(runtime_dir, sqlite_url), timeout=LONG, message="the pool's wake-up socket")
    kill_all(tree(sup.pid))
    sup.popen.wait()
    assert wake_files(runtime_dir, sqlite_url) == left  # nobody removed it
    sqlite_supervisors.cli.ok("enqueue", "--id", "after-kill", "true")  # refused by the dead socket: removed, ignored
    assert wake_files(runtime_dir, sqlite_url) == []
    again = sqlite_supervisors.start("--burst")
    assert again.wait() == 0, again.log()
    assert job_in(sqlite_db, "after-kill", "completed")


# --- the module itself, in-process ------------------------------------------------------


@pytest.fixture
def long_runtime_dir(tmp_path, monkeypatch):
    """A runtime directory whose socket paths exceed a unix socket's 107 bytes."""
    path = tmp_path / ("r" * 100)
    path.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    return path / "queuectl"


def test_a_wake_reaches_a_socket_under_a_long_path_and_sweeps_dead_ones(long_runtime_dir, tmp_path):
    database = str(tmp_path / "queue.db")
    assert wakeup.wake(database) == 0  # no runtime directory yet: nobody to wake, no error
    live = wakeup.WakeSocket(database, "s-live")
    assert len(str(long_runtime_dir / live.name)) > 107
    other = wakeup.WakeSocket(str(tmp_path / "other.db"), "s-other")
    # A pool SIGKILLed: its file stays, bound by nobody.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead_name = live.name.replace("s-live", "s-dead")
    dir_fd = os.open(long_runtime_dir, os.O_RDONLY)
    try:
        dead.bind(f"/proc/self/fd/{dir_fd}/{dead_name}")
    finally:
        os.close(dir_fd)
    dead.close()
    try:
        assert live.take() is False
        assert wakeup.wake(database) == 1
        assert live.take() is True and live.take() is False
        assert other.take() is False  # another database's pool is not woken
        assert not (long_runtime_dir / dead_name).exists()
        live.poke()
        assert live.take() is True
    finally:
        live.close()
        other.close()
    assert sorted(os.listdir(long_runtime_dir)) == []
