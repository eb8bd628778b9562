"""Many jobs on a pool: each runs exactly once, and the work is shared."""

import time
from collections import Counter

from worker_support import read_lines, supervisors  # noqa: F401  (fixture)

JOBS = 500


def test_500_jobs_on_4_workers_each_run_exactly_once(cli, db, supervisors, tmp_path):
    ran = tmp_path / "ran.log"
    jobs_file = tmp_path / "many.jobs"
    # One short append per job: O_APPEND writes of a line are atomic.
    jobs_file.write_text(f'echo "$QUEUECTL_JOB_ID" >> "{ran}"\n' * JOBS)
    assert f"enqueued {JOBS} jobs" in cli.ok("enqueue", "--file", jobs_file).stdout

    started = time.monotonic()
    sup = supervisors.start("--burst", "--concurrency", "4")
    assert sup.wait(timeout=240) == 0, sup.log()
    elapsed = time.monotonic() - started
    print(f"drained {JOBS} jobs with 4 workers in {elapsed:.1f}s ({JOBS / elapsed:.0f} jobs/s, supervisor start-up included)")

    listed = cli.json("list")
    ids = [j["id"] for j in listed]
    assert len(ids) == JOBS
    counts = Counter(read_lines(ran))
    assert [i for i, n in counts.items() if n > 1] == [], "jobs that ran more than once"
    assert sorted(counts, key=int) == sorted(ids, key=int), "jobs that never ran, or unknown ids"
    assert {j["state"] for j in listed} == {"completed"}
    assert {j["attempts"] for j in listed} == {0}
    shares = Counter(j["worker_id"] for j in listed)
    print(f"jobs per worker: {sorted(shares.values(), reverse=True)}")
    assert len(shares) > 1, "a single worker took every job"
    assert len(shares) <= 4
    assert all(w.startswith("w-") for w in shares)
