"""The supervisor: forks worker processes, replaces dead ones, reaps dead workers
of other supervisors, and stops gracefully (first signal) or at once (second).

Shaped as initialize / loop_once / shutdown; signal handlers only set flags.
SIGINT: first graceful, second immediate. SIGTERM: graceful. SIGUSR1: immediate.
"""

import dataclasses
import errno
import json
import logging
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import wait as wait_for_exit
from multiprocessing.process import BaseProcess

from queuectl.errors import DatabaseError, DeclaredDead, QueuectlError
from queuectl.states import Role, StopMode, WorkerState
from queuectl.store import Store, retention
from queuectl.store.wakeup import drain_pipe
from queuectl.timeutil import utcnow
from queuectl.worker import identity, outage
from queuectl.worker import worker as worker_mod
from queuectl.worker.jobgroup import JobGroup, kill_orphaned
from queuectl.worker.outage import ride_out
from queuectl.worker.proctitle import set_title
from queuectl.worker.relay import Relay
from queuectl.worker.scheduler import Scheduler

log = logging.getLogger("queuectl.supervisor")
# How often the supervisor's fence looks at its children's heartbeats. (A worker that
# exits wakes the main loop at once, through its sentinel; so does a signal, through
# the wake-up pipe: the loop itself sleeps until its next heartbeat or schedule.)
CHILD_CHECK = 0.25
GRACEFUL, NOW = StopMode.GRACEFUL, StopMode.NOW
# Schedules are looked at when their first tick comes, and at least every second for
# those added or changed meanwhile (a tick is enqueued at most that late, plus the
# time to fire it); never more often than every quarter second.
SCHEDULE_CHECK = (0.25, 1.0)
# Blocked across each fork; the worker unblocks them once its own handlers are set
# (see worker.Worker.initialize).
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1}


@dataclass
class Child:
    """A worker process and its job slots (worker.py)."""

    index: int
    slots: range  # the numbers of its slots in the pool
    worker_ids: list[str] = field(default_factory=list)  # one per slot, new for each fork
    process: BaseProcess | None = None  # a fork context's Process
    groups: list[JobGroup] = field(default_factory=list)  # each slot's job process group and the process's last beat, shared
    done: bool = False  # exited cleanly (stop or burst): not to be replaced
    hung: str | None = None  # why we killed it, if it stopped heartbeating
    reaped: bool = False  # exited and waited for: its pid may be anyone's now

    @property
    def beat(self) -> float:
        return max(group.beat for group in self.groups)

    @property
    def running_job(self) -> bool:
        return any(group.value for group in self.groups)

    def kill_jobs(self) -> None:
        for group in self.groups:
            group.kill()


@dataclass(frozen=True)
class PoolOptions:
    """What `worker start` runs. One object for the foreground and for --detach,
    which hands it to the background process whole (see detach)."""

    concurrency: int = 1  # job slots
    processes: int | None = None  # worker processes sharing them; None: default_processes
    queues: tuple[str, ...] = ()
    burst: bool = False
    hostname: str | None = None  # None: this machine's hostname


# At most this many worker processes by default, however many CPUs: each costs ~13 MB
# (design section 19), and four already start some 4,000 jobs a second between them.
DEFAULT_MAX_PROCESSES = 4


def default_processes(concurrency: int) -> int:
    """One worker process per CPU this process may use, at most one per slot and at
    most DEFAULT_MAX_PROCESSES: a process runs its slots' Python on one core at a time
    (the GIL), so a busy pool of trivial jobs uses a core per process; the jobs
    themselves are processes of their own and use every core whatever this says."""
    return max(1, min(concurrency, len(os.sched_getaffinity(0)), DEFAULT_MAX_PROCESSES))


def split(concurrency: int, processes: int) -> list[range]:
    """The slot numbers (1..concurrency) of each process, as even as they go."""
    processes = min(processes, concurrency)
    sizes = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    starts = [1 + sum(sizes[:i]) for i in range(processes)]
    return [range(start, start + size) for start, size in zip(starts, sizes, strict=True)]


