"""`queuectl wait` and `enqueue --wait`: block until jobs have finished.

A short poll (every 50 ms, so a job's end is seen within 100 ms) that asks the
database about one job at a time: the oldest one not finished yet, by primary key.
Only when that one has finished are the others looked at again, in one read. Jobs
mostly finish in the order they were enqueued, so waiting for thousands costs about
what waiting for one does: some twenty primary-key reads a second, on either backend.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from queuectl.errors import NotFound, QueuectlError
from queuectl.states import TERMINAL, JobState

POLL = 0.05
DELETED = "deleted"  # how a job that was deleted while waited for ended


class WaitTimedOut(QueuectlError):
    """--timeout ran out with jobs still unfinished (exit 124, as timeout(1))."""

    exit_code = 124


@dataclass(frozen=True)
class Ended:
    id: str
    state: str
    exit_code: int | None
    last_error: str | None

    @property
    def completed(self) -> bool:
        return self.state == JobState.COMPLETED.value


def wait(store, ids: list[str] | None, *, queue: str | None = None, timeout: float | None = None,
         monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> list[Ended]:
    """Wait until every named job (all or none must exist), or every job of `queue`
    (or of the whole queue) not finished when called, has finished; how each ended."""
    if ids is None:
        ids = store.active(queue)
    else:
        known = store.outcomes(ids)
        missing = next((i for i in ids if i not in known), None)
        if missing is not None:
            raise NotFound(f"no job with id {missing!r}")
    deadline = None if timeout is None else monotonic() + timeout
    ended: dict[str, Ended] = {}
    remaining = list(dict.fromkeys(ids))
    first = True
    while remaining:
        head = store.outcomes(remaining[:1]).get(remaining[0]) if not first else None
        if first or head is None or head[0] in TERMINAL:
            first = False
            found = store.outcomes(remaining)
            for job_id in remaining:
                if job_id not in found:  # deleted meanwhile
                    ended[job_id] = Ended(job_id, DELETED, None, None)
                elif found[job_id][0] in TERMINAL:
                    ended[job_id] = Ended(job_id, *found[job_id])
            remaining = [i for i in remaining if i not in ended]
            continue
        if deadline is not None and monotonic() >= deadline:
            raise WaitTimedOut(f"timed out after {timeout:g}s with {len(remaining)} job(s) not finished: {' '.join(remaining[:20])}")
        sleep(POLL)
    return [ended[i] for i in dict.fromkeys(ids)]
