"""The benchmark's report (bench/run.py) and its memory records (bench/exit_peaks.py):
a figure that was not measured shows as n/a and never as met, and a process that
lives only a moment still has its peak recorded; the pool section's processes (a
private tsp server, a pool with `sleep` jobs) are all gone when it is done. No
database server needed."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import exit_peaks  # noqa: E402
import measures  # noqa: E402
import pool  # noqa: E402
import run  # noqa: E402
import slot_cost  # noqa: E402
import spooler  # noqa: E402


def drain_result(memory: list, width: int = 2) -> dict:
    """A drain section as measures.drain leaves it, with only what the memory rows read."""
    return {"tsp": False, "widths": {str(width): measures.memory_summary(memory, width)}}


def memory_row(results: dict, label: str = "each worker (the largest)") -> dict:
    rows = run.build_rows(results, list(results), run.QUICK)
    return next(r for r in rows if r.get("label") == label)


def a_drain(supervisor_kb=50_000, workers_kb=(41_000, 42_000), unreported=()):
    return {
        "supervisor_kb": supervisor_kb,
        "workers_kb": list(workers_kb),
        "workers_titles": [],
        "unreported_pids": list(unreported),
        "children_maxrss_kb": max(workers_kb, default=None),
    }


def test_measured_workers_give_the_largest_and_a_verdict():
    results = {"postgresql": {"drain": drain_result([a_drain(), a_drain(workers_kb=(43_000, 40_000))])}}
    row = memory_row(results)
    assert row["cells"]["postgresql"] == "42.0 MB"
    assert row["verdicts"]["postgresql"] == "met"


@pytest.mark.parametrize(
    "drains",
    [
        [a_drain(workers_kb=())],  # the drain ended before any worker was seen: was 0.0 MB (met)
        [a_drain(workers_kb=(41_000,))],  # one of the two workers
        [a_drain(unreported=(4242,))],  # a worker that never recorded its exit
        [a_drain(), None],  # a W=2 drain that was not sampled
    ],
)
def test_a_worker_not_measured_is_not_sampled_and_never_met(drains):
    results = {"sqlite": {"drain": drain_result(drains)}, "postgresql": {"drain": drain_result([a_drain()])}}
    row = memory_row(results)
    assert row["cells"]["sqlite"] == "n/a, not sampled"
    assert row["verdicts"]["sqlite"] == run.NOT_MEASURED
    assert row["verdicts"]["postgresql"] == "met"
    assert "0.0 MB" not in run.render([row], list(results))
    assert [line.split(":")[0] for line in run.not_measured([row])] == ["sqlite"]


def test_a_supervisor_without_its_exit_record_is_not_sampled():
    results = {"sqlite": {"drain": drain_result([a_drain(supervisor_kb=None)])}}
    assert memory_row(results, "supervisor")["cells"]["sqlite"] == "n/a, not sampled"
    assert memory_row(results)["verdicts"]["sqlite"] == "met"  # the workers were measured


def test_a_skipped_section_is_n_a_without_a_verdict():
    row = memory_row({"sqlite": {"memory_floor_kb": 50_000}})  # run with --only bulk
    assert row["cells"]["sqlite"] == "n/a"
    assert row["verdicts"] == {}


def test_a_section_that_failed_leaves_its_targets_not_measured():
    rows = run.build_rows({"sqlite": {"bulk": {"error": "RuntimeError: boom"}}}, ["sqlite"], run.QUICK)
    bulk = next(r for r in rows if r.get("label") == "queuectl")
    assert bulk["cells"]["sqlite"] == "n/a"
    assert bulk["verdicts"]["sqlite"] == run.NOT_MEASURED


CHILD_MB = 30

PROGRAM = f"""
import os, signal, sys
def allocate():
    return b"x" * ({CHILD_MB} << 20)  # written, so resident
pid = os.fork()
if pid == 0:  # a child that lives a few milliseconds
    allocate()
    os._exit(0)
os.waitpid(pid, 0)
pid = os.fork()
if pid == 0:  # a child killed by a signal cannot record its exit
    signal.pause()