@dataclass
class Supervisor:
    url: str
    options: PoolOptions
    children: list[Child] = field(default_factory=list)

    def __post_init__(self):
        self.concurrency = self.options.concurrency
        self.processes = min(self.options.processes or default_processes(self.concurrency), self.concurrency)
        self.queues = self.options.queues
        self.burst = self.options.burst
        self.hostname = self.options.hostname or identity.default_hostname()
        self.id = identity.new_id("s")
        self.stop_mode: StopMode | None = None
        self.forwarded: StopMode | None = None  # the stop mode the children were last told
        self.interrupts = 0
        self.ctx = multiprocessing.get_context("fork")
        self.next_beat = 0.0
        self.next_prune = 0.0  # retention's next batch (see _prune)
        self.next_schedules = 0.0
        self.declared_dead = False
        # The fence runs on its own thread, so that it never waits on the database with
        # the main loop. This lock orders its kills with forks and reaping: it never
        # signals a pid that was reaped (and may be reused) or a slot being replaced.
        self.slots_lock = threading.Lock()
        self.fence_stop = threading.Event()
        self.fence = threading.Thread(target=self._fence_loop, name="fence", daemon=True)

    # --- lifecycle -------------------------------------------------------------------

    def initialize(self) -> None:
        signal.signal(signal.SIGINT, self._on_interrupt)
        signal.signal(signal.SIGTERM, self._on_terminate)
        signal.signal(signal.SIGUSR1, self._on_now_signal)
        # A signal writes a byte here, which ends the loop's wait at once (the wait
        # itself is retried by Python after a handler). Closed on exec: no job has it.
        self.signal_fd, write_end = os.pipe()
        os.set_blocking(self.signal_fd, False)
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self.store = Store.open(self.url, durable=False)
        set_title(f"queuectl supervisor ({self._size()}, db {self.store.display_url})")
        self.cfg = self.store.register(id=self.id, role=Role.SUPERVISOR, host=self.hostname, pid_started=identity.start_time(), queues=self.queues)
        # Whatever a previous crashed run on this host left behind is recovered first.
        self.reap()
        self.scheduler = Scheduler(self.store)
        # Running counters of limited queues drift only if something went wrong (a
        # job claimed just as its queue got its first control); set them right.
        self.store.recount_queues()
        # Bound before the first fork: every worker inherits it (store/wakeup.py).
        self.wake = self.store.wake_socket(self.id)
        # PostgreSQL: the pool's one LISTEN connection, passed on through that socket.
        listener = self.store.listener() if self.wake is not None else None
        self.relay = Relay(listener, self.wake) if listener is not None else None
        if self.relay is None and self.wake is not None and self.store.wake_is_relayed:
            # Nothing to relay (QUEUECTL_LISTEN=0, a pooler without a listen URL):
            # without the socket the workers poll every poll-interval.
            self.wake.close()
            self.wake = None
        self.children = [Child(index=i + 1, slots=slots) for i, slots in enumerate(split(self.concurrency, self.processes))]
        for child in self.children:
            self._spawn(child)
        self.fence.start()
        if self.relay is not None:
            self.relay.start()
        log.info("supervisor %s started %s on %s (db %s)", self.id, self._size(), self.hostname, self.store.display_url)

    def _size(self) -> str:
        if self.processes == self.concurrency:
            return f"{self.concurrency} worker(s)"
        return f"{self.concurrency} slots in {self.processes} worker(s)"

    def run(self) -> int:
        try:
            # Inside: a start that fails half-way (no database, out of descriptors)
            # still ends the rows and children it made.
            self.initialize()
            while not all(child.done for child in self.children):
                self.loop_once()
            return 1 if self.declared_dead else 0
        finally:
            self.shutdown()

    def loop_once(self) -> None:
        sentinels = [c.process.sentinel for c in self.children if c.process is not None and not c.done]
        if sentinels:
            # Not past the next heartbeat: that is also when dead workers are reaped.
            # Not past the next look at the schedules either. A worker's exit or a
            # signal ends it at once.
            ready = wait_for_exit([*sentinels, self.signal_fd], timeout=max(0.0, min(self.next_beat, self.next_schedules) - time.monotonic()))
            if self.signal_fd in ready:
                drain_pipe(self.signal_fd)
        for child in self.children:
            if self._reap_child(child):
                self._child_exited(child)
        if time.monotonic() >= self.next_beat:
            self._heartbeat()
            self.reap()
        if time.monotonic() >= self.next_prune and not self.stop_mode:
            self._prune()
        if not self.stop_mode and time.monotonic() >= self.next_schedules:
            low, high = SCHEDULE_CHECK
            self.next_schedules = time.monotonic() + self.scheduler.run_due(longest=high, shortest=low)
        elif self.stop_mode:
            self.next_schedules = time.monotonic() + SCHEDULE_CHECK[1]
        self._forward_stop()

    def shutdown(self) -> None:
        self.stop_mode = self.stop_mode or NOW  # so that no exit below forks a replacement
        self.fence_stop.set()
        if self.fence.is_alive():
            self.fence.join()
        for child in self.children:
            if child.process is not None and not child.reaped and child.process.is_alive():
                child.process.kill()
                child.process.join()
                child.reaped = True
                self._child_exited(child)
        relay = getattr(self, "relay", None)  # None too if initialize() failed before it
        if relay is not None:
            relay.stop()
        if getattr(self, "wake", None) is not None:
            self.wake.close()
        if not hasattr(self, "store"):  # the database never opened: nothing registered
            return
        try:
            if hasattr(self, "cfg"):  # registered
                self.store.end(self.id, WorkerState.STOPPED, cfg=self.cfg)
        except DatabaseError as err:
            log.warning("could not deregister supervisor %s: %s", self.id, err)
        self.store.close()
        log.info("supervisor %s stopped", self.id)

    # --- children --------------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        with self.slots_lock:
            pid = self._fork(child)
        if self.stop_mode:  # a stop arrived while we were spawning
            os.kill(pid, signal.SIGUSR1 if self.stop_mode == NOW else signal.SIGTERM)

    def _fork(self, child: Child) -> int:
        """Start the child's worker process, with a new worker id for each slot; its pid."""
        child.worker_ids = [identity.new_id("w") for _ in child.slots]
        child.groups = [JobGroup(worker_id) for worker_id in child.worker_ids]
        for group in child.groups:
            group.beat = time.monotonic()  # its start-up counts as a beat
        child.hung = None
        child.reaped = False
        options = worker_mod.WorkerOptions(
            url=self.url,
            worker_ids=tuple(child.worker_ids),
            supervisor_id=self.id,
            supervisor_pid=os.getpid(),
            index=child.index,
            count=len(self.children),
            queues=self.queues,
            hostname=self.hostname,
            burst=self.burst,
            wake=self.wake,
            first_slot=child.slots[0],
        )
        # No database descriptor may cross the fork: SQLite forbids using a connection
        # in a child, and a child closing an inherited one would drop the POSIX locks
        # of its own connection on that file. Closed here, reopened on next use; the
        # lock file's descriptor is closed in the child (dialect._after_fork_in_child).
        self.store.drop_connections()
        child.process = process = self.ctx.Process(target=worker_mod.main, args=(options, child.groups), name=f"worker-{child.index}", daemon=False)
        # Until the child installs its own handlers it runs these (inherited) ones on
        # its own copy of this object, so a stop sent to it in that window would be
        # lost and we would wait for it forever. With the signals blocked across the
        # fork they stay pending in the child until its handlers are in place.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        assert process.pid is not None  # started
        return process.pid

    def _reap_child(self, child: Child) -> bool:
        """Whether this child's worker process just exited (and is now waited for)."""
        if child.process is None or child.done or child.reaped:
            return False
        with self.slots_lock:
            child.reaped = not child.process.is_alive()  # waitpid: from here its pid may be reused
        return child.reaped

    def _child_exited(self, child: Child) -> None:
        process = child.process
        assert process is not None  # the child was forked
        process.join()
        clean = process.exitcode == 0
        # No job process outlives its worker: killed at once, before any database call
        # (one that waits out an outage would let another host run the job beside it),
        # if the group is still the job's (checked locally, see jobgroup.py).
        child.kill_jobs()
        state = WorkerState.STOPPED if clean else WorkerState.DEAD
        for worker_id, group in zip(child.worker_ids, child.groups, strict=True):
            recovered = ride_out(lambda worker_id=worker_id: self.store.end(worker_id, state, cfg=self.cfg, error=child.hung)) or []
            group.remove()
            for job_id, job_state in recovered:
                log.warning("job %s of lost worker %s -> %s", job_id, worker_id, job_state)
        if clean and (self.stop_mode or self.burst):
            child.done = True
            return
        if self.stop_mode:
            child.done = True
            return
        log.warning("worker process %d (pid %s, %s) exited with %s; starting a replacement",
                    child.index, process.pid, ", ".join(child.worker_ids), process.exitcode)
        self._spawn(child)

    def _fence_loop(self) -> None:
        while not self.fence_stop.wait(CHILD_CHECK):
            with self.slots_lock:
                self._fence_hung()

    def _fence_hung(self) -> None:
        """Kill a child that has stopped heartbeating (SIGSTOP, a stuck thread), and
        its job first. With a job, at fence_after(heartbeat-timeout): before any other
        host may declare it dead and run the job again; idle, at heartbeat-timeout.
        Its exit is then handled like any death: attempt charged, worker replaced.
        Runs on the fence thread, holding slots_lock."""
        now = time.monotonic()
        for child in self.children:
            if child.process is None or not child.groups or child.done or child.hung or child.reaped:
                continue
            silent = now - child.beat
            busy = child.running_job
            if silent <= (worker_mod.fence_after(self.cfg) if busy else self.cfg["heartbeat-timeout"]):
                continue
            child.hung = f"worker hung: no heartbeat for {silent:.1f}s (killed by its supervisor)"
            log.error("worker process %d (pid %s) sent no heartbeat for %.1fs; killing it%s",
                      child.index, child.process.pid, silent, " and its jobs" if busy else "")
            child.kill_jobs()
            child.process.kill()

    # --- liveness and recovery -------------------------------------------------------

    def _heartbeat(self) -> None:
        try:
            request, self.cfg = self.store.supervisor_heartbeat(self.id, WorkerState.STOPPING if self.stop_mode else WorkerState.IDLE)
        except DeclaredDead as err:
            # Frozen or cut off for longer than heartbeat-timeout: our jobs were
            # recovered and may run elsewhere, and `worker stop` no longer sees us.
            if not self.declared_dead:
                log.error("%s; its jobs may run elsewhere now: stopping at once", err)
            self.declared_dead = True
            self.stop_mode = NOW
            self.next_beat = time.monotonic() + self.cfg["heartbeat-interval"]
            return
        except DatabaseError as err:
            outage.failed(log, "supervisor heartbeat failed", err)
            self.next_beat = time.monotonic() + 1.0
            return
        outage.recovered(log)
        self.next_beat = time.monotonic() + self.cfg["heartbeat-interval"]
        if request == NOW:
            self.stop_mode = NOW
        elif request == GRACEFUL and not self.stop_mode:
            self.stop_mode = GRACEFUL

    def reap(self) -> None:
        """Declare dead the workers whose process is gone from this host, or whose
        heartbeat is older than heartbeat-timeout on any host, and recover their jobs."""
        own = {worker_id for child in self.children for worker_id in child.worker_ids} | {self.id}
        now = utcnow()
        stale_before = now - timedelta(seconds=self.cfg["heartbeat-timeout"])
        try:
            suspects = self.store.suspects(self.hostname, stale_before)
            for row in suspects:
                if row.id in own:
                    continue
                local = row.host == self.hostname
                if local and identity.local_process(row.pid, row.pid_started):
                    # Alive on this host, however old its heartbeat: a stalled worker is
                    # fenced by its own supervisor, and a stalled supervisor declared
                    # dead would run on unseen by `worker stop`.
                    continue
                if not local and row.last_heartbeat >= stale_before:
                    continue
                self._declare_dead(row, local, stale_before)
        except DatabaseError as err:
            outage.failed(log, "reaping failed", err)

    def _declare_dead(self, row, local: bool, stale_before) -> None:
        if local and row.role == Role.WORKER:  # only the owning host kills by pid
            kill_orphaned(row.id, self.store.held(row.id))
        # A remote row is dead by its age alone: rechecked in the write that ends it.
        recovered = self.store.declare_dead(row.id, silent_since=None if local else stale_before, cfg=self.cfg)
        if recovered is None:
            return  # another reaper got there first, or it beat meanwhile
        log.warning("declared %s %s (host %s, pid %s) dead; recovered %d job(s)", row.role, row.id, row.host, row.pid, len(recovered))

    # --- retention -------------------------------------------------------------------

    def _prune(self) -> None:
        """Delete one batch of finished jobs past their retention (store/retention.py).
        A full batch means more are due: the next one comes at the next turn of the
        loop (after its wait on the children, so workers still get the database);
        otherwise after prune-interval. Another supervisor pruning: after prune-interval."""
        interval = self.cfg["prune-interval"]
        try:
            pruned = self.store.prune_batch(self.cfg)
        except DatabaseError as err:
            outage.failed(log, "pruning failed", err)
            self.next_prune = time.monotonic() + interval
            return
        done = sum(pruned.values()) if pruned else 0
        if done:
            log.info("pruned %s", ", ".join(f"{count} {kind}" for kind, count in pruned.items() if count))  # type: ignore[union-attr]
        self.next_prune = time.monotonic() + (0 if done >= retention.BATCH else interval)

    # --- stopping --------------------------------------------------------------------

    def _on_interrupt(self, _signum, _frame) -> None:
        """Ctrl-C: the first stops gracefully, a second one at once."""
        self.interrupts += 1
        self.stop_mode = NOW if self.interrupts >= 2 else (self.stop_mode or GRACEFUL)

    def _on_terminate(self, _signum, _frame) -> None:
        """SIGTERM (`worker stop`, kill, a service manager) is always graceful: a
        repeated `worker stop` must not kill the jobs it promised to let finish."""
        self.stop_mode = self.stop_mode or GRACEFUL

    def _on_now_signal(self, _signum, _frame) -> None:
        self.stop_mode = NOW

    def _forward_stop(self) -> None:
        """Tell the children once per stop mode; they finish (or abandon) their job and exit."""
        if not self.stop_mode or self.forwarded == self.stop_mode:
            return
        self.forwarded = self.stop_mode
        log.info("stopping (%s)", "killing running jobs" if self.stop_mode == NOW else "after running jobs finish")
        with self.slots_lock:  # an exited worker not yet reaped keeps its pid: harmless
            for child in self.children:
                if child.process is not None and not child.reaped:
                    # Started under slots_lock, so it has a pid (typed Optional until start()).
                    os.kill(child.process.pid, signal.SIGUSR1 if self.stop_mode == NOW else signal.SIGTERM)  # type: ignore[arg-type]


