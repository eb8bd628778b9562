"""The runtime-directory file through which a dead worker's job group is found and
killed: real processes, and a recycled pid must never get a stranger killed."""

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from conftest import wait_until
from queuectl.errors import QueuectlError
from queuectl.worker import jobgroup
from worker_support import FAST, LONG, alive, configure, job, kill_all, processes_of, supervisors, wait_lines, wait_workers  # noqa: F401  (fixture)


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    return path / "queuectl"


def start_group(**env):
    """A `sleep` leading its own session and process group, like a job's shell
    (Popen returns once it has exec'd, so its environment is already its own)."""
    return subprocess.Popen(["sleep", "300"], start_new_session=True, env=dict(os.environ, **env))


def test_the_published_group_survives_the_process_and_kills_the_job(runtime):
    job = start_group()
    try:
        published = jobgroup.JobGroup("w-test")
        published.publish(job.pid)
        assert (runtime / "w-test.pgid").stat().st_mode & 0o777 == 0o600
        del published  # the worker (and its supervisor) are gone; the file is not

        assert jobgroup.kill_orphaned("w-test", ["j-1"]) is True
        assert job.wait(timeout=10) == -9
        assert not (runtime / "w-test.pgid").exists()
    finally:
        job.kill()
        job.wait()


TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def start_group_timed(**env) -> tuple[subprocess.Popen, tuple[int, int]]:
    """start_group, and CLOCK_BOOTTIME just before and after the fork, as runner.run gives it."""
    before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    proc = start_group(**env)
    return proc, (before, time.clock_gettime_ns(time.CLOCK_BOOTTIME))


@pytest.fixture
def fresh_clock_check(monkeypatch):
    """This process's check of the kernel's start times against CLOCK_BOOTTIME, not done yet."""
    monkeypatch.setattr(jobgroup, "_boottime_agrees", None)


def published_start(path: Path) -> int:
    return jobgroup._Cell.from_buffer_copy(path.read_bytes()).start


def test_the_start_published_from_the_clock_is_the_kernels(runtime, fresh_clock_check):
    """Births pinned to one clock tick are published without reading /proc, and agree
    with it; a birth spanning two ticks is read from /proc."""
    published = jobgroup.JobGroup("w-clock")
    pinned = spanning = 0
    while pinned < 20 or spanning < 1:
        job, born = start_group_timed()
        try:
            if born[0] // TICK_NS != born[1] // TICK_NS:
                spanning += 1
            else:
                pinned += 1
            published.publish(job.pid, born)
            assert published_start(runtime / "w-clock.pgid") == jobgroup._start_ticks(job.pid)
            if spanning == 0 and pinned == 5:  # make one birth span two ticks
                job2, born2 = start_group_timed()
                published.publish(job2.pid, (born2[0] - TICK_NS, born2[1]))
                assert published_start(runtime / "w-clock.pgid") == jobgroup._start_ticks(job2.pid)
                spanning += 1
                job2.kill()
                job2.wait()
        finally:
            job.kill()
            job.wait()
    assert jobgroup._boottime_agrees is True
    published.remove()


def test_a_clock_that_disagrees_with_the_kernel_is_not_trusted(runtime, fresh_clock_check):
    """Were the kernel's start times not CLOCK_BOOTTIME's, the first check finds it:
    the true start is published, then and for every later job."""
    published = jobgroup.JobGroup("w-skew")
    try:
        for _ in range(3):
            job, born = start_group_timed()
            try:
                wrong = (born[0] - 50 * TICK_NS, born[0] - 50 * TICK_NS)  # half a second off, one tick wide
                published.publish(job.pid, wrong)
                assert published_start(runtime / "w-skew.pgid") == jobgroup._start_ticks(job.pid)
                assert published.kill() is True
                assert job.wait(timeout=10) == -9
            finally:
                job.kill()
                job.wait()
        assert jobgroup._boottime_agrees is False
    finally:
        published.remove()


def name_in_place(path: Path, pid: int) -> None:
    """Overwrite the published group id, as a pid recycled since publishing would be."""
    with open(path, "r+b") as file:
        file.write(pid.to_bytes(4, "little", signed=True))


