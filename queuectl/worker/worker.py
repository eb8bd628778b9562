"""One worker process: one or more job slots (slot.py), each on a thread of its own,
sharing the process's signals, its one database connection, one heartbeat thread
that beats for every slot in one transaction, one output thread, and one look-out
for work (lookout.py). docs/design.md section 19.

Shaped as initialize / loop_once / shutdown. Signal handlers only set flags:
SIGTERM = finish the current jobs, then exit; SIGUSR1 = stop now (kill the jobs and
give them back unrun). SIGINT is ignored (by a no-op handler, so jobs do not inherit
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
from queuectl.states import Role
from queuectl.store import Store
from queuectl.timeutil import utcnow
from queuectl.worker import identity, outage
from queuectl.worker.heartbeat import Heartbeat
from queuectl.worker.lookout import Lookout
from queuectl.worker.outage import ride_out
from queuectl.worker.proctitle import set_title
from queuectl.worker.slot import STREAM_EVERY, Slot, fence_after
from queuectl.worker.waiter import Waiter

__all__ = ["STREAM_EVERY", "Worker", "WorkerOptions", "fence_after", "main"]

log = logging.getLogger("queuectl.worker")


@dataclass
class WorkerOptions:
    url: str
    worker_ids: tuple[str, ...]  # one per slot: each is a row of the workers table
    supervisor_id: str
    supervisor_pid: int
    index: int  # this process's number in its pool (1..count)
    count: int  # worker processes in the pool
    queues: tuple[str, ...]
    hostname: str
    burst: bool
    wake: Any = None  # the pool's local wake-up socket (store/wakeup.py), inherited; None: poll
    first_slot: int = 1  # the number of its first slot in the pool (`ps` shows slot numbers)


# At most this long between a stop signal taken by another thread than the main one
# and its handler (see run): the main thread's wake-ups while it waits for the slots.
SIGNAL_CHECK = 0.5

# Signals a job must get with their default action even where the worker ignores them.
_IGNORED_BUT_NOT_BY_JOBS = (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2, signal.SIGALRM, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


def _ignore(_signum, _frame) -> None:
    pass


class Worker:
    def __init__(self, options: WorkerOptions, published: list, *, clock: Callable[[], datetime] = utcnow, monotonic: Callable[[], float] = time.monotonic):
        """published: each slot's JobGroup (its running job's process group and the
        process's last heartbeat), shared with the supervisor, which kills the job if
        this process dies or stops beating (see jobgroup.py). clock: the wall time the
        writes carry (claims, retries' run_at); monotonic: the timer (fencing, busy).
        Given by tests that step a worker with a fake clock (tests/test_worker_step.py);
        a running worker uses the real ones."""
        self.o = options
        self.clock = clock
        self.monotonic = monotonic
        pairs = zip(options.worker_ids, published, strict=True)
        self.slots = [Slot(self, options.first_slot + i, worker_id, group) for i, (worker_id, group) in enumerate(pairs)]
        self.graceful = False
        self.now_requested = False
        self.declared_dead = False  # a reaper ended one of our slots' rows: every slot stops now
        self.crashed = False  # a slot's thread died of a bug: stop, exit 1, the supervisor recovers
        self.last_beat = 0.0
        self.signal_fd: int | None = None  # see _take_signals
        self._signal_write: int | None = None
        self.title_lock = threading.Lock()

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
        self._signal_write = write_end
        # The supervisor forked us with the stop signals blocked: a stop it sent
        # meanwhile is delivered now, to the handlers above. Nothing stays blocked,
        # since jobs (and the slots' threads, started after this) inherit this mask.
        signal.pthread_sigmask(signal.SIG_SETMASK, ())

    def open(self, store: Store | None = None, heartbeat: bool = True) -> None:
        """Register, and get ready to claim: everything but the process's signals and
        the slots' threads, so that a test can drive loop_once() in-process (with its
        own store, and the heartbeat called by hand)."""
        set_title(f"queuectl worker {self.o.index}/{self.o.count} starting")
        # A fresh engine in this process: connections are never shared across fork.
        # One connection, shared by the slots and the threads: a worker process never
        # holds two (a slot waits for the others' transactions, which are short).
        self.store = store or Store.open(self.o.url, durable=False, one_connection=True, migrate=False)
        # Waited for, not failed: a worker that exited for a database that refuses
        # connections (all in use) would be replaced at once by its supervisor, again
        # and again, a fork and a log line each time.
        for slot in self.slots:
            cfg = ride_out(lambda slot=slot: self.store.register(
                id=slot.worker_id,
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
        self.lookout = Lookout(self)
        self.base_env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}  # encoded once, not for every job (runner.job_environment)
        # At least four beats per fence period, whatever heartbeat-interval says.
        self.heartbeat = Heartbeat(self._heartbeat, lambda: min(self.cfg["heartbeat-interval"], fence_after(self.cfg) / 4))
        # Asleep while no slot runs a job (an idle pool costs no wake-ups): woken when one starts.
        self.streamer = Heartbeat(self._stream, self._output_interval, name="output")
        if heartbeat:
            self.heartbeat.start()
            self.streamer.start()
        self.titles()

    def run(self) -> int:
        self.initialize()
        try:
            threads = [threading.Thread(target=self._slot_loop, args=(slot,), name=f"slot-{slot.number}", daemon=True) for slot in self.slots]
            for thread in threads:
                thread.start()
            # The main thread only waits: signal handlers run here, and the look-out's
            # wait ends on the signal's byte. Never in one untimed join: the kernel
            # gives a signal sent to this process to any thread not blocking it, and
            # only one taken by the main thread interrupts the join. Taken by a slot's
            # thread, the handler waited for the main thread's next wake-up, the end
            # of a slot (tests/test_worker_stop.py, found by the chaos soak).
            for thread in threads:
                while thread.is_alive():
                    thread.join(SIGNAL_CHECK)
            return 1 if self.crashed else 0
        finally:
            self.shutdown()

    def _slot_loop(self, slot: Slot) -> None:
        try:
            while not self.should_exit():
                job, slot.next_job = slot.next_job or self.lookout.next_job(slot), None
                if job is None:
                    if self.lookout.closed:
                        break
                    continue
                slot.run(job)
        except Exception:
            log.exception("worker %s (slot %d) crashed; stopping the process", slot.worker_id, slot.number)
            self.crashed = True
            self.now_requested = True
        finally:
            if self.should_exit():  # the idle slots waiting for the watch leave too
                self.lookout.close()

    def loop_once(self) -> bool:
        """Claim and run one job in the first slot; False if there was nothing to claim
        (for tests that step a one-slot worker)."""
        if self.should_exit():
            return True
        slot = self.slots[0]
        # The previous job's outcome was recorded in the same transaction that
        # claimed this one: one write per job instead of two.
        job, slot.next_job = slot.next_job or ride_out(slot.claim, give_up=self.should_exit), None
        if job is None:
            return False
        slot.run(job)
        return True

    def shutdown(self) -> None:
        self.waiter.close()
        if hasattr(self, "heartbeat"):
            # A beat stuck on a locked database is abandoned (the thread is a daemon):
            # the rows are ended below either way.
            self.heartbeat.stop(timeout=1.0)
            self.streamer.stop(timeout=1.0)
        for slot in self.slots:
            if slot.declared_dead:
                continue
            try:
                # A job claimed as the last one ended, never started, is given back.
                unstarted = slot.next_job.id if slot.next_job is not None else None
                self.store.worker_stopped(slot.worker_id, unstarted_job=unstarted, processed=slot.processed, failed=slot.failed)
            except DatabaseError as err:
                log.warning("worker %s could not deregister: %s", slot.worker_id, err)
        self.store.close()
        # No job runs any more (runner.run never returns before its group is killed):
        # nothing for anyone to find. Our supervisor would remove them too, but it may
        # be gone (SIGKILLed), and then nobody would.
        for slot in self.slots:
            slot.published.remove()

    # --- heartbeats, flags, waiting --------------------------------------------------

    def _heartbeat(self) -> bool:
        """One heartbeat for every slot, in one transaction (from the heartbeat thread);
        False if it did not reach the database."""
        slots = [slot for slot in self.slots if not slot.declared_dead]
        fields = {slot.worker_id: slot.beat_fields() for slot in slots}
        changed = [(slot.worker_id, fields[slot.worker_id]) for slot in slots if slot.beaten != fields[slot.worker_id]]
        unchanged = [slot.worker_id for slot in slots if slot.beaten == fields[slot.worker_id]]
        # From the fields taken above: a slot's thread may end its job meanwhile.
        running = [(fields[slot.worker_id]["job_id"], slot.worker_id) for slot in slots if fields[slot.worker_id]["job_id"] is not None]
        try:
            # Every process sees `config set` within a heartbeat.
            alive, self.cfg, cancelled = self.store.slots_heartbeat(changed, unchanged, running)
        except DatabaseError as err:
            outage.failed(log, "heartbeat failed", err)
            return False
        outage.recovered(log)
        for slot in slots:
            if slot.worker_id not in alive:
                log.error("worker %s was declared dead by a reaper; stopping", slot.worker_id)
                slot.declared_dead = True
                continue
            slot.beaten = fields[slot.worker_id]
            job = slot.job
            if job is not None and job.id in cancelled:
                slot.cancel_job = job.id
        # Every dead slot is marked before any slot stops for it: a slot whose row is
        # alive gives its job back, a dead one leaves its job to the reaper.
        if self.declared_dead or any(slot.declared_dead for slot in slots):
            self.declared_dead = True
            self.lookout.close()
            return True
        self._beat_done()
        return True

    def _output_interval(self) -> float | None:
        """The output thread's pace: STREAM_EVERY while a slot runs a job or started one
        within the last STREAM_EVERY, else None (it parks until the next job starts).
        Parking only after a quiet STREAM_EVERY spares a drain of short jobs a wake-up
        of that thread (a thread switch) at nearly every job start."""
        now = self.monotonic()
        if any(slot.job is not None or now - slot.job_started < STREAM_EVERY for slot in self.slots):
            return STREAM_EVERY
        return None

    def _stream(self) -> bool:
        """Each running job's new output, to the database (from the output thread)."""
        results = [slot.stream() for slot in self.slots]
        return all(results)

    def _beat_done(self) -> None:
        self.last_beat = self.monotonic()
        for slot in self.slots:
            slot.published.beat = self.last_beat

    def _still_starting(self) -> bool:
        """While registering waits out the database: whether to give up (a stop came).
        Meanwhile this process is alive, not hung: its supervisor's fence is told so."""
        now = self.monotonic()
        for slot in self.slots:
            slot.published.beat = now
        return self.should_exit()

    def drained(self) -> bool:
        """Burst mode: nothing pending now, running, or failed awaiting a retry."""
        return self.store.drained(self.o.queues, self.clock())

    def should_exit(self) -> bool:
        if os.getppid() != self.o.supervisor_pid and not self.graceful:
            log.warning("supervisor %d is gone; worker %s stops after its current jobs", self.o.supervisor_pid, self.slots[0].worker_id)
            self.graceful = True
        return self.graceful or self.now_requested or self.declared_dead

    def interrupted(self) -> bool:
        return self.graceful or self.now_requested or self.declared_dead

    def _on_term(self, _signum, _frame) -> None:
        self.graceful = True
        self._rewake()

    def _on_now(self, _signum, _frame) -> None:
        self.now_requested = True
        self._rewake()

    def _rewake(self) -> None:
        """One more byte on the signal pipe, now that the flag is set: the signal's own
        byte may have ended the look-out's wait before this handler ran (it runs on
        the main thread, up to SIGNAL_CHECK late when another thread took the signal),
        and the look-out, seeing no flag yet, would have waited on."""
        if self._signal_write is None:  # a stepped test: no signals taken
            return
        try:
            os.write(self._signal_write, b"\0")
        except OSError:  # full: a byte is there already
            pass

    def titles(self) -> None:
        """The process title (`ps`): what each slot is doing."""
        with self.title_lock:
            if len(self.slots) == 1:
                what = self.slots[0].title()
            else:
                what = ", ".join(f"slot {slot.number} {slot.title()}" for slot in self.slots)
            set_title(f"queuectl worker {self.o.index}/{self.o.count} {what}")


def main(options: WorkerOptions, published: list) -> None:
    """multiprocessing target: runs in the forked child."""
    code = 1
    try:
        code = Worker(options, published).run()
    except DatabaseError as err:  # at start-up: a line, not a traceback; the supervisor replaces us
        log.error("worker %s stopped: %s", options.worker_ids[0], err)
    except Exception:
        log.exception("worker %s crashed", options.worker_ids[0])
    finally:
        logging.shutdown()
        os._exit(code)
