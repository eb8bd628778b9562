"""Where `worker start --detach` logs (#12): beside a SQLite database, one file per
PostgreSQL server and database, or --log PATH (a regular file of the user)."""

import os
import re
from pathlib import Path

from sqlalchemy.engine import make_url

from queuectl.store import worker_log_path
from support import error_line
from worker_support import (
    LONG,
    alive,
    supervisors,  # noqa: F401  (fixture)
    wait_until,
)

# --- 6. the detached worker's log ---------------------------------------------------------------------


def test_postgresql_logs_name_the_server_and_database(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    base = tmp_path / "queuectl"
    assert worker_log_path("postgresql+psycopg://u:s3cret@db.example:5433/jobs?sslpassword=x") == str(base / "worker-db.example_5433-jobs.log")
    assert worker_log_path("postgresql+psycopg://u@10.0.0.1/other") == str(base / "worker-10.0.0.1-other.log")
    assert worker_log_path("postgresql+psycopg:///local_db") == str(base / "worker-local-local_db.log")
    assert worker_log_path("postgresql+psycopg://h/..%2F..%2Fetc") == str(base / "worker-h-_.._etc.log")
    assert worker_log_path("sqlite:////data/q.db") == "/data/q.db.worker.log"


def _detach(cli, supervisors, *extra, env):
    out = cli.ok("worker", "start", "--detach", "--burst", *extra, env=env).stdout
    match = re.fullmatch(r"started supervisor pid=(\d+) log=(\S+)\n", out)
    assert match, out
    pid = int(match.group(1))
    supervisors.adopt(pid)
    wait_until(lambda: not alive(pid), timeout=LONG, message="the detached burst supervisor to exit")
    return match.group(2)


def test_detached_log_default_per_database(cli, supervisors, tmp_path):
    env = supervisors.env(XDG_DATA_HOME=str(tmp_path / "xdg"))
    log = _detach(cli, supervisors, env=env)
    if cli.db_url.startswith("postgresql"):
        url = make_url(cli.db_url)
        name = f"worker-{url.host}" + (f"_{url.port}" if url.port else "") + f"-{url.database}.log"
        assert log == str(tmp_path / "xdg" / "queuectl" / name)
        assert (url.password or "\0") not in log and (url.username or "\0") not in os.path.basename(log)
    else:
        assert log == cli.db_url + ".worker.log"
    assert "started 1 worker(s)" in Path(log).read_text()


def test_detached_log_option(cli, supervisors, tmp_path):
    env = supervisors.env(XDG_DATA_HOME=str(tmp_path / "xdg"))
    cli.ok("enqueue", "--id", "logged", "true", env=env)
    log = _detach(cli, supervisors, "--log", "my.log", env=env)
    assert log == str(tmp_path / "my.log")  # relative to the current directory, printed whole
    text = Path(log).read_text()
    assert "started 1 worker(s)" in text and "job logged completed" in text
    assert oct(os.stat(log).st_mode & 0o777) == oct(0o600)
    assert not (tmp_path / "xdg").exists()
    # appended to, not truncated
    _detach(cli, supervisors, "--log", log, env=env)
    assert Path(log).read_text().startswith(text) and Path(log).read_text().count("started 1 worker(s)") == 2


def test_detached_log_option_refusals(cli, supervisors, tmp_path):
    env = supervisors.env()
    (tmp_path / "precious").write_text("precious\n")
    os.symlink(tmp_path / "precious", tmp_path / "link.log")
    error_line(cli("worker", "start", "--detach", "--log", tmp_path / "link.log", env=env), 1, "is a symbolic link")
    error_line(cli("worker", "start", "--detach", "--log", tmp_path, env=env), 1, "worker log")
    error_line(cli("worker", "start", "--detach", "--log", tmp_path / "nodir" / "w.log", env=env), 1, "cannot open the worker log", "No such file")
    error_line(cli("worker", "start", "--log", tmp_path / "w.log", env=env), 2, "--log is for --detach")
    error_line(cli("worker", "start", "--detach", "--log", "", env=env), 2, "--log is empty")
    assert (tmp_path / "precious").read_text() == "precious\n"
    assert not (tmp_path / "w.log").exists()
