"""PostgreSQL restarting under busy workers: workers log, back off and reconnect;
every job still ends completed or dead, none lost, outcomes written once it is back.

The server restarted is a private one the test starts itself (pg_server.py): restarting
the machine's shared server cut off everyone else using it, such as a second copy of the
suite running side by side ("FATAL: the database system is shutting down")."""

import collections
import signal

import pytest

from conftest import wait_until
from pg_server import private_pg  # noqa: F401
from queuectl import jobspec
from queuectl.store import jobs
from worker_support import FAST, LONG, configure, read_lines, supervisors, wait_workers  # noqa: F401


@pytest.fixture
def db_url(private_pg):
    """This module's database: on the private server, never the shared one."""
    return private_pg.create_database("queuectl")


def test_database_restart_mid_run_loses_nothing(db, supervisors, private_pg, tmp_path):
    configure(db, **FAST)
    side_log = tmp_path / "ran.log"
    ids = [r["id"] for r in jobs.enqueue(db, [jobspec.build(f'sleep 0.2; echo "$QUEUECTL_JOB_ID" >> {side_log}') for _ in range(40)])]
    sup = supervisors.start("--concurrency", "2")
    wait_workers(db, sup, 2)
    wait_until(lambda: len(read_lines(side_log)) >= 5, timeout=LONG, message="some jobs done before the restart")

    private_pg.restart()

    def settled():
        try:
            rows = [jobs.to_dict(r) for r in jobs.listing(db)]
        except Exception:  # the test's own connection may see the restart too
            return None
        return rows if all(r["state"] in ("completed", "dead") for r in rows) else None

    rows = wait_until(settled, timeout=LONG, interval=0.2, message="every job completed or dead after the restart")
    assert sorted(r["id"] for r in rows) == sorted(ids), "no job lost"
    ran = collections.Counter(read_lines(side_log))
    assert set(ran) == {r["id"] for r in rows if r["state"] == "completed"}
    assert sup.popen.poll() is None, "the supervisor survived the restart"
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
    assert "database unavailable" in sup.log() or "heartbeat failed" in sup.log()
