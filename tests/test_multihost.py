"""Several hosts on one database: supervisors with different host identities share
the work, and a host that vanishes has its running jobs recovered by the others
after heartbeat-timeout (no pid checks across hosts)."""

import collections
import signal
import time

import psutil
from sqlalchemy import text

from conftest import wait_until
from queuectl import jobspec
from queuectl.store import jobs
from worker_support import FAST, configure, job, kill_all, live_workers, read_lines, supervisors, tree, wait_workers  # noqa: F401

HOSTS = ("host-a", "host-b", "host-c")


def test_three_hosts_drain_1000_jobs_exactly_once(db, supervisors, tmp_path):
    configure(db, **FAST)
    side_log = tmp_path / "ran.log"
    specs = [jobspec.build(f'echo "$QUEUECTL_JOB_ID" >> {side_log}') for _ in range(1000)]
    jobs.enqueue(db, specs)
    sups = [supervisors.start("--burst", hostname=host) for host in HOSTS]
    for sup in sups:
        assert sup.wait() == 0, sup.log()

    ran = collections.Counter(read_lines(side_log))
    assert len(ran) == 1000 and set(ran.values()) == {1}, "every job exactly once"
    rows = [jobs.to_dict(r) for r in jobs.listing(db)]
    assert {r["state"] for r in rows} == {"completed"}
    with db.read() as conn:
        host_of = dict(conn.execute(text("SELECT id, host FROM workers WHERE role = 'worker'")).all())
    per_host = collections.Counter(host_of[r["worker_id"]] for r in rows)
    assert set(per_host) == set(HOSTS), f"all three hosts took part: {per_host}"


def test_vanished_host_jobs_recovered_after_heartbeat_timeout(db, supervisors, tmp_path):
    heartbeat_interval, heartbeat_timeout = 0.2, 2.0
    configure(db, **{**FAST, "heartbeat_interval": heartbeat_interval, "heartbeat_timeout": heartbeat_timeout, "backoff_base": 1})
    side_log = tmp_path / "ran.log"
    victim_sup = supervisors.start(hostname="host-a")
    wait_workers(db, victim_sup, 1)
    # host-a alone runs the first job, so we know whose job dies.
    # The job waits for a gate opened only once its host is gone, so it cannot finish
    # there first however long the other supervisors take to start (a fixed `sleep 3`
    # did, on a loaded machine).
    gate = tmp_path / "gate"
    first = jobs.enqueue(db, [jobspec.build(f'until [ -e {gate} ]; do sleep 0.05; done; echo "$QUEUECTL_JOB_ID" >> {side_log}')])[0]["id"]
    wait_until(lambda: job(db, first)["state"] == "running", message="host-a running the job")
    others = [supervisors.start(hostname=host) for host in HOSTS[1:]]
    for sup in others:
        wait_workers(db, sup, 1)

    # The host vanishes: supervisor, worker and job, all at once.
    victims = tree(victim_sup.pid)
    kill_all(victims)
    psutil.wait_procs(victims, timeout=10)
    killed_at = time.monotonic()
    gate.touch()

    recovered = wait_until(lambda: job(db, first)["state"] != "running" and job(db, first), timeout=30, interval=0.02, message="recovery")
    delay = time.monotonic() - killed_at
    assert recovered["attempts"] == 1 and recovered["last_error"] == "worker lost"
    # Worst case: the heartbeat went stale just as the kill came, plus one reaper period.
    assert delay <= heartbeat_timeout + heartbeat_interval + 3.0, f"recovered after {delay:.1f}s"
    done = wait_until(lambda: job(db, first)["state"] == "completed" and job(db, first), timeout=60, message="the job completing elsewhere")
    with db.read() as conn:
        host = conn.execute(text("SELECT host FROM workers WHERE id = :w"), {"w": done["worker_id"]}).scalar()
    assert host in HOSTS[1:]
    assert read_lines(side_log) == [first], "ran to completion exactly once"
    assert not live_workers(db, victim_sup.pid), "the vanished host's workers are no longer listed as live"
    for sup in others:
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
