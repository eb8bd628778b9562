"""`queuectl logs --follow`: a job's output as it is produced, attempt after attempt.

A running job's output reaches the database while it runs (every 0.4 s,
worker.STREAM_EVERY), as the kept tail plus how many characters were printed
in all; so this reads one row by primary key a few times a second, wherever the job
runs, and prints what is new. What scrolled out of the kept tail between two reads
(a job printing more than output-limit in 0.4 s) is said, not printed.
"""

import time
from collections.abc import Callable

from queuectl.states import TERMINAL, JobState

POLL = 0.15


def follow(store, job_id: str, *, write: Callable[[str], None], note: Callable[[str], None],
           sleep: Callable[[float], None] = time.sleep) -> str:
    """Print (write) the job's output until it is terminal, with a line (note) where
    each attempt starts and ends; its final state. A job already finished: its last
    attempt's output."""
    progress = store.progress(job_id)
    if progress.state in TERMINAL:
        if progress.runs:
            note(f"=== attempt {progress.runs} ===")
        _new(progress.output or "", progress.output_size, 0, write, note)
        return progress.state
    current, printed, announced = progress.runs + 1, 0, False
    while True:
        if progress.runs >= current:  # attempt `current` has ended: the rest of it, from its row
            attempt = store.attempt(job_id, current)
            if not announced:
                note(f"=== attempt {current} ===")
            _new(attempt["output"] or "", attempt["output_size"], printed, write, note)
            note(f"=== attempt {current} ended: {_ending(attempt)} ===")
            current, printed, announced = current + 1, 0, False
            continue
        if progress.state in TERMINAL:
            return progress.state
        if progress.state == JobState.RUNNING.value:
            if not announced:
                note(f"=== attempt {current} (running) ===")
                announced = True
            printed = _new(progress.output or "", progress.output_size, printed, write, note)
        sleep(POLL)
        progress = store.progress(job_id)


def _new(text: str, size: int | None, printed: int, write, note) -> int:
    """Write what of `text` (the last characters of `size` printed in all) is past
    `printed`; the new count printed."""
    size = len(text) if size is None else size
    fresh = size - printed
    if fresh <= 0:
        return printed
    if fresh > len(text):
        note(cut_note(fresh - len(text)))
        write(text)
    else:
        write(text[len(text) - fresh :])
    return size


def cut_note(lost: int) -> str:
    return f"[... {lost:,} characters not kept (output-limit keeps the last part) ...]"


def _ending(attempt: dict) -> str:
    if attempt["error"] is None:
        return "completed (exit 0)"
    error, code = attempt["error"], attempt["exit_code"]
    return error if code is None or "exit code" in error else f"{error} (exit {code})"
