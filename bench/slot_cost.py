"""What each job slot costs in memory: `worker start -c N` with N `sleep` jobs
running, the PSS (proportional set size: shared pages split between the processes
that share them) of queuectl's own processes (the supervisor and its workers, not
the jobs' shells), beside task-spooler running the same N jobs (`tsp -S N`: its
server and the one client process that waits for each job).

    python bench/slot_cost.py [--db URL] [--slots 1,8,16,64]

Prints one line of JSON per width.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def _pss(procs) -> int:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"slot_cost: timed out waiting for {what}")


def _queuectl_pss(url: str, slots: int, tmp: Path) -> dict:
    env = dict(os.environ, QUEUECTL_DB=url, XDG_RUNTIME_DIR=str(tmp))
    cli = [sys.executable, "-m", "queuectl"]
    subprocess.run([*cli, "enqueue", "--file", "-"], input="".join(f"sleep 30 #{i}\n" for i in range(slots)),
                   text=True, env=env, check=True, capture_output=True, cwd=REPO)
    pool = subprocess.Popen([*cli, "worker", "start", "-c", str(slots)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        root = psutil.Process(pool.pid)

        def own_and_running():
            # queuectl's processes: the supervisor and whatever shares its process
            # group (workers); jobs lead groups of their own.
            procs = [root, *root.children(recursive=True)]
            own = [p for p in procs if _pgid(p.pid) == os.getpgid(pool.pid)]
            jobs = [p for p in procs if p.name() == "sleep"]
            return (own, jobs) if len(jobs) == slots else None

        own, _jobs = _wait(own_and_running, 60, f"{slots} running jobs")
        time.sleep(1.0)  # settled: every worker has beaten, streamed, titled itself
        own, _jobs = own_and_running() or (own, _jobs)
        pss = _pss(own)
        rss = sum(p.memory_info().rss for p in own)
        return {"processes": len(own), "pss_mb": round(pss / 2**20, 1), "rss_mb": round(rss / 2**20, 1)}
    finally:
        pool.send_signal(signal.SIGUSR1)
        try:
            pool.wait(30)
        except subprocess.TimeoutExpired:
            pool.kill()
            pool.wait()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _tsp_pss(slots: int, tmp: Path) -> dict | None:
    tsp = shutil.which("tsp")
    if not tsp:
        return None
    env = dict(os.environ, TS_SOCKET=str(tmp / f"tsp-{slots}.sock"), TS_SAVELIST=str(tmp / "tsp.list"), TMPDIR=str(tmp))
    subprocess.run([tsp, "-S", str(slots)], env=env, check=True, capture_output=True)
    try:
        for _ in range(slots):
            subprocess.run([tsp, "-n", "sleep", "30"], env=env, check=True, capture_output=True)

        def running():
            procs = [p for p in psutil.process_iter(["name", "environ"])
                     if p.info["name"] == "tsp" and (p.info["environ"] or {}).get("TS_SOCKET") == env["TS_SOCKET"]]
            sleeps = [c for p in procs for c in _children(p) if c.name() == "sleep"]
            return procs if len(sleeps) == slots else None

        procs = _wait(running, 60, f"{slots} tsp jobs")
        time.sleep(1.0)
        procs = running() or procs
        return {"processes": len(procs), "pss_mb": round(_pss(procs) / 2**20, 1), "rss_mb": round(sum(p.memory_info().rss for p in procs) / 2**20, 1)}
    finally:
        subprocess.run([tsp, "-K"], env=env, capture_output=True)
        for p in psutil.process_iter(["name"]):
            if p.info["name"] == "sleep" and p.ppid() == 1:
                pass


def _children(proc):
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db")
    parser.add_argument("--slots", default="1,8,16,64")
    args = parser.parse_args()
    results = []
    for slots in [int(s) for s in args.slots.split(",")]:
        tmp = Path(tempfile.mkdtemp(prefix="slots-"))
        os.chmod(tmp, 0o700)
        url = args.db or f"sqlite:///{tmp}/queue.db"
        if args.db:
            subprocess.run([sys.executable, "-m", "queuectl", "--db", url, "purge", "--all", "--yes"], capture_output=True, cwd=REPO)
        row = {"slots": slots, "backend": url.split(":", 1)[0], "queuectl": _queuectl_pss(url, slots, tmp), "tsp": _tsp_pss(slots, tmp)}
        results.append(row)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
