"""One job slot of a worker process: claims a job, runs it, records its outcome.

A slot is a row of the workers table (its own worker id: the owner that fences every
change to its job) and a published job group (jobgroup.py: whoever outlives the
process kills the job). A worker process (worker.py) runs one or more slots, each on
a thread of its own, and shares with them its signals, its database connection, its
heartbeat and output threads, and one look-out for work (lookout.py).
"""

import logging
import threading
from typing import Any

from queuectl.errors import DatabaseError
from queuectl.states import JobState, WorkerState
from queuectl.worker import runner
from queuectl.worker.outage import ride_out

log = logging.getLogger("queuectl.worker")

# A job's process group is written to the workers row once it has run this long,
# so the many short jobs cost no extra write while long ones can be found by a reaper.
RECORD_BUSY_AFTER = 0.2
# A running job is killed once its worker's heartbeat has not reached the database for
# this fraction of heartbeat-timeout: by the worker itself, or by its supervisor if
# the worker is hung. Other hosts declare the worker dead (and run the job again) only
# after the whole heartbeat-timeout, so by then the first attempt is dead.
FENCE_FRACTION = 0.5
# A running job's output reaches the database this often (if it printed anything new):
# `logs --follow` on any host sees it within about this long, and a chatty job costs
# two and a half writes a second, not one per line. A job shorter than this never streams: its
# output is written once, with its outcome.
STREAM_EVERY = 0.4


def fence_after(cfg: dict) -> float:
    return cfg["heartbeat-timeout"] * FENCE_FRACTION


