"""What an idle pool costs: CPU seconds of the supervisor and its workers over a
window (utime + stime from /proc, through psutil), and the SQL statements they send
(counted in-process by a SQLAlchemy before_cursor_execute listener on every Engine,
installed before the pool forks its workers, into a counter in shared memory).

    python bench/idle_cost.py [--db URL] [-c 8] [--seconds 10] [--settle 3]

Prints one line of JSON. Without --db: a fresh SQLite file in a temporary directory.
"""

import argparse
import json
import mmap
import os
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil


def _tree_cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds of the pool's processes, of its supervisor alone)."""
    total = supervisor = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
            if proc.pid == pid:
                supervisor = times.user + times.system
        except psutil.Error:
            pass
    return total, supervisor


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="idle-")
    url = args.db or f"sqlite:///{tmp}/queue.db"
    os.environ.setdefault("XDG_RUNTIME_DIR", tmp)
    os.chmod(tmp, 0o700)
    counter = mmap.mmap(-1, 8)  # shared with the forked pool (MAP_SHARED | MAP_ANONYMOUS)
    pid = os.fork()
    if pid == 0:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        def count(*_args):
            # Not atomic across processes; the figure is a rate, a lost increment is noise.
            counter.seek(0)
            (value,) = struct.unpack("q", counter.read(8))
            counter.seek(0)
            counter.write(struct.pack("q", value + 1))

        event.listen(Engine, "before_cursor_execute", count)
        from queuectl.cli.main import main as cli

        code = cli(["--db", url, "worker", "start", "-c", str(args.concurrency)])
        os._exit(code)
    try:
        time.sleep(args.settle)
        counter.seek(0)
        q0 = struct.unpack("q", counter.read(8))[0]
        c0, t0 = _tree_cpu(pid), time.monotonic()
        time.sleep(args.seconds)
        c1, t1 = _tree_cpu(pid), time.monotonic()
        counter.seek(0)
        q1 = struct.unpack("q", counter.read(8))[0]
        processes = 1 + len(psutil.Process(pid).children(recursive=True))
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    wall = t1 - t0
    print(json.dumps({
        "backend": url.split(":", 1)[0], "workers": args.concurrency, "processes": processes, "seconds": round(wall, 2),
        "cpu_s": round(c1[0] - c0[0], 3), "cpu_pct_of_one_core": round(100 * (c1[0] - c0[0]) / wall, 2),
        "supervisor_cpu_s": round(c1[1] - c0[1], 3),
        "statements_per_s": round((q1 - q0) / wall, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
