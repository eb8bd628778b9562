"""What an idle pool costs: CPU seconds of the supervisor and its workers over a
window (utime + stime from /proc, through psutil), and the SQL statements they send
(counted in-process by a SQLAlchemy before_cursor_execute listener on every Engine,
installed before the pool forks its workers, into a counter in a shared file
mapping); optionally beside an idle `tsp -S N` server over the same window.

    python bench/idle_cost.py [--db URL] [-c 8] [--seconds 10] [--settle 3] [--tsp]

Prints one line of JSON. Without --db: a fresh SQLite file in a temporary directory.
bench/run.py's `pool` section calls measure().
"""

import argparse
import contextlib
import json
import mmap
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from spooler import TSP, Spooler, wait_for

REPO = Path(__file__).resolve().parent.parent


def tree_cpu(pid: int) -> tuple[float, float]:
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


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _read(counter: mmap.mmap) -> int:
    return struct.unpack_from("q", counter, 0)[0]


def serve(counter_path: str, cli_args: list[str]) -> int:
    """The measured side (run as `idle_cost.py --serve COUNTER -- CLI ARGS`): the
    queuectl CLI with every statement counted into COUNTER, which the pool's forked
    workers share."""
    with open(counter_path, "r+b") as f:
        counter = mmap.mmap(f.fileno(), 8)

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def count(*_args):
        # Not atomic across processes; the figure is a rate, a lost increment is noise.
        struct.pack_into("q", counter, 0, _read(counter) + 1)

    event.listen(Engine, "before_cursor_execute", count)
    from queuectl.cli.main import main as cli

    return cli(cli_args)


@contextlib.contextmanager
def idle_pool(url: str, concurrency: int, run_dir: Path, env: dict | None = None, cwd: Path = REPO, python: str = sys.executable):
    """An idle `worker start -c N` on url, every worker process up (titled, no
    longer "starting"); yields (its pid, a function that reads its statement count).
    Stopped (SIGTERM, then SIGKILL) on the way out."""
    counter_path = run_dir / f"statements-{concurrency}-{time.monotonic_ns()}"
    counter_path.write_bytes(bytes(8))
    env = dict(env if env is not None else os.environ, XDG_RUNTIME_DIR=str(run_dir))
    if str(REPO) not in env.get("PYTHONPATH", "").split(os.pathsep):  # the source tree's queuectl
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [python, str(Path(__file__).resolve()), "--serve", str(counter_path), "--", "--db", url, "worker", "start", "-c", str(concurrency)]
    pool = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with open(counter_path, "rb") as f:
            counter = mmap.mmap(f.fileno(), 8, access=mmap.ACCESS_READ)
        # The supervisor and default_processes(N) workers (one per CPU, at most N).
        expected = 1 + max(1, min(concurrency, len(os.sched_getaffinity(0))))

        def up():
            if pool.poll() is not None:
                raise RuntimeError(f"`worker start -c {concurrency}` exited {pool.returncode} while starting")
            try:
                procs = psutil.Process(pool.pid).children(recursive=True)
                titles = [" ".join(p.cmdline()) for p in procs]
            except psutil.Error:  # a process came or went while being read
                return False
            return len(procs) + 1 == expected and all(t.startswith("queuectl worker") and "starting" not in t for t in titles)

        wait_for(up, 60, f"the {expected - 1} worker processes of `worker start -c {concurrency}`")
        yield pool.pid, lambda: _read(counter)
    finally:
        pool.send_signal(signal.SIGTERM)
        try:
            pool.wait(30)
        except subprocess.TimeoutExpired:
            for proc in _tree(pool.pid):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            pool.wait()


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def measure(url: str, concurrency: int = 8, seconds: float = 10.0, settle: float = 3.0, run_dir: Path | None = None,
            env: dict | None = None, cwd: Path = REPO, python: str = sys.executable, tsp: bool = False) -> dict:
    """The idle pool's figures over one window of `seconds`, taken `settle` seconds
    after its workers are up; with tsp (and tsp installed), an idle `tsp -S N`
    server's CPU over the same window under "tsp" (None when tsp is missing)."""
    with contextlib.ExitStack() as stack:
        if run_dir is None:
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="idle-")))
            os.chmod(run_dir, 0o700)
        spooler = stack.enter_context(Spooler(concurrency, run_dir, env)) if tsp and TSP else None
        pid, statements = stack.enter_context(idle_pool(url, concurrency, run_dir, env, cwd, python))
        time.sleep(settle)  # past the workers' first heartbeats and claims
        q0, c0, s0, t0 = statements(), tree_cpu(pid), spooler and _cpu(spooler.server), time.monotonic()
        time.sleep(seconds)
        q1, c1, s1, t1 = statements(), tree_cpu(pid), spooler and _cpu(spooler.server), time.monotonic()
        processes = len(_tree(pid))
    wall = t1 - t0
    result = {
        "backend": url.split(":", 1)[0].split("+")[0], "workers": concurrency, "processes": processes, "seconds": round(wall, 2),
        "cpu_s": round(c1[0] - c0[0], 3), "cpu_pct_of_one_core": round(100 * (c1[0] - c0[0]) / wall, 2),
        "supervisor_cpu_s": round(c1[1] - c0[1], 3),
        "statements_per_s": round((q1 - q0) / wall, 1),
    }
    if tsp:
        result["tsp"] = {"slots": concurrency, "cpu_s": round(s1 - s0, 3), "cpu_pct_of_one_core": round(100 * (s1 - s0) / wall, 2)} if spooler else None
    return result


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":  # the measured pool, started by idle_pool
        return serve(sys.argv[2], sys.argv[4:])
    parser = argparse.ArgumentParser()
    parser.add_argument("--db")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between the workers being up and the window")
    parser.add_argument("--tsp", action="store_true", help="also an idle `tsp -S N` server over the same window")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idle-") as tmp:
        os.chmod(tmp, 0o700)
        url = args.db or f"sqlite:///{tmp}/queue.db"
        print(json.dumps(measure(url, args.concurrency, args.seconds, args.settle, Path(tmp), tsp=args.tsp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