def run(url: str, options: PoolOptions) -> int:
    return Supervisor(url, options).run()


# How detach hands its PoolOptions to the background process (JSON).
OPTIONS_ENV = "QUEUECTL_POOL_OPTIONS"


def detach(url: str, options: PoolOptions, log: str | None = None) -> tuple[int, str]:
    """Start the pool in the background (queuectl.cli.background), logging to
    `log`, else next to the database (store.worker_log_path); (its pid, the log's path).
    The log is this process's business: the pool only inherits it as stdout/stderr."""
    from queuectl.store import worker_log_path

    if log is not None:
        log_path = os.path.abspath(os.path.expanduser(log))  # its directory is not created
    else:
        log_path = worker_log_path(url)
        os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
    command = [sys.executable, "-m", "queuectl.cli.background"]
    # The URL travels in the environment, not argv: a password must not show in `ps`.
    env = dict(os.environ, QUEUECTL_DB=url, **{OPTIONS_ENV: json.dumps(dataclasses.asdict(options))})
    fd = _open_log(log_path)
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=env, start_new_session=True, close_fds=True)
    finally:
        os.close(fd)
    return proc.pid, log_path


def options_from_env() -> PoolOptions:
    """The PoolOptions that detach handed over."""
    fields = json.loads(os.environ.pop(OPTIONS_ENV))
    return PoolOptions(**dict(fields, queues=tuple(fields["queues"])))


def _open_log(path: str) -> int:
    """Open (or create) the detached log for appending, private to this user. In a
    shared directory another user could have planted a symlink to a file of ours, or
    a file of theirs we would write into: both refused."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise QueuectlError(f"{path} is a symbolic link; remove it (the worker log is opened only as a regular file)") from None
        raise QueuectlError(f"cannot open the worker log {path}: {err.strerror or err}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(fd)
        raise QueuectlError(f"{path} is not a regular file owned by this user; remove it")
    return fd