class Slot:
    def __init__(self, process: Any, number: int, worker_id: str, published):
        """process: its worker.Worker (not imported: worker.py imports this module);
        number: the slot's place in its pool (1..concurrency, shown by `ps`);
        published: its JobGroup, shared with the supervisor."""
        self.p = process
        self.number = number
        self.worker_id = worker_id
        self.published = published
        self.processed = 0
        self.failed = 0
        self.beaten: dict | None = None  # what the last heartbeat that reached the database wrote
        self.declared_dead = False  # its row was ended by a reaper
        self.fenced_after: float | None = None  # set when its job was killed for a lost heartbeat
        self.job: Any = None  # the running job's row (CLAIM_COLUMNS), None between jobs
        self.job_started = 0.0
        self.busy_recorded = False
        self.next_job = None
        self.cancel_job: str | None = None  # the running job `cancel` asked us to stop (set by a heartbeat)
        self.cancel_sent = False
        self.cancelled = False  # the job that just ended was cancelled
        self.tail: runner.Tail | None = None  # the running job's output, streamed by stream()
        self.streamed_size = 0
        # Held while streaming output, and to end a job's stream: a late write of one
        # attempt's output never lands on the next attempt of the same job.
        self.stream_lock = threading.Lock()

    # --- one job ---------------------------------------------------------------------

    def claim(self):
        """One claim for this slot (after a look that says work may exist); None if
        nothing was claimable."""
        if not self.p.waiter.work_may_exist():
            return None
        job = self.p.store.claim(self.worker_id, self.p.o.queues, self.p.clock())
        self.p.waiter.found(job is not None)
        return job

    def run(self, job) -> None:
        p = self.p
        self.job = job
        self.job_started = p.monotonic()
        self.busy_recorded = False
        self.fenced_after = None
        self.cancel_sent = False
        self.cancelled = False
        p.titles()
        env = runner.job_environment(p.base_env, QUEUECTL_JOB_ID=job.id, QUEUECTL_ATTEMPT=str(job.attempts + 1))
        timeout = job.timeout or None
        log.info("job %s started (attempt %d): %s", job.id, job.attempts + 1, _preview(job.command))
        self.streamed_size = 0
        self.tail = runner.Tail(int(p.cfg["output-limit"]))
        p.streamer.unpark()  # self.job is set: the output thread's interval is STREAM_EVERY now
        outcome = runner.run(
            job.command,
            cwd=job.cwd,
            env=env,
            timeout=timeout,
            output_limit=int(p.cfg["output-limit"]),
            on_start=self.published.publish,  # (pgid, born)
            on_end=self.published.clear,
            tick=self._tick,
            tail=self.tail,
        )
        with self.stream_lock:  # no more streaming of this attempt: its outcome follows
            self.tail = None
        if self.fenced_after is not None:
            outcome = runner.Outcome(
                None, outcome.output,
                f"killed: no heartbeat reached the database for {self.fenced_after:.1f}s (so that no other worker runs it meanwhile)",
            )
        # Cancelled: signalled for it, or killed by the fence after a cancel was asked
        # (a job someone cancelled is never retried). A job that ended by itself before
        # the cancel reached it keeps its own outcome.
        self.cancelled = self.cancel_sent or (self.cancel_job == job.id and self.fenced_after is not None)
        if self.cancelled:
            outcome = runner.Outcome(outcome.exit_code, outcome.output, "cancelled")
        took = p.monotonic() - self.job_started
        # Never given up: the outcome is written once the database is back.
        ride_out(lambda: self._record(job, outcome, took))
        self.job = None
        p.titles()

    def _tick(self) -> bool | float:
        """Called while a job runs (never waits on the database): True means kill it
        now, a number of seconds terminate it with that grace (see runner.run)."""
        p = self.p
        if p.now_requested or p.declared_dead:
            return True
        if self.cancel_job == self.job.id and not self.cancel_sent:
            self.cancel_sent = True
            log.info("job %s: cancelled; SIGTERM, SIGKILL in %gs if it has not ended", self.job.id, p.cfg["kill-grace"])
            return float(p.cfg["kill-grace"])
        now = p.monotonic()
        if not self.busy_recorded and now - self.job_started >= RECORD_BUSY_AFTER:
            self.busy_recorded = True
            p.heartbeat.now()  # with the job and its process group
        silent = now - p.last_beat
        if silent > fence_after(p.cfg):
            log.error("worker %s: no heartbeat reached the database for %.1fs; killing job %s", self.worker_id, silent, self.job.id)
            self.fenced_after = silent
            return True
        return False

    def _record(self, job, outcome: runner.Outcome, took: float = 0.0) -> None:
        """Write the outcome and, unless stopping, claim the next job in the same write."""
        p = self.p
        if self.declared_dead:  # its job was recovered by the reaper; a sibling's job is given back
            return
        cancelled = self.cancelled
        if outcome.error is None and not outcome.stopped and not cancelled and not p.should_exit():
            # The hot path: one statement on PostgreSQL, one transaction on SQLite.
            owned, next_job = p.store.complete_and_claim(
                job.id, self.worker_id, output=outcome.output, output_size=outcome.output_size, queues=p.o.queues, now=p.clock()
            )
            state = JobState.COMPLETED.value if owned else None
        else:
            state, next_job = p.store.record(
                job.id,
                self.worker_id,
                stopped=outcome.stopped,
                error=outcome.error,
                exit_code=outcome.exit_code,
                output=outcome.output,
                cfg=p.cfg,
                claim_next=not p.should_exit(),
                queues=p.o.queues,
                now=p.clock(),
                cancelled=cancelled,
                output_size=outcome.output_size,
            )
        self.next_job = next_job
        p.lookout.claimed(next_job is not None)
        if state is None:
            log.warning("job %s was recovered by another process meanwhile; its outcome is discarded", job.id)
        elif state == JobState.COMPLETED.value:
            self.processed += 1
            log.info("job %s completed in %.3fs (exit 0)", job.id, took)
        elif state == JobState.PENDING.value:
            log.info("job %s given back unrun after %.3fs (stopping now)", job.id, took)
        elif state == JobState.CANCELLED.value:
            self.processed += 1
            log.info("job %s cancelled after %.3fs (exit %s)", job.id, took, outcome.exit_code)
        else:
            self.processed += 1
            self.failed += 1
            log.info("job %s failed in %.3fs: %s; now %s", job.id, took, outcome.error, state)

    # --- what the process's threads write for it -------------------------------------

    def beat_fields(self) -> dict:
        """What this slot's heartbeat writes into its row."""
        job = self.job
        counts = dict(processed=self.processed, failed=self.failed)
        if job is not None:
            return dict(state=WorkerState.BUSY.value, job_id=job.id, job_pgid=self.published.value or None, **counts)
        return dict(state=WorkerState.STOPPING.value if self.p.graceful else WorkerState.IDLE.value, job_id=None, job_pgid=None, **counts)

    def stream(self) -> bool:
        """The running job's output so far, to the database if it printed anything new
        since the last time (from the output thread, every STREAM_EVERY)."""
        p = self.p
        with self.stream_lock:
            job, tail = self.job, self.tail
            if job is None or tail is None or p.monotonic() - self.job_started < STREAM_EVERY:
                return True
            text, size = tail.snapshot()
            if size == self.streamed_size:
                return True
            try:
                p.store.stream_output(job.id, self.worker_id, output=text, output_size=size)
            except DatabaseError as err:  # the outcome carries the whole output anyway
                log.debug("job %s: output not streamed (will retry): %s", job.id, err)
                return False
            self.streamed_size = size
            return True

    def title(self) -> str:
        return f"busy job={self.job.id}" if self.job is not None else "idle"


def _preview(command: str, width: int = 80) -> str:
    """A command for a log line: one line, control characters escaped, cut to width."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in command)
    return text if len(text) <= width else text[: width - 3] + "..."