def start_later_than(pid: int, **env) -> subprocess.Popen:
    """A new group whose leader started at a later clock tick than `pid` (ticks are
    10 ms: a pid recycled by the kernel comes back far later than that)."""
    while True:
        proc = start_group(**env)
        if jobgroup._start_ticks(proc.pid) != jobgroup._start_ticks(pid):
            return proc
        proc.kill()
        proc.wait()


def test_a_group_led_by_another_process_is_left_alone(runtime):
    """The published id now names a stranger's group (a recycled pid): neither the
    supervisor's kill nor a later supervisor's kills it."""
    gone = start_group()
    published = jobgroup.JobGroup("w-a")
    published.publish(gone.pid)
    stranger = start_later_than(gone.pid, QUEUECTL_JOB_ID="j-1")  # even one claiming to be the job
    try:
        gone.kill()
        gone.wait()
        name_in_place(runtime / "w-a.pgid", stranger.pid)
        assert published.value == stranger.pid
        assert published.kill() is False
        assert jobgroup.kill_orphaned("w-a", ["j-1"]) is False
        assert alive(stranger.pid)
        assert not (runtime / "w-a.pgid").exists()
        assert jobgroup.kill_orphaned("w-never-published", ["j-1"]) is False
    finally:
        stranger.kill()
        stranger.wait()


def test_a_leaderless_group_is_still_the_jobs(runtime):
    """The job's shell ended but left a process behind in its group: no leader to
    compare, and none needed (Linux does not reuse the id of a living group)."""
    shell = subprocess.Popen(["sh", "-c", "sleep 300.3 & echo $!"], start_new_session=True, stdout=subprocess.PIPE, text=True)
    left = int(shell.stdout.readline())
    shell.wait()
    try:
        published = jobgroup.JobGroup("w-l")
        published.publish(shell.pid)
        assert os.getpgid(left) == shell.pid and not alive(shell.pid)
        assert published.kill() is True
        wait_until(lambda: not alive(left), timeout=10, message="the leftover to be killed")
    finally:
        kill_all([psutil.Process(left)] if alive(left) else [])


def test_a_file_from_an_earlier_version_is_checked_by_environment(runtime):
    """16 bytes, no start time: the job's environment tells, as it did then."""
    stranger = start_group(QUEUECTL_JOB_ID="someone-else")
    job = start_group(QUEUECTL_JOB_ID="j-1")
    try:
        jobgroup.runtime_dir()
        for worker_id, proc in (("w-s", stranger), ("w-j", job)):
            (runtime / f"{worker_id}.pgid").write_bytes(proc.pid.to_bytes(4, "little") + bytes(12))
        assert jobgroup.kill_orphaned("w-s", ["j-1"]) is False and alive(stranger.pid)
        assert jobgroup.kill_orphaned("w-j", ["j-1"]) is True
        assert job.wait(timeout=10) == -9
    finally:
        for proc in (stranger, job):
            proc.kill()
            proc.wait()


def test_a_file_from_before_the_last_boot_is_only_removed(runtime):
    """The fallback directory survives reboots; the groups it names did not."""
    job = start_group()
    try:
        jobgroup.JobGroup("w-old").publish(job.pid)
        before_boot = psutil.boot_time() - 60
        os.utime(runtime / "w-old.pgid", (before_boot, before_boot))
        assert jobgroup.kill_orphaned("w-old", ["j-1"]) is False
        assert alive(job.pid) and not (runtime / "w-old.pgid").exists()
    finally:
        job.kill()
        job.wait()


def test_a_runtime_directory_others_can_write_is_refused(runtime):
    runtime.mkdir(mode=0o700)
    os.chmod(runtime, 0o777)
    with pytest.raises(QueuectlError, match="not a private directory"):
        jobgroup.JobGroup("w-x")


# --- without XDG_RUNTIME_DIR ------------------------------------------------------------

OTHER_UID = 65534  # "nobody": another user, for the files root plants