os.kill(pid, signal.SIGKILL)
os.waitpid(pid, 0)
sys.exit(0)  # a normal exit, not os._exit
"""


def test_exit_peaks_records_a_child_that_lives_a_moment(tmp_path):
    (tmp_path / "briefly.py").write_text(textwrap.dedent(PROGRAM))
    out = tmp_path / "peaks"
    proc = subprocess.run(exit_peaks.command(out, [sys.executable, "-m", "briefly"]), cwd=tmp_path, timeout=60)
    assert proc.returncode == 0
    root_pid = int(out.read_text().splitlines()[0].split("\t")[2])  # the first fork's parent
    peaks = exit_peaks.read(out, root_pid)
    assert peaks["root"] is not None and peaks["root"]["hwm_kb"] > 0
    [child] = peaks["children"]
    assert child["hwm_kb"] >= CHILD_MB * 1024
    assert peaks["root"]["children_maxrss_kb"] >= CHILD_MB * 1024 * 0.95  # the kernel's figure agrees
    assert len(peaks["unreported"]) == 1  # the killed one


def test_without_tsp_its_target_is_not_measured():
    results = {"sqlite": {"drain": drain_result([a_drain()])}}  # tsp: False
    row = memory_row(results, "W=2 queuectl / tsp")
    assert row["cells"]["sqlite"] == "n/a, no tsp"
    assert row["verdicts"]["sqlite"] == run.NOT_MEASURED


# --- the pool section (bench/pool.py) -----------------------------------------------------


def a_pool(pss_kb=None, tsp=True, idle_pct=0.5, statements=(19.0, 19.0)):
    """A pool section as pool.measure leaves it. pss_kb: {width: queuectl's PSS}."""
    pss_kb = pss_kb or {2: 63_000, 8: 72_000}  # --quick's widths
    idle = {
        "8": {"cpu_pct_of_one_core": idle_pct, "statements_per_s": statements[0], "tsp": {"cpu_pct_of_one_core": 0.0} if tsp else None},
        "64": {"cpu_pct_of_one_core": idle_pct, "statements_per_s": statements[1]},
    }
    slots = {
        str(w): {"queuectl": {"processes": 1 + min(w, 2), "pss_kb": kb, "rss_kb": 2 * kb},
                 "tsp": {"processes": 1 + w, "pss_kb": 150 + 100 * w, "rss_kb": 1000 + 400 * w} if tsp else None}
        for w, kb in pss_kb.items()
    }
    return {"tsp": tsp, "idle_seconds": 3, "idle": idle, "slots": slots, "per_slot": pool.per_slot(slots)}


def pool_rows(results: dict, p: dict = run.QUICK) -> dict:
    rows = run.build_rows(results, list(results), p)
    start = next(i for i, r in enumerate(rows) if r.get("section", "").startswith("Pool"))
    end = next(i for i, r in enumerate(rows) if i > start and "section" in r)
    return {r["label"]: r for r in rows[start + 1 : end]}


def test_pool_rows_give_figures_verdicts_and_tsp_beside():
    rows = pool_rows({"sqlite": {"pool": a_pool(idle_pct=0.33)}, "postgresql": {"pool": a_pool(idle_pct=1.2, statements=(12.0, 12.5))}})
    idle = rows["`worker start -c 8`, idle: CPU of one core"]
    assert idle["cells"] == {"sqlite": "0.33%", "postgresql": "1.20%"}
    assert idle["verdicts"] == {"sqlite": "met", "postgresql": "MISSED"}
    assert idle["target"] == "< 1% of one core"
    assert rows["`tsp -S 8` server, idle, same window: CPU of one core"]["cells"]["sqlite"] == "0.00%"
    assert rows["SQL statements/s while idle, -c 8 / -c 64"]["cells"]["postgresql"] == "12.0/s / 12.5/s"
    total = rows["PSS of queuectl's processes, 8 slots"]  # --quick: the widest width is 8
    assert total["cells"]["sqlite"] == "70.3 MB" and total["verdicts"]["sqlite"] == "met"
    per_slot = rows["PSS per additional slot, (PSS(8) - PSS(2)) / 6"]
    assert per_slot["cells"]["sqlite"] == "1.5 MB" and per_slot["verdicts"]["sqlite"] == "met"  # (72,000 - 63,000) / 6 kB
    assert rows["same for tsp -S N (server + one client per job)"]["cells"]["sqlite"] == "0.1 MB"
    assert rows["2 slots: PSS of queuectl (its processes) / of tsp -S 2"]["cells"]["sqlite"] == "61.5 MB (3 proc) / 0.3 MB"
    assert rows["8 slots: PSS of queuectl (its processes) / of tsp -S 8"]["cells"]["sqlite"] == "70.3 MB (3 proc) / 0.9 MB"


def test_pool_rows_of_a_full_run_are_at_64_slots():
    rows = pool_rows({"sqlite": {"pool": a_pool({1: 55_000, 8: 70_000, 16: 80_000, 64: 160_000})}}, run.FULL)
    assert rows["PSS of queuectl's processes, 64 slots"]["verdicts"]["sqlite"] == "met"
    per_slot = rows["PSS per additional slot, (PSS(64) - PSS(1)) / 63"]
    assert per_slot["cells"]["sqlite"] == "1.6 MB" and per_slot["verdicts"]["sqlite"] == "met"
    assert [label.split(":")[0] for label in rows if "PSS of queuectl (its processes)" in label] == ["1 slot", "8 slots", "16 slots", "64 slots"]


def test_pool_without_tsp_shows_queuectl_and_no_tsp():
    rows = pool_rows({"sqlite": {"pool": a_pool(tsp=False)}})
    for label in ("`tsp -S 8` server, idle, same window: CPU of one core", "same for tsp -S N (server + one client per job)"):
        assert rows[label]["cells"]["sqlite"] == "n/a, no tsp"
        assert rows[label]["verdicts"] == {}  # compared with, not a target
    assert rows["8 slots: PSS of queuectl (its processes) / of tsp -S 8"]["cells"]["sqlite"] == "70.3 MB (3 proc) / n/a, no tsp"
    assert rows["PSS per additional slot, (PSS(8) - PSS(2)) / 6"]["cells"]["sqlite"] == "1.5 MB"


def test_a_pool_section_that_failed_leaves_its_targets_not_measured():
    rows = pool_rows({"sqlite": {"pool": {"error": "RuntimeError: timed out"}}})
    targeted = [r for r in rows.values() if r["target"]]
    assert [r["target"] for r in targeted] == ["< 1% of one core", "< 250 MB", "< 2 MB"]
    assert all(r["cells"]["sqlite"] == "n/a" and r["verdicts"]["sqlite"] == run.NOT_MEASURED for r in targeted)
    assert pool_rows({"sqlite": {}})["PSS of queuectl's processes, 8 slots"]["verdicts"] == {}  # not run: no verdict


def test_per_slot_needs_two_widths():
    slots = a_pool({1: 50_000, 16: 65_000})["slots"]
    assert pool.per_slot(slots) == {"from": 1, "to": 16, "queuectl_kb": 1000.0, "tsp_kb": 100.0}
    assert pool.per_slot({"8": slots["16"]}) == {}
    slots["1"]["tsp"] = None  # tsp not measured: queuectl's figure alone
    assert "tsp_kb" not in pool.per_slot(slots)


# --- cleanup of the processes the pool section starts (real tsp and queuectl processes) ----


def _ours(directory: Path, key: str) -> list:
    """Live (not zombie) processes whose environment points `key` into directory."""
    found = []
    for proc in psutil.process_iter(["environ", "status"]):
        value = (proc.info["environ"] or {}).get(key, "")
        if value.startswith(str(directory)) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


needs_tsp = pytest.mark.skipif(not spooler.TSP, reason="task-spooler (tsp) is not installed")


@needs_tsp
def test_tsp_pss_leaves_no_server_client_or_job(tmp_path):
    result = slot_cost.tsp_pss(2, tmp_path, settle=0)
    assert result["processes"] == 3  # the server and one client per running job
    assert _ours(tmp_path, "TS_SOCKET") == []  # was: both `sleep 30` jobs and their clients ran on


@needs_tsp
def test_a_failed_measurement_still_stops_tsp_and_its_jobs(tmp_path):
    with pytest.raises(RuntimeError, match="measurement failed"), spooler.Spooler(2, tmp_path) as tsp:
        tsp.add("sleep", "30")
        tsp.add("sleep", "30")
        spooler.wait_for(lambda: len(tsp.jobs()) == 2, 30, "two tsp jobs")
        raise RuntimeError("a measurement failed")
    assert _ours(tmp_path, "TS_SOCKET") == []


def test_queuectl_pss_leaves_no_pool_or_job(tmp_path):
    os.chmod(tmp_path, 0o700)
    result = slot_cost.queuectl_pss(f"sqlite:///{tmp_path}/queue.db", 2, tmp_path, settle=0)
    assert result["processes"] == 1 + min(2, len(os.sched_getaffinity(0))) and result["pss_kb"] > 0  # the supervisor and its workers
    assert _ours(tmp_path, "XDG_RUNTIME_DIR") == []
