"""`status` shows the live workers of a running supervisor as the real processes."""

import psutil

from queuectl.states import LIVE_WORKER_STATES as LIVE
from worker_support import FAST, LONG, alive, configure, job_in, supervisors, wait_until, wait_workers  # noqa: F401  (fixture)


def test_status_lists_live_workers_with_real_pids_and_drops_them_after_stop(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    go = tmp_path / "go"
    cli.ok("enqueue", "--id", "held", f'while [ ! -e "{go}" ]; do sleep 0.05; done')
    sup = supervisors.start("--concurrency", "2")
    wait_workers(db, sup, 2)
    wait_until(lambda: any(r.job_id == "held" for r in wait_workers(db, sup, 2)), timeout=LONG, message="a busy worker row")

    report = cli.json("status")
    assert report["jobs"]["running"] == 1
    live = [w for w in report["workers"] if w["state"] in LIVE]
    assert len(live) == 2, report["workers"]
    children = {p.pid for p in sup.children()}
    assert {w["pid"] for w in live} == children  # exactly the supervisor's two children
    for w in live:
        assert psutil.pid_exists(w["pid"])
        proc = psutil.Process(w["pid"])
        assert proc.ppid() == sup.pid == w["supervisor_pid"]
        assert "queuectl worker" in " ".join(proc.cmdline())  # its process title
        assert w["rss_bytes"] > 0 and w["cpu_percent"] >= 0
        assert 0 <= w["heartbeat_age"] < 5  # heartbeats every 0.2 s; slack for a loaded machine
    assert sorted(w["state"] for w in live) == ["busy", "idle"]
    assert [w["job_id"] for w in live if w["state"] == "busy"] == ["held"]

    text = cli.ok("status").stdout
    assert "Running: 1" in text
    for w in live:
        assert w["id"] in text and str(w["pid"]) in text

    go.touch()
    wait_until(lambda: job_in(db, "held", "completed"), timeout=LONG, message="the held job")
    stop = cli("worker", "stop", timeout=LONG)
    assert stop.returncode == 0, stop.stderr
    assert sup.wait() == 0

    after = cli.json("status")
    assert [w for w in after["workers"] if w["state"] in LIVE] == []
    # Recently stopped workers are still listed, as stopped, and their processes are gone.
    assert {w["id"]: w["state"] for w in after["workers"]} == {w["id"]: "stopped" for w in live}
    assert not any(alive(w["pid"]) for w in live)
    assert "cpu_percent" not in after["workers"][0]
