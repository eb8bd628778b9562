"""What each job slot costs in memory: `worker start -c N` with N `sleep` jobs
running, the PSS (proportional set size: shared pages split between the processes
that share them) of queuectl's own processes (the supervisor and its workers, not
the jobs' shells), beside task-spooler running the same N jobs (`tsp -S N`: its
server and the one client process that waits for each job).

    python bench/slot_cost.py [--db URL] [--slots 1,8,16,64]

Prints one line of JSON per width. bench/run.py's `pool` section calls
queuectl_pss() and tsp_pss().
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from spooler import TSP, Spooler, wait_for

REPO = Path(__file__).resolve().parent.parent
JOB = "sleep 30"  # outlives any width's measurement; killed when it is done


def _memory(procs) -> dict:
    """PSS and RSS (kB) summed over procs; a process that has gone counts nothing."""
    pss = rss = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
            pss, rss = pss + info.pss, rss + info.rss
        except psutil.Error:
            pass
    return {"processes": len(procs), "pss_kb": pss // 1024, "rss_kb": rss // 1024}


def queuectl_pss(url: str, slots: int, run_dir: Path, env: dict | None = None, cwd: Path = REPO, python: str = sys.executable,
                 settle: float = 1.0) -> dict:
    """queuectl's processes with `slots` jobs running under `worker start -c slots`,
    `settle` seconds after the last one started. The pool is stopped at once
    (SIGUSR1: its jobs are killed) and any job still alive then is killed too."""
    env = dict(env if env is not None else os.environ, QUEUECTL_DB=url, XDG_RUNTIME_DIR=str(run_dir))
    if str(REPO) not in env.get("PYTHONPATH", "").split(os.pathsep):  # the source tree's queuectl
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cli = [python, "-m", "queuectl"]
    # `#i` makes every command its own, whatever the unique settings say
    subprocess.run([*cli, "enqueue", "--file", "-"], input="".join(f"{JOB} #{i}\n" for i in range(slots)),
                   text=True, env=env, check=True, capture_output=True, cwd=cwd, timeout=120)
    pool = subprocess.Popen([*cli, "worker", "start", "-c", str(slots)], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, psutil.Process] = {}  # every process of the pool and its jobs, for the cleanup
    try:
        root = psutil.Process(pool.pid)
        group = os.getpgid(pool.pid)

        def own_and_running():
            if pool.poll() is not None:
                raise RuntimeError(f"`worker start -c {slots}` exited {pool.returncode}")
            # queuectl's processes: the supervisor and whatever shares its process
            # group (workers); jobs lead groups of their own.
            procs = [root, *_children(root)]
            seen.update((p.pid, p) for p in procs)
            own = [p for p in procs if _pgid(p.pid) == group]
            jobs = [p for p in procs if _name(p) == "sleep"]
            return (own, jobs) if len(jobs) == slots else None

        wait_for(own_and_running, 60, f"{slots} running jobs")
        time.sleep(settle)  # settled: every worker has beaten, streamed, titled itself
        own, _jobs = wait_for(own_and_running, 10, f"{slots} running jobs, settled")
        return _memory(own)
    finally:
        pool.send_signal(signal.SIGUSR1)
        try:
            pool.wait(30)
        except subprocess.TimeoutExpired:
            pool.kill()
            pool.wait()
        leftovers = [p for p in seen.values() if p.pid != pool.pid and p.is_running()]
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=5)


def tsp_pss(slots: int, run_dir: Path, env: dict | None = None, settle: float = 1.0) -> dict | None:
    """task-spooler's processes (server and clients) with `slots` jobs running under
    `tsp -S slots`; None when tsp is not installed. Server, clients and jobs are
    killed on the way out."""
    if not TSP:
        return None
    with Spooler(slots, run_dir, env) as tsp:
        for _ in range(slots):
            tsp.add(*JOB.split())

        def running():
            return tsp.processes() if sum(_name(p) == "sleep" for p in tsp.jobs()) == slots else None

        wait_for(running, 60, f"{slots} tsp jobs")
        time.sleep(settle)
        return _memory(wait_for(running, 10, f"{slots} tsp jobs, settled"))


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _name(proc: psutil.Process) -> str | None:
    try:
        return proc.name()
    except psutil.Error:
        return None


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db")
    parser.add_argument("--slots", default="1,8,16,64")
    args = parser.parse_args()
    for slots in [int(s) for s in args.slots.split(",")]:
        with tempfile.TemporaryDirectory(prefix="slots-") as tmp:
            os.chmod(tmp, 0o700)
            url = args.db or f"sqlite:///{tmp}/queue.db"
            if args.db:
                subprocess.run([sys.executable, "-m", "queuectl", "--db", url, "purge", "--all", "--yes"], capture_output=True, cwd=REPO)
            row = {"slots": slots, "backend": url.split(":", 1)[0], "queuectl": queuectl_pss(url, slots, Path(tmp)), "tsp": tsp_pss(slots, Path(tmp))}
            for side in ("queuectl", "tsp"):
                if row[side]:
                    row[side] = {"processes": row[side]["processes"], "pss_mb": round(row[side]["pss_kb"] / 1024, 1),
                                 "rss_mb": round(row[side]["rss_kb"] / 1024, 1)}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