@pytest.fixture
def no_runtime_dir(tmp_path, monkeypatch):
    """A user without XDG_RUNTIME_DIR (cron, su, a container), whose HOME and TMPDIR
    are the test's; returns where the job-group files should go."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    return home / ".local" / "state" / "queuectl" / "run"


def plant(tmp: Path, how: str) -> Path:
    """What another user can leave at the predictable /tmp/queuectl-<uid>."""
    planted = tmp / f"queuectl-{os.getuid()}"
    if how == "symlink":
        target = tmp / "theirs"
        target.mkdir(mode=0o777)
        planted.symlink_to(target)
    else:
        planted.mkdir()
        os.chmod(planted, 0o777)
        if how == "owned by another user":
            if os.getuid() != 0:
                pytest.skip("only root can plant a directory owned by another user")
            os.chown(planted, OTHER_UID, OTHER_UID)
    return planted


@pytest.mark.parametrize("how", ["owned by another user", "world-writable", "symlink"])
def test_a_directory_planted_in_tmp_does_not_stop_workers(no_runtime_dir, tmp_path, how):
    planted = plant(tmp_path / "tmp", how)
    published = jobgroup.JobGroup("w-planted")
    assert published.path == no_runtime_dir / "w-planted.pgid"
    assert no_runtime_dir.stat().st_uid == os.getuid()
    assert no_runtime_dir.stat().st_mode & 0o777 == 0o700
    assert published.path.stat().st_mode & 0o777 == 0o600
    assert list(planted.iterdir()) == []  # nothing written where another user can reach
    published.remove()


def test_the_fallback_follows_xdg_state_home(no_runtime_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert jobgroup.runtime_dir() == tmp_path / "state" / "queuectl" / "run"
    # Directories it creates on the way are private too (the XDG base directory spec).
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_the_fallback_is_checked_like_the_runtime_dir(no_runtime_dir, tmp_path):
    no_runtime_dir.parent.mkdir(parents=True)
    os.symlink(tmp_path / "tmp", no_runtime_dir)
    with pytest.raises(QueuectlError, match="not a private directory"):
        jobgroup.JobGroup("w-x")
    no_runtime_dir.unlink()
    no_runtime_dir.mkdir(mode=0o755)
    with pytest.raises(QueuectlError, match="not a private directory"):
        jobgroup.JobGroup("w-x")


def test_a_home_that_cannot_hold_the_directory_is_a_clear_error(no_runtime_dir, tmp_path, monkeypatch):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setenv("HOME", str(not_a_dir))
    with pytest.raises(QueuectlError, match=r"cannot create .*XDG_RUNTIME_DIR"):
        jobgroup.runtime_dir()


def test_a_missing_xdg_runtime_dir_is_a_clear_error_not_made(tmp_path, monkeypatch):
    """XDG_RUNTIME_DIR is the session manager's (gone after the user's last logout)."""
    gone = tmp_path / "run-user-1000"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(gone))
    with pytest.raises(QueuectlError, match=r"cannot create .*No such file"):
        jobgroup.runtime_dir()
    assert not gone.exists()


def test_a_later_supervisor_finds_the_job_groups_without_xdg_runtime_dir(cli, db, supervisors, tmp_path):
    """Real processes, with a directory planted at /tmp/queuectl-<uid> (TMPDIR here): a
    supervisor starts, its whole tree is SIGKILLed mid-job, and the next supervisor of
    the same user finds the orphaned job's group in the fallback location and kills it."""
    env = supervisors.env(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"))
    for name in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME"):
        env.pop(name, None)
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    planted = plant(tmp_path / "tmp", "owned by another user" if os.getuid() == 0 else "world-writable")
    files = tmp_path / "home" / ".local" / "state" / "queuectl" / "run"
    configure(db, **FAST, backoff_max=0.2)

    cli.ok("enqueue", "--id", "warm-up", "true")
    first = supervisors.start("--burst", env=env)
    assert first.wait() == 0, first.log()
    assert job(db, "warm-up")["state"] == "completed"

    side = tmp_path / "attempts.log"
    command = f'echo "$QUEUECTL_ATTEMPT" >> "{side}"; if [ "$QUEUECTL_ATTEMPT" = 1 ]; then sleep 77.6; fi; echo ok'
    cli.ok("enqueue", "--id", "orphan", "--max-retries", "1", command)
    sup = supervisors.start(env=env)
    wait_lines(side, 1)
    assert len(list(files.glob("*.pgid"))) == 1, list(files.iterdir())
    kill_all([psutil.Process(sup.pid)] + sup.children())
    sup.wait()
    strays = wait_until(lambda: processes_of(cli.db_url, ["sleep", "77.6"]), timeout=LONG, message="an orphaned job")

    restarted = supervisors.start("--burst", env=env)
    assert restarted.wait() == 0, restarted.log()
    row = job(db, "orphan")
    assert (row["state"], row["attempts"], row["output"]) == ("completed", 1, "ok\n"), row
    assert not any(alive(p) for p in strays)  # killed by the restarted supervisor, found through its file
    assert list(files.iterdir()) == [] and list(planted.iterdir()) == []


# --- the supervisor's side ----------------------------------------------------------------


def private_runtime(supervisors, tmp_path) -> tuple[dict, Path]:
    """An environment whose job-group files this test alone sees, and their directory."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    return supervisors.env(XDG_RUNTIME_DIR=str(run)), run / "queuectl"


def test_orphaned_workers_leave_no_job_group_files(db, supervisors, tmp_path):
    configure(db, **FAST)
    env, files = private_runtime(supervisors, tmp_path)
    sup = supervisors.start("--concurrency", "2", env=env)
    workers = wait_workers(db, sup, 2)
    assert len(list(files.glob("*.pgid"))) == 2
    sup.signal(signal.SIGKILL)
    sup.wait()
    # Orphaned, each worker stops by itself (it has no job to finish)...
    for row in workers:
        wait_until(lambda row=row: not alive(row.pid), timeout=LONG, message=f"orphaned worker {row.pid} to exit")
    # ... and nobody else will ever clean up after it.
    assert list(files.glob("*.pgid")) == []


def test_a_dead_workers_group_id_is_killed_only_if_it_still_runs_the_job(db, supervisors, tmp_path):
    """#10 item 15. A worker dies; its supervisor kills the group it published at once,
    with no database call, but only if that group is still the job's: here the file
    names a stranger's group (as a recycled id would), and the stranger survives."""
    configure(db, **FAST)
    env, files = private_runtime(supervisors, tmp_path)
    side = tmp_path / "started"
    supervisors.cli.ok("enqueue", "--id", "long", "--max-retries", "0", f'touch "{side}"; sleep 366.1')
    sup = supervisors.start(env=env)
    (worker,) = wait_workers(db, sup, 1)
    wait_until(side.exists, timeout=LONG, message="the job to start")
    running = wait_until(lambda: processes_of(supervisors.cli.db_url, ["sleep", "366.1"]), timeout=LONG, message="the job")
    stranger = start_group()
    try:
        name_in_place(files / f"{worker.id}.pgid", stranger.pid)  # the mapping sees it
        os.kill(worker.pid, signal.SIGKILL)
        wait_until(lambda: job(db, "long")["state"] == "dead", timeout=LONG, message="the attempt to be charged")
        assert alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()
        kill_all(running)  # left alone along with the stranger: the file no longer named it


def test_a_job_with_an_emptied_environment_is_killed_by_a_later_supervisor(cli, db, supervisors, tmp_path):
    """The whole tree is SIGKILLed while a job runs `env -i`: nothing of the job carries
    QUEUECTL_JOB_ID any more, yet the next supervisor on this host finds and kills it."""
    configure(db, **FAST, backoff_max=0.2)
    env, files = private_runtime(supervisors, tmp_path)
    side = tmp_path / "attempts.log"
    command = f'echo "$QUEUECTL_ATTEMPT" >> "{side}"; if [ "$QUEUECTL_ATTEMPT" = 1 ]; then exec env -i sleep 377.7; fi; echo ok'
    cli.ok("enqueue", "--id", "bare", "--max-retries", "1", command)
    sup = supervisors.start(env=env)
    wait_lines(side, 1)
    strays = wait_until(lambda: _by_cmdline(["sleep", "377.7"]), timeout=LONG, message="the job")
    kill_all([psutil.Process(sup.pid)] + sup.children())
    sup.wait()
    try:
        assert all(alive(p) for p in strays)
        restarted = supervisors.start("--burst", env=env)
        assert restarted.wait() == 0, restarted.log()
        assert job(db, "bare")["state"] == "completed"
        wait_until(lambda: not any(alive(p) for p in strays), timeout=LONG, message="the orphaned job to be killed")
        assert list(files.glob("*.pgid")) == []
    finally:
        kill_all(strays)


def _by_cmdline(cmdline: list[str]) -> list[psutil.Process]:
    """Processes of this user running exactly `cmdline` (for a job that dropped its environment)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "uids"]):
        if proc.info["cmdline"] == cmdline and proc.info["uids"] and proc.info["uids"].real == os.getuid():
            found.append(proc)
    return found
