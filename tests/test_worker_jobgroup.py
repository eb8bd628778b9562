"""The runtime-directory file through which a dead worker's job group is found and
killed: real processes, and a recycled pid must never get a stranger killed."""

import os
import subprocess

import pytest
from worker_support import alive

from queuectl.errors import QueuectlError
from queuectl.worker import jobgroup


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
    job = start_group(QUEUECTL_JOB_ID="j-1")
    try:
        published = jobgroup.JobGroup("w-test")
        published.value = job.pid
        assert (runtime / "w-test.pgid").stat().st_mode & 0o777 == 0o600
        del published  # the worker (and its supervisor) are gone; the file is not

        assert jobgroup.kill_orphaned("w-test", ["j-1"]) is True
        assert job.wait(timeout=10) == -9
        assert not (runtime / "w-test.pgid").exists()
    finally:
        job.kill()
        job.wait()


def test_a_group_not_running_the_held_job_is_left_alone(runtime):
    stranger = start_group(QUEUECTL_JOB_ID="someone-else")
    unmarked = start_group()
    try:
        for worker_id, proc in (("w-a", stranger), ("w-b", unmarked)):
            jobgroup.JobGroup(worker_id).value = proc.pid
            assert jobgroup.kill_orphaned(worker_id, ["j-1"]) is False
            assert alive(proc.pid)
            assert not (runtime / f"{worker_id}.pgid").exists()
        assert jobgroup.kill_orphaned("w-never-published", ["j-1"]) is False
    finally:
        for proc in (stranger, unmarked):
            proc.kill()
            proc.wait()


def test_a_runtime_directory_others_can_write_is_refused(runtime):
    runtime.mkdir(mode=0o700)
    os.chmod(runtime, 0o777)
    with pytest.raises(QueuectlError, match="not a private directory"):
        jobgroup.JobGroup("w-x")
