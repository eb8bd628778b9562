"""`list` and `dlq list` never read job outputs: a real process's peak memory is the
same whether the jobs it lists printed one byte or a mebibyte each."""

import subprocess
import sys

import pytest
from sqlalchemy import update

from conftest import env_for
from queuectl.store.models import DEAD_JOBS, JOBS
from queuectl.timeutil import utcnow
from support import enqueue, finish, kill

N_JOBS = 48  # completed ones, and as many dead ones
BIG = 1 << 20  # 1 MiB of output each: 96 MiB in all
# Peak RSS varies by a few MiB from run to run (allocator, imports); one job's output
# read into memory is 1 MiB, all of them 48-96 MiB (and more: driver buffers, copies).
SLACK = 16 << 20


# Measures its child from a small process of its own. A child started by vfork (as
# subprocess does) inherits its parent's peak RSS at exec(): measured straight from
# pytest, every command would seem to use at least what pytest does.
MEASURE = r"""
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024)  # ru_maxrss: KiB on Linux
"""


def peak_rss(db_url, tmp_path, *argv: str) -> int:
    """The peak resident memory (bytes) of one `queuectl ARGV` process."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, sys.executable, "-m", "queuectl", *argv],
        capture_output=True, text=True, env=env_for(db_url), cwd=tmp_path, timeout=300,
    )
    code, rss = map(int, result.stdout.split())
    assert code == 0 and result.returncode == 0, result.stderr
    return rss


def set_outputs(db, text: str) -> None:
    with db.begin() as conn:
        conn.execute(update(JOBS).values(output=text))
        conn.execute(update(DEAD_JOBS).values(output=text))


COMMANDS = [("list",), ("list", "--json"), ("dlq", "list"), ("dlq", "list", "--json")]


def test_listing_memory_does_not_grow_with_job_outputs(db, db_url, tmp_path):
    now = utcnow()
    for _ in range(N_JOBS):
        finish(db, enqueue(db, "yes | head -c 1M", now=now), now=now)
        kill(db, enqueue(db, "yes | head -c 1M; exit 1", now=now, max_retries=0), now=now)

    set_outputs(db, "x")
    small = {argv: peak_rss(db_url, tmp_path, *argv) for argv in COMMANDS}
    set_outputs(db, "x" * BIG)
    big = {argv: peak_rss(db_url, tmp_path, *argv) for argv in COMMANDS}

    grown = {" ".join(argv): f"{small[argv] / 2**20:.1f} -> {big[argv] / 2**20:.1f} MiB" for argv in COMMANDS}
    print(grown)
    for argv in COMMANDS:
        assert big[argv] - small[argv] < SLACK, grown


@pytest.mark.parametrize("argv", [("list", "--json"), ("dlq", "list", "--json")])
def test_listings_leave_the_output_out_and_show_still_has_it(cli, db, argv):
    job_id = enqueue(db, "echo boom; exit 1", max_retries=0)
    kill(db, job_id, output="boom\n")
    (row,) = cli.json(*argv)
    assert row["id"] == job_id and "output" not in row
    assert cli.json("show", job_id)["output"] == "boom\n"
    assert cli.ok("logs", job_id).stdout == "boom\n"
