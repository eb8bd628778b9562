"""A private task-spooler (tsp) server for the pool measurements (bench/idle_cost.py,
bench/slot_cost.py): started on its own socket in a directory of ours, so that its
processes can be told from any other tsp on the machine, and stopped with
everything it ran, even when a measurement fails half-way.

task-spooler has one server process per socket; `tsp -n CMD` forks a client into
the background that waits for a slot and then runs CMD as its child. Both carry
the TS_SOCKET they were started with, which is how they are found here.
"""

import os
import shutil
import subprocess
from pathlib import Path

import psutil

from common import wait_for

TSP = shutil.which("tsp")


class Spooler:
    """`with Spooler(slots, directory) as tsp:` a running `tsp -S slots` server."""

    def __init__(self, slots: int, directory: Path, env: dict | None = None):
        if not TSP:
            raise RuntimeError("task-spooler (tsp) is not installed")
        self.slots = slots
        env = dict(env if env is not None else os.environ)
        for key in ("TS_SLOTS", "TS_MAXFINISHED", "TS_ONFINISH", "TS_ENV"):
            env.pop(key, None)
        env.update(TS_SOCKET=str(directory / f"tsp-{slots}.sock"), TS_SAVELIST=str(directory / f"tsp-{slots}.list"), TMPDIR=str(directory))
        self.env = env
        self.server: psutil.Process | None = None

    def __enter__(self) -> "Spooler":
        try:
            # The first client starts the server, which outlives it; `-S` sets its slots.
            self._tsp("-S", str(self.slots))
            self.server = wait_for(lambda: next(iter(self.processes()), None), 10, "the tsp server")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _tsp(self, *args: str) -> None:
        subprocess.run([TSP, *args], env=self.env, check=True, capture_output=True, timeout=30)

    def add(self, *command: str) -> None:
        """Queue a job whose output is not kept (`tsp -n`)."""
        self._tsp("-n", *command)

    def processes(self) -> list[psutil.Process]:
        """The server and the client of every job not yet ended."""
        found = []
        for proc in psutil.process_iter(["name", "environ"]):
            if proc.info["name"] == "tsp" and (proc.info["environ"] or {}).get("TS_SOCKET") == self.env["TS_SOCKET"]:
                found.append(proc)
        return found

    def jobs(self) -> list[psutil.Process]:
        """The running jobs' processes (the clients' children)."""
        return [child for proc in self.processes() for child in _descendants(proc)]

    def stop(self) -> None:
        """Kill the server, every job it started and every client still waiting."""
        procs = self.processes()
        jobs = [child for proc in procs for child in _descendants(proc)]
        subprocess.run([TSP, "-K"], env=self.env, capture_output=True, timeout=30)
        for job in jobs:  # `tsp -K` stops the server only; its clients' jobs run on
            _kill(job)
        _, alive = psutil.wait_procs(procs + jobs, timeout=5)
        for proc in alive:
            _kill(proc)
        psutil.wait_procs(alive, timeout=5)


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _kill(proc: psutil.Process) -> None:
    try:
        proc.kill()  # psutil checks that the pid is still the same process
    except psutil.Error:
        pass
