"""One worker process: claim a job, run it, record the outcome; heartbeat throughout.

Shaped as initialize / loop_once / shutdown. Signal handlers only set flags:
SIGTERM = finish the current job, then exit; SIGUSR1 = stop now (kill the job and
give it back unrun). SIGINT is ignored (by a no-op handler, so jobs do not inherit
the ignoring): a Ctrl-C reaches the whole terminal process group, and the supervisor
alone decides what it means.
"""

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from queuectl.errors import DatabaseError
from queuectl.states import JobState, Role, WorkerState
from queuectl.store import Store
from queuectl.timeutil import utcnow
from queuectl.worker import identity, outage, runner
from queuectl.worker.heartbeat import Heartbeat
from queuectl.worker.outage import ride_out
from queuectl.worker.proctitle import set_title
from queuectl.worker.waiter import Waiter

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


@dataclass
class WorkerOptions:
    url: str
    worker_id: str
    supervisor_id: str
    supervisor_pid: int
    index: int
    count: int
    queues: tuple[str, ...]
    hostname: str
    burst: bool
    wake: Any = None  # the pool's local wake-up socket (store/wakeup.py), inherited; None: poll


# Signals a job must get with their default action even where the worker ignores them.
_IGNORED_BUT_NOT_BY_JOBS = (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2, signal.SIGALRM, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


def _ignore(_signum, _frame) -> None:
    pass


class Worker:
    def __init__(self, options: WorkerOptions, published, *, clock: Callable[[], datetime] = utcnow, monotonic: Callable[[], float] = time.monotonic):
        """clock: the wall time the worker's writes carry (claims, retries' run_at);
        monotonic: its timer (fencing, busy). Given by tests that step a worker with
        a fake clock (tests/test_worker_step.py); a running worker uses the real ones."""
        self.o = options
        self.clock = clock
        self.monotonic = monotonic
        # The job's process group and our last heartbeat, shared with the supervisor:
        # it kills the job if this process dies or stops beating (see jobgroup.py).
        self.published = published
        self.graceful = False
        self.now_requested = False
        self.declared_dead = False
        self.fenced_after: float | None = None  # set when our own job was killed for a lost heartbeat
        self.processed = 0
        self.failed = 0
        self.last_beat = 0.0
        self.job: Any = None  # the running job's row (CLAIM_COLUMNS), None between jobs
        self.job_started = 0.0
        self.busy_recorded = False
        self.next_job = None
        self.cancel_job: str | None = None  # the running job `cancel` asked us to stop (set by a heartbeat)
        self.cancel_sent = False
        self.cancelled = False  # the job that just ended was cancelled
        self.tail: runner.Tail | None = None  # the running job's output, streamed by _stream
        self.streamed_size = 0
        # Held while streaming output, and to end a job's stream: a late write of one
        # attempt's output never lands on the next attempt of the same job.
        self.stream_lock = threading.Lock()
        self.signal_fd: int | None = None  # see _take_signals

    # --- lifecycle -------------------------------------------------------------------

    def initialize(self) -> None:
        self._take_signals()
        self.open()

    def _take_signals(self) -> None:
        # Ignored, but by a handler that does nothing rather than SIG_IGN: exec resets
        # handled signals to their defaults while SIG_IGN would pass to every job (a
        # job's `trap ... INT` would do nothing). The same for whatever this process
        # was started ignoring (SIGHUP under nohup).
        for signum in _IGNORED_BUT_NOT_BY_JOBS:
            if signum == signal.SIGINT or signal.getsignal(signum) == signal.SIG_IGN:
                signal.signal(signum, _ignore)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_now)
        # A signal also writes a byte here, which ends an idle wait at once (Python
        # retries an interrupted epoll by itself). Both ends close on exec: no job sees them.
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self.signal_fd = read_end
        # The supervisor forked us with the stop signals blocked: a stop it sent
        # meanwhile is delivered now, to the handlers above. Nothing stays blocked,
        # since jobs inherit this mask.
        signal.pthread_sigmask(signal.SIG_SETMASK, ())

    def open(self, store: Store | None = None, heartbeat: bool = True) -> None:
        """Register, and get ready to claim: everything but the process's signals, so
        that a test can drive loop_once() in-process (with its own store, and the
        heartbeat called by hand)."""
        self._title("starting")
        # A fresh engine in this process: connections are never shared across fork.
        # One connection, shared with the heartbeat thread: a worker never holds two.
        self.store = store or Store.open(self.o.url, durable=False, one_connection=True, migrate=False)
        # Waited for, not failed: a worker that exited for a database that refuses
        # connections (all in use) would be replaced at once by its supervisor, again
        # and again, a fork and a log line each time.
        cfg = ride_out(lambda: self.store.register(
            id=self.o.worker_id,
            role=Role.WORKER,
            host=self.o.hostname,
            pid_started=identity.start_time(),
            supervisor_id=self.o.supervisor_id,
            supervisor_pid=self.o.supervisor_pid,
            queues=self.o.queues,
        ), give_up=self._still_starting)
        if cfg is None:
            raise DatabaseError("stopped before the database could be reached")
        self.cfg = cfg
        self._beat_done()  # registering was a heartbeat
        self.waiter = Waiter(self.store, self.o.queues, self.clock, wake=self.o.wake, signal_fd=self.signal_fd)
        self.base_env = dict(os.environ)  # decoded once, not for every job
        # At least four beats per fence period, whatever heartbeat-interval says.
        self.heartbeat = Heartbeat(self._heartbeat, lambda: min(self.cfg["heartbeat-interval"], fence_after(self.cfg) / 4))
        # Asleep while idle (an idle pool costs no wake-ups): woken when a job starts.
        self.streamer = Heartbeat(self._stream, lambda: STREAM_EVERY if self.job is not None else None, name="output")
        if heartbeat:
            self.heartbeat.start()
            self.streamer.start()
        self._title("idle")

    def run(self) -> int:
        self.initialize()
        try:
            while not self._should_exit():
                if not self.loop_once():
                    if self.o.burst and self._queue_drained():
                        break
                    self.waiter.wait(self.cfg["poll-interval"], self._interrupted)
            return 0
        finally:
            self.shutdown()

    def loop_once(self) -> bool:
        """Claim and run one job; False if there was nothing to claim."""
        if self._should_exit():
            return True
        # The previous job's outcome was recorded in the same transaction that
        # claimed this one: one write per job instead of two.
        job, self.next_job = self.next_job or ride_out(self._claim, give_up=self._should_exit), None
        if job is None:
            return False
        self._run(job)
        return True

    def shutdown(self) -> None:
        self.waiter.close()
        if hasattr(self, "heartbeat"):
            # A beat stuck on a locked database is abandoned (the thread is a daemon):
            # the row is ended below either way.
            self.heartbeat.stop(timeout=1.0)
            self.streamer.stop(timeout=1.0)
        if not self.declared_dead:
            try:
                # A job claimed as the last one ended, never started, is given back.
                unstarted = self.next_job.id if self.next_job is not None else None
                self.store.worker_stopped(self.o.worker_id, unstarted_job=unstarted, processed=self.processed, failed=self.failed)
            except DatabaseError as err:
                log.warning("worker %s could not deregister: %s", self.o.worker_id, err)
        self.store.close()
        # No job runs any more (runner.run never returns before its group is killed):
        # nothing for anyone to find. Our supervisor would remove it too, but it may be
        # gone (SIGKILLed), and then nobody would.
        self.published.remove()

    # --- one job ---------------------------------------------------------------------

    def _claim(self):
        if not self.waiter.work_may_exist():
            return None
        job = self.store.claim(self.o.worker_id, self.o.queues, self.clock())
        self.waiter.found(job is not None)
        return job

    def _run(self, job) -> None:
        self.job = job
        self.job_started = self.monotonic()
        self.busy_recorded = False
        self.fenced_after = None
        self.cancel_sent = False
        self.cancelled = False  # the job that just ended was cancelled
        self._title(f"busy job={job.id}")
        env = dict(self.base_env, QUEUECTL_JOB_ID=job.id, QUEUECTL_ATTEMPT=str(job.attempts + 1))
        timeout = job.timeout or None
        log.info("job %s started (attempt %d): %s", job.id, job.attempts + 1, _preview(job.command))
        self.streamed_size = 0
        self.tail = runner.Tail(int(self.cfg["output-limit"]))
        self.streamer.unpark()  # self.job is set: its interval is STREAM_EVERY now
        outcome = runner.run(
            job.command,
            cwd=job.cwd,
            env=env,
            timeout=timeout,
            output_limit=int(self.cfg["output-limit"]),
            on_start=self.published.publish,
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
        took = self.monotonic() - self.job_started
        # Never given up: the outcome is written once the database is back.
        ride_out(lambda: self._record(job, outcome, took))
        self.job = None
        self._title("idle")

    def _tick(self) -> bool | float:
        """Called while a job runs (never waits on the database): True means kill it
        now, a number of seconds terminate it with that grace (see runner.run)."""
        if self.now_requested or self.declared_dead:
            return True
        if self.cancel_job == self.job.id and not self.cancel_sent:
            self.cancel_sent = True
            log.info("job %s: cancelled; SIGTERM, SIGKILL in %gs if it has not ended", self.job.id, self.cfg["kill-grace"])
            return float(self.cfg["kill-grace"])
        now = self.monotonic()
        if not self.busy_recorded and now - self.job_started >= RECORD_BUSY_AFTER:
            self.busy_recorded = True
            self.heartbeat.now()  # with the job and its process group
        silent = now - self.last_beat
        if silent > fence_after(self.cfg):
            log.error("worker %s: no heartbeat reached the database for %.1fs; killing job %s", self.o.worker_id, silent, self.job.id)
            self.fenced_after = silent
            return True
        return False

    def _record(self, job, outcome: runner.Outcome, took: float = 0.0) -> None:
        """Write the outcome and, unless stopping, claim the next job in the same write."""
        if self.declared_dead:
            return
        cancelled = self.cancelled
        if outcome.error is None and not outcome.stopped and not cancelled and not self._should_exit():
            # The hot path: one statement on PostgreSQL, one transaction on SQLite.
            owned, next_job = self.store.complete_and_claim(
                job.id, self.o.worker_id, output=outcome.output, output_size=outcome.output_size, queues=self.o.queues, now=self.clock()
            )
            state = JobState.COMPLETED.value if owned else None
        else:
            state, next_job = self.store.record(
                job.id,
                self.o.worker_id,
                stopped=outcome.stopped,
                error=outcome.error,
                exit_code=outcome.exit_code,
                output=outcome.output,
                cfg=self.cfg,
                claim_next=not self._should_exit(),
                queues=self.o.queues,
                now=self.clock(),
                cancelled=cancelled,
                output_size=outcome.output_size,
            )
        self.next_job = next_job
        self.waiter.found(next_job is not None)
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

    # --- heartbeats, flags, waiting --------------------------------------------------

    def _heartbeat(self) -> bool:
        """One heartbeat (from the heartbeat thread); False if it did not reach the database."""
        job = self.job
        if job is not None:
            fields = dict(state=WorkerState.BUSY.value, job_id=job.id, job_pgid=self.published.value or None)
        else:
            fields = dict(state=WorkerState.STOPPING.value if self.graceful else WorkerState.IDLE.value, job_id=None, job_pgid=None)
        try:
            # Every process sees `config set` within a heartbeat.
            running = job.id if job is not None else None
            alive, self.cfg, cancel = self.store.worker_heartbeat(self.o.worker_id, running, processed=self.processed, failed=self.failed, **fields)
            if cancel:
                self.cancel_job = job.id
        except DatabaseError as err:
            outage.failed(log, "heartbeat failed", err)
            return False
        outage.recovered(log)
        if not alive:
            log.error("worker %s was declared dead by a reaper; stopping", self.o.worker_id)
            self.declared_dead = True
            return True
        self._beat_done()
        return True

    def _stream(self) -> bool:
        """The running job's output so far, to the database if it printed anything new
        since the last time (from the output thread, every STREAM_EVERY)."""
        with self.stream_lock:
            job, tail = self.job, self.tail
            if job is None or tail is None or self.monotonic() - self.job_started < STREAM_EVERY:
                return True
            text, size = tail.snapshot()
            if size == self.streamed_size:
                return True
            try:
                self.store.stream_output(job.id, self.o.worker_id, output=text, output_size=size)
            except DatabaseError as err:  # the outcome carries the whole output anyway
                log.debug("job %s: output not streamed (will retry): %s", job.id, err)
                return False
            self.streamed_size = size
            return True

    def _beat_done(self) -> None:
        self.last_beat = self.monotonic()
        self.published.beat = self.last_beat

    def _still_starting(self) -> bool:
        """While registering waits out the database: whether to give up (a stop came).
        Meanwhile this process is alive, not hung: its supervisor's fence is told so."""
        self.published.beat = self.monotonic()
        return self._should_exit()

    def _queue_drained(self) -> bool:
        """Burst mode: nothing pending now, running, or failed awaiting a retry."""
        return self.store.drained(self.o.queues, self.clock())

    def _should_exit(self) -> bool:
        if os.getppid() != self.o.supervisor_pid and not self.graceful:
            log.warning("supervisor %d is gone; worker %s stops after its current job", self.o.supervisor_pid, self.o.worker_id)
            self.graceful = True
        return self.graceful or self.now_requested or self.declared_dead

    def _interrupted(self) -> bool:
        return self.graceful or self.now_requested

    def _on_term(self, _signum, _frame) -> None:
        self.graceful = True

    def _on_now(self, _signum, _frame) -> None:
        self.now_requested = True

    def _title(self, what: str) -> None:
        set_title(f"queuectl worker {self.o.index}/{self.o.count} {what}")


def _preview(command: str, width: int = 80) -> str:
    """A command for a log line: one line, control characters escaped, cut to width."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in command)
    return text if len(text) <= width else text[: width - 3] + "..."


def main(options: WorkerOptions, published) -> None:
    """multiprocessing target: runs in the forked child."""
    code = 1
    try:
        code = Worker(options, published).run()
    except DatabaseError as err:  # at start-up: a line, not a traceback; the supervisor replaces us
        log.error("worker %s stopped: %s", options.worker_id, err)
    except Exception:
        log.exception("worker %s crashed", options.worker_id)
    finally:
        logging.shutdown()
        os._exit(code)
