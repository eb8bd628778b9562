"""The benchmark's report (bench/run.py) and its memory records (bench/exit_peaks.py):
a figure that was not measured shows as n/a and never as met, and a process that
lives only a moment still has its peak recorded. No database needed."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import exit_peaks  # noqa: E402
import measures  # noqa: E402
import run  # noqa: E402


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
