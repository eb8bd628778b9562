"""Helpers for the bad-input, storage-fault and security tests (plain functions)."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import env_for


def run_many(url: str, cwd: Path, commands, *, env: dict | None = None, parallel: int = 4, timeout: float = 90):
    """`queuectl ARGS` for every ARGS in commands, a few at a time (each costs ~0.5 s of
    interpreter start-up). Returns [(args, CompletedProcess, seconds)] in order."""

    def one(args):
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "queuectl", *map(str, args)], capture_output=True, text=True,
                                env=env or env_for(url), cwd=cwd, timeout=timeout)
        return args, result, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(one, commands))
