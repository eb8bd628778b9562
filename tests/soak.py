"""Chaos soak: many jobs on 2 supervisors, each 4 job slots in 2 worker processes,
while a driver SIGKILLs worker processes (a process runs 2 jobs at a time, so one kill
or stop hits several busy slots at once) and supervisors and restarts them, SIGSTOPs
them for a while and SIGCONTs them, holds the SQLite write lock from an outside
connection, and runs enqueues, `dlq retry`, concurrent `dlq retry --all`/`dlq purge
--all` races, `config set` and `worker stop`.
Then it checks, from the database and from a side log every job appends to:

- every job is `completed` or `dead` (none lost, none stuck); a job that left the
  database was purged, and every purge was counted once (see `check`);
- no job ever ran two attempts at the same time (each attempt holds an flock on a
  per-job file; an attempt that finds it held logs OVERLAP);
- every completed job has a successful attempt in the log, and every dead job used
  all its attempts and says why;
- `status` never showed a negative count, and at the end its counts are the real ones;
- every supervisor exits after a `worker stop`, stalled or not; `dlq` commands never fail;
- no job process survives; no "database is locked" anywhere;
- dependency chains (`enqueue --after`): no job started before the job it waits for
  completed (its first start comes after that job's last successful end in the side
  log), and a chain job is cancelled only when the job it waits for is dead or
  cancelled, naming it, without ever starting;
- a schedule fires each tick exactly once: the driver moves its next run into the
  past again and again (a yearly cron, so no tick comes by itself), and the
  schedule's jobs number exactly the ticks it was given, killed supervisors or not.

The driver never blocks on chaos it caused: SIGCONTs and the lock's release fall due
in `tick`, which also runs while the driver waits for a command or a supervisor.

Standalone:  python tests/soak.py [--jobs 2000] [--chaos-seconds 300] [--db URL] [--seed N] [--pgbouncer]
In the test suite: tests/test_soak.py (short in CI, long with -m slow).

With --pgbouncer (--db a PostgreSQL URL) the soak starts a PgBouncer in transaction
mode in front of the database (tests/pgbouncer.py, 2 server connections) and gives its
URL to the supervisors and to every command; the supervisors LISTEN on the database
directly (--listen-db), and the driver's own reads and checks go direct too.
"""

import argparse
import contextlib
import json
import os
import random
import re
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SUPERVISORS = 2
# The schedule the driver gives ticks to (see give_tick).
SCHEDULE = "soak-ticks"
# Each supervisor runs SLOTS_EACH job slots over PROCESSES_EACH worker processes
# (docs/design.md section 19): more slots than processes, so killing or stopping one
# process hits every busy slot in it at once, whatever the number of CPUs.
SLOTS_EACH = 4
PROCESSES_EACH = 2
# The soak's heartbeat-timeout (T). A worker's job is fenced after T/2 without a
# heartbeat, an idle hung worker after T, and other processes declare it dead after T.
HEARTBEAT_TIMEOUT = 3.0
# SIGSTOP lengths: shorter than T/2 (nothing should notice), between T/2 and T (a
# stopped worker's job is fenced by its supervisor), longer than T (reapers may
# declare the process dead while it still exists).
STALL_SECONDS = (0.5, 5.0)
# How long the outside connection holds the SQLite write lock: past T/2 running jobs
# are fenced, past T workers are declared dead; always far below the 60 s busy
# timeout, so no queuectl command may fail with "database is locked".
HOLD_SECONDS = (1.0, 4.0)
# How long the outside connection waits for the lock itself (the driver is blocked
# meanwhile, and a SIGSTOPped holder is SIGCONTed only by the driver).
HOLD_ACQUIRE_TIMEOUT = 0.5
# A supervisor asked to stop lets its running jobs end (the longest, a timed-out one,
# takes about 3 s) and exits; this is that with a wide margin for a loaded machine.
STOP_GRACE = 30.0
STATUS_EVERY = 2.0
WAIT_STEP = 0.05
# `enqueue --file` prints the contiguous range of ids it took.
ENQUEUED = re.compile(r"enqueued (\d+) jobs \(ids (\d+)\.\.(\d+)\)")
PURGED = re.compile(r"purged (\d+) job\(s\)(?::\s*(.*))?")


def _env(db_url: str) -> dict:
    env = dict(os.environ, QUEUECTL_DB=db_url, PYTHONPATH=str(REPO))
    env.pop("QUEUECTL_HOSTNAME", None)
    env.pop("QUEUECTL_LISTEN_DB", None)  # the supervisors get --listen-db when they need one
    return env


def sqlite_path(db_url: str) -> str | None:
    """The file of a SQLite database (a plain path or a sqlite:/// URL); None otherwise."""
    if "://" not in db_url:
        return db_url
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    return url.database if url.get_backend_name() == "sqlite" else None


def process_snapshot(pid: int) -> str:
    """What a process and its descendants are doing, thread by thread (state, where
    the kernel has it wait, pending and blocked signals), for a supervisor that
    outlived a `worker stop`: its title says what each slot runs."""
    lines = []
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error as err:
        return f"{pid}: {err}\n"
    for proc in procs:
        try:
            lines.append(f"pid {proc.pid} ppid {proc.ppid()}: {' '.join(proc.cmdline())}")
            for task in sorted(Path(f"/proc/{proc.pid}/task").iterdir(), key=lambda t: int(t.name)):
                status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines() if ":" in line)
                fields = " ".join(f"{key}={status[key].strip()}" for key in ("State", "SigPnd", "ShdPnd", "SigBlk", "SigCgt") if key in status)
                wchan = (task / "wchan").read_text() if (task / "wchan").exists() else "?"
                lines.append(f"  tid {task.name} {(task / 'comm').read_text().strip()!r} {fields} wchan={wchan}")
        except (psutil.Error, OSError) as err:
            lines.append(f"  {proc.pid}: {err}")
    return "\n".join(lines) + "\n"


@dataclass
class Command:
    """A `queuectl` process the driver started and has not yet collected."""

    args: tuple[str, ...]
    proc: subprocess.Popen
    out: object
    err: object


@dataclass
class Stall:
    """A SIGSTOPped process and when it gets its SIGCONT."""

    proc: psutil.Process
    role: str
    due: float


class Soak:
    def __init__(self, db_url: str, workdir: Path, seed: int, listen_db: str | None = None):
        self.db_url = db_url
        # Through PgBouncer: the supervisors' LISTEN URL (the database, direct), which
        # is also where the driver reads and moves the schedule and checks at the end,
        # so that it never waits in PgBouncer's queue behind a SIGSTOPped client.
        self.listen_db = listen_db
        self.direct_url = listen_db or db_url
        self.sqlite = sqlite_path(db_url)
        self.work = workdir
        self.rng = random.Random(seed)
        self.marker = f"soak{seed}x{os.getpid()}"
        self.side_log = workdir / "attempts.log"
        self.locks = workdir / "locks"
        self.locks.mkdir(parents=True, exist_ok=True)
        self.logs: list[Path] = []
        self.sups: list[subprocess.Popen | None] = [None] * SUPERVISORS
        self.kills = Counter()
        self.actions = Counter()
        self.stalls = Counter()
        # Busy slots in each worker process the chaos killed or stopped ("kill 2": a
        # SIGKILL that hit a process running two jobs).
        self.slots_hit = Counter()
        self.enqueued = 0
        self.enqueued_ids: set[str] = set()
        # What `dlq purge` said it deleted: the total, and the ids it listed (it lists
        # them when there are at most 20).
        self.purged_reported = 0
        self.purged_listed: list[str] = []
        self.stalled: list[Stall] = []
        self.lock_hold: tuple[sqlite3.Connection, float] | None = None
        self.lock_holds = Counter()
        self.status_checks = 0
        self.negative_counts: list[dict] = []
        self.failed_commands: list[str] = []
        self.outlived_stop: list[str] = []
        self.races = Counter()
        self.next_status = 0.0
        self.forced_left: list[str] = []
        self.log_of: dict[int, str] = {}  # supervisor pid -> its log's name
        self.chains: dict[str, str] = {}  # chain job id -> the id it waits for (--after)
        self.chain_count = 0
        self.ticks_given = 0  # next runs of SCHEDULE moved into the past, each to fire once
        self.store_db = None  # an open queuectl database, for the schedule's ticks

    # --- commands --------------------------------------------------------------------

    def note(self, what: str) -> None:
        """A line in chaos.log, timestamped like the supervisors' logs."""
        now = time.time()  # one reading: two could straddle a second (…26,998 then …26,002)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now * 1000) % 1000:03d}"
        with (self.work / "chaos.log").open("a") as log:
            log.write(f"{stamp} {what}\n")

    def spawn(self, *args: str) -> Command:
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # noqa: SIM115  (the Command holds them until collected)
        proc = subprocess.Popen([sys.executable, "-m", "queuectl", *args], stdout=out, stderr=err, text=True, env=_env(self.db_url))
        return Command(args, proc, out, err)

    def collect(self, command: Command, timeout: float = 120) -> subprocess.CompletedProcess:
        """Wait for a command while chaos falls due; its output goes to cli.log."""
        if not self.wait_for(command.proc, timeout):
            command.proc.kill()
            command.proc.wait()
            self.failed_commands.append(f"queuectl {' '.join(command.args)}: no exit after {timeout:g}s (killed)")
        outputs = []
        for stream in (command.out, command.err):
            stream.seek(0)
            outputs.append(stream.read())
            stream.close()
        result = subprocess.CompletedProcess(command.args, command.proc.returncode, *outputs)
        with (self.work / "cli.log").open("a") as log:
            log.write(f"$ queuectl {' '.join(command.args)} -> {result.returncode}\n{result.stdout}{result.stderr}")
        return result

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = self.collect(self.spawn(*args), timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"queuectl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def wait_for(self, proc: subprocess.Popen, timeout: float) -> bool:
        """Wait for a process to exit, running `tick` meanwhile; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                proc.wait(timeout=WAIT_STEP)
                return True
            except subprocess.TimeoutExpired:
                pass
            self.tick()
            if time.monotonic() >= deadline:
                return False

    def pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(WAIT_STEP, left))
            self.tick()

    # --- processes -------------------------------------------------------------------

    def start_supervisor(self, slot: int, *extra: str) -> None:
        log = self.work / f"supervisor-{slot}-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "w") as out:
            self.sups[slot] = subprocess.Popen(
                [sys.executable, "-m", "queuectl", "worker", "start", "--concurrency", str(SLOTS_EACH), "--processes", str(PROCESSES_EACH),
                 *(("--listen-db", self.listen_db) if self.listen_db else ()), *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env(self.db_url),
            )
        self.log_of[self.sups[slot].pid] = log.name
        self.note(f"started supervisor {self.sups[slot].pid} ({log.name})")

    def workers_of(self, slot: int) -> list[psutil.Process]:
        sup = self.sups[slot]
        if sup is None or sup.poll() is not None:
            return []
        try:
            return [c for c in psutil.Process(sup.pid).children() if "worker" in " ".join(c.cmdline())]
        except psutil.Error:
            return []

    def pick_worker(self, taken: set[int] = frozenset()) -> tuple[psutil.Process, int] | None:
        """A worker process to kill or stop, and how many of its slots are busy (its
        title lists `busy job=N` per busy slot): half the time the busiest one, so that
        a run surely hits several running jobs in one process, else any."""
        busy = {}
        for proc in [w for slot in range(SUPERVISORS) for w in self.workers_of(slot) if w.pid not in taken]:
            try:
                busy[proc] = " ".join(proc.cmdline()).count("busy job=")
            except psutil.Error:
                pass
        if not busy:
            return None
        if self.rng.random() < 0.5:
            most = max(busy.values())
            victim = self.rng.choice([proc for proc, n in busy.items() if n == most])
        else:
            victim = self.rng.choice(list(busy))
        return victim, busy[victim]

    def ready(self) -> None:
        """Wait until every running supervisor has registered (its log says started):
        `worker stop` cannot see one that has not, and it would rightly run on."""
        deadline = time.monotonic() + 60
        for sup in self.sups:
            log = self.work / self.log_of[sup.pid] if sup is not None else None
            while sup is not None and sup.poll() is None and time.monotonic() < deadline:
                if re.search(r"supervisor s-\S+ started", log.read_text(errors="replace")):
                    break
                self.pause(WAIT_STEP)

    def restart_after_stop(self) -> None:
        """After a `worker stop`: wait for every supervisor to exit, start new ones."""
        for slot in range(SUPERVISORS):
            self.expect_exit(slot, STOP_GRACE, "a `worker stop`")
            self.start_supervisor(slot)

    def expect_exit(self, slot: int, seconds: float, after: str) -> None:
        """A supervisor told to stop must exit; one that does not is recorded and killed."""
        sup = self.sups[slot]
        if sup is None or self.wait_for(sup, seconds):
            return
        # `worker stop` asks every supervisor whose row is live; this one was not
        # asked (its row was declared dead while it lived) or did not listen.
        declared = [line[:23] for log in self.logs if log.exists() for line in log.read_text(errors="replace").splitlines()
                    if re.search(rf"declared supervisor \S+ \(host \S+, pid {sup.pid}\) dead", line)]
        why = f"; declared dead at {declared[0]} while it lived" if declared else ""
        self.note(f"supervisor {sup.pid} still running {seconds:g} s after {after}{why}")
        snapshot = self.work / f"outlived-{sup.pid}.txt"
        snapshot.write_text(process_snapshot(sup.pid))
        self.outlived_stop.append(f"supervisor {sup.pid} ({self.log_of[sup.pid]}) still running {seconds:g} s after {after}{why} ({snapshot.name})")
        sup.kill()
        sup.wait()
        self.kills["supervisor"] += 1

    # --- stalls and the outside lock ------------------------------------------------

    def tick(self) -> None:
        """SIGCONT the stalls and release the outside lock that are due."""
        now = time.monotonic()
        for stall in [s for s in self.stalled if s.due <= now]:
            self.resume(stall)
        if self.lock_hold is not None and self.lock_hold[1] <= now:
            self.release_lock()

    def resume(self, stall: Stall) -> None:
        self.stalled.remove(stall)
        try:
            stall.proc.resume()  # psutil checks the pid is still that process
            self.note(f"SIGCONT {stall.role} {stall.proc.pid}")
        except psutil.Error:
            pass  # killed meanwhile (its supervisor fenced it, or the chaos did)

    def stall(self, role: str, seconds: float | None) -> None:
        taken = {s.proc.pid for s in self.stalled}
        busy = None
        if role == "worker":
            picked = self.pick_worker(taken)
            if picked is None:
                return
            victim, busy = picked
        else:
            victims = []
            for sup in self.sups:
                if sup is not None and sup.poll() is None and sup.pid not in taken:
                    try:
                        victims.append(psutil.Process(sup.pid))
                    except psutil.Error:
                        pass
            if not victims:
                return
            victim = self.rng.choice(victims)
        seconds = seconds if seconds is not None else self.rng.uniform(*STALL_SECONDS)
        try:
            victim.suspend()
        except psutil.Error:
            return
        if busy is not None:
            self.slots_hit[f"stop {busy}"] += 1
        self.stalled.append(Stall(victim, role, time.monotonic() + seconds))
        self.note(f"SIGSTOP {role} {victim.pid} for {seconds:.1f}s" + (f" ({busy} busy slots)" if busy is not None else ""))
        band = "<T/2" if seconds < HEARTBEAT_TIMEOUT / 2 else "T/2..T" if seconds < HEARTBEAT_TIMEOUT else ">T"
        self.stalls[f"{role} {band}"] += 1

    def hold_lock(self, seconds: float | None) -> bool:
        """Take SQLite's write lock from an outside connection (as the sqlite3 shell
        would: no flock of <db>.lock); `tick` releases it when due. False if busy."""
        if self.sqlite is None or self.lock_hold is not None:
            return False
        conn = sqlite3.connect(self.sqlite, timeout=HOLD_ACQUIRE_TIMEOUT, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # held by a writer (maybe a SIGSTOPped one)
            conn.close()
            self.lock_holds["busy"] += 1
            return False
        seconds = seconds if seconds is not None else self.rng.uniform(*HOLD_SECONDS)
        self.lock_hold = (conn, time.monotonic() + seconds)
        self.note(f"holding the SQLite write lock for {seconds:.1f}s")
        self.lock_holds["held"] += 1
        self.lock_holds[">T/2" if seconds > HEARTBEAT_TIMEOUT / 2 else "<T/2"] += 1
        return True

    def release_lock(self) -> None:
        conn, _ = self.lock_hold
        self.lock_hold = None
        conn.execute("ROLLBACK")
        conn.close()
        self.note("released the SQLite write lock")

    def calm(self) -> None:
        """End every stall and the outside lock now."""
        for stall in list(self.stalled):
            self.resume(stall)
        if self.lock_hold is not None:
            self.release_lock()

    # --- jobs ------------------------------------------------------------------------

    def job_command(self, kind: str | None = None) -> tuple[str, dict]:
        """A random job: quick, slow, flaky, failing, timing out or output-heavy."""
        kind = kind or self.rng.choices(["quick", "slow", "flaky", "fail", "timeout", "output"], [40, 20, 15, 8, 7, 10])[0]
        body = {
            "quick": "true",
            "slow": f"sleep {self.rng.choice([0.3, 0.8, 1.5])}",
            "flaky": '[ "$QUEUECTL_ATTEMPT" -ge 2 ]',
            "fail": "exit 3",
            "timeout": "sleep 30",
            "output": "head -c 300000 /dev/urandom | od -An | head -c 200000; printf '\\377\\000'",
        }[kind]
        spec = {"max_retries": 2}
        if kind == "timeout":
            spec["timeout"] = 1
        log, lock = shlex.quote(str(self.side_log)), shlex.quote(str(self.locks))
        # The flock is held for the attempt's whole life (fd 9 is inherited by the
        # body); a second attempt running at the same time cannot get it.
        command = (
            f": {self.marker}; exec 9>{lock}/$QUEUECTL_JOB_ID; "
            f'if ! flock -n 9; then echo "OVERLAP $QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT" >> {log}; exit 99; fi; '
            f'echo "start $QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT" >> {log}; '
            f"( {body} ); rc=$?; "
            f'echo "end $QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT $rc" >> {log}; exit $rc'
        )
        return command, spec

    def enqueue_batch(self, count: int) -> None:
        lines = []
        for _ in range(count):
            command, spec = self.job_command()
            lines.append(json.dumps({"command": command, **spec}))
        path = self.work / f"batch-{self.enqueued}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        result = self.cli("enqueue", "--file", str(path))
        taken = ENQUEUED.search(result.stdout)
        if not taken or int(taken[1]) != count:
            raise RuntimeError(f"unexpected enqueue output: {result.stdout!r}")
        self.enqueued_ids.update(str(i) for i in range(int(taken[2]), int(taken[3]) + 1))
        self.enqueued += count

    def enqueue_chain(self) -> None:
        """A pipeline of 2-4 jobs, each --after the one before, in one `enqueue --file`
        (later lines name the ids of earlier ones); random kinds, so some fail for good
        and cancel the rest of their chain."""
        self.chain_count += 1
        ids = [f"c{self.chain_count}-{n}" for n in range(self.rng.randint(2, 4))]
        lines = []
        for n, job_id in enumerate(ids):
            command, spec = self.job_command()
            spec = {"id": job_id, "command": command, **spec}
            if n:
                spec["after"] = [ids[n - 1]]
                self.chains[job_id] = ids[n - 1]
            lines.append(json.dumps(spec))
        path = self.work / f"chain-{self.chain_count}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        self.cli("enqueue", "--file", str(path))
        self.enqueued_ids.update(ids)
        self.enqueued += len(ids)

    def give_tick(self) -> None:
        """Move the schedule's next run into the past if its last one was fired: some
        supervisor must fire it, once. Not while the driver holds the SQLite lock or a
        process is stopped: that process may hold the write lock, and only the driver,
        blocked here, would let it go on."""
        from sqlalchemy import update

        from queuectl.store.models import SCHEDULES
        from queuectl.timeutil import utcnow

        if self.lock_hold is not None or self.stalled:
            return
        now = utcnow()
        with self.store_db.begin() as conn:
            moved = conn.execute(
                update(SCHEDULES).where(SCHEDULES.c.name == SCHEDULE, SCHEDULES.c.next_run > now).values(next_run=now)
            ).rowcount
        if moved:
            self.ticks_given += 1
            self.note(f"tick {self.ticks_given} given to schedule {SCHEDULE}")

    def ticks_pending(self) -> bool:
        from sqlalchemy import select

        from queuectl.store.models import SCHEDULES
        from queuectl.timeutil import utcnow

        with self.store_db.read() as conn:
            next_run = conn.execute(select(SCHEDULES.c.next_run).where(SCHEDULES.c.name == SCHEDULE)).scalar()
        return next_run <= utcnow()

    # --- dlq and status --------------------------------------------------------------

    def dlq_done(self, result: subprocess.CompletedProcess) -> None:
        """Account for a finished `dlq retry/purge --all` (which must never fail)."""
        if result.returncode != 0:
            self.failed_commands.append(f"queuectl {' '.join(result.args)} -> {result.returncode}: {result.stderr.strip()}")
            return
        if result.args[1] == "purge":
            said = PURGED.search(result.stdout)
            if not said:
                self.failed_commands.append(f"queuectl {' '.join(result.args)}: unexpected output {result.stdout!r}")
                return
            self.purged_reported += int(said[1])
            self.note(f"purged {said[1]}")
            self.purged_listed += (said[2] or "").split()

    def dlq_race(self, with_stop: bool, moves: list[str] | None = None) -> None:
        """Two or three `dlq retry --all`/`dlq purge --all` at once, sometimes with a
        `worker stop` beside them; each is started before any is waited for."""
        moves = moves or ["retry", "purge"] + self.rng.choices(["retry", "purge"], k=self.rng.randint(0, 1))
        self.rng.shuffle(moves)
        self.races["+".join(sorted(moves))] += 1
        started = [self.spawn("dlq", move, "--all") for move in moves]
        stop = None
        if with_stop:
            self.ready()
            self.races["with worker stop"] += 1
            stop = self.spawn("worker", "stop", "--now" if self.rng.random() < 0.3 else "--no-wait")
        for command in started:
            self.dlq_done(self.collect(command))
        if stop is not None:
            self.collect(stop)
            self.restart_after_stop()
        self.check_status()

    def check_status(self) -> dict | None:
        """`status --json`; any negative count is recorded."""
        self.status_checks += 1
        result = self.cli("status", "--json", check=False)
        if result.returncode != 0:
            self.failed_commands.append(f"queuectl status --json -> {result.returncode}: {result.stderr.strip()}")
            return None
        counts = json.loads(result.stdout)["jobs"]
        if any(n < 0 for n in counts.values()):
            self.negative_counts.append(counts)
        return counts

    # --- chaos -----------------------------------------------------------------------

    def chaos_step(self, action: str | None = None, seconds: float | None = None) -> None:
        if action is None:
            weights = {
                "kill_worker": 30, "kill_supervisor": 10, "enqueue": 18, "dlq_retry": 8, "config": 12, "stop": 7,
                "stop_worker": 10, "stop_supervisor": 5, "hold_lock": 6 if self.sqlite else 0, "dlq_race": 6,
                "chain": 10,
            }
            action = self.rng.choices(list(weights), list(weights.values()))[0]
        self.actions[action] += 1
        self.note(action)
        if action == "kill_worker":
            picked = self.pick_worker()
            if picked is not None:
                victim, busy = picked
                try:
                    victim.kill()
                except psutil.Error:
                    return
                self.note(f"SIGKILL worker {victim.pid} ({busy} busy slots)")
                self.kills["worker"] += 1
                self.slots_hit[f"kill {busy}"] += 1
        elif action == "kill_supervisor":
            slot = self.rng.randrange(SUPERVISORS)
            sup = self.sups[slot]
            if sup is not None and sup.poll() is None:
                sup.kill()
                sup.wait()
                self.kills["supervisor"] += 1
            self.start_supervisor(slot)
        elif action == "enqueue":
            self.enqueue_batch(self.rng.randint(5, 30))
        elif action == "chain":
            self.enqueue_chain()
        elif action == "dlq_retry":
            self.dlq_done(self.cli("dlq", "retry", "--all", check=False))
        elif action == "config":
            self.cli("config", "set", "backoff-jitter", str(self.rng.choice([0, 0.2, 0.5, 1])))
        elif action == "stop":
            self.ready()
            self.cli("worker", "stop", "--now" if self.rng.random() < 0.3 else "--no-wait", check=False)
            self.restart_after_stop()
        elif action == "stop_worker":
            self.stall("worker", seconds)
        elif action == "stop_supervisor":
            self.stall("supervisor", seconds)
        elif action == "hold_lock":
            self.hold_lock(seconds)
        elif action == "dlq_race":
            self.dlq_race(with_stop=self.rng.random() < 0.4)
        elif action == "dlq_race_stop":  # two purges at once: #10 counted both
            self.dlq_race(with_stop=True, moves=["purge", "purge", "retry"])

    def run(self, jobs: int, chaos_seconds: float) -> dict:
        config = {"heartbeat-interval": "0.2", "heartbeat-timeout": str(HEARTBEAT_TIMEOUT), "backoff-base": "1.5", "backoff-max": "2", "poll-interval": "0.05"}
        for key, value in config.items():
            self.cli("config", "set", key, value)
        from queuectl.store import open_database

        self.store_db = open_database(self.direct_url)
        # A yearly cron: every tick of the soak is one the driver gives (give_tick).
        self.cli("schedule", "add", SCHEDULE, "--cron", "0 0 1 1 *", "--overlap", "allow", "--", self.job_command(kind="quick")[0])
        for _ in range(8):
            self.enqueue_chain()
        first = min(jobs, max(50, jobs // 2))
        self.enqueue_batch(first)
        for slot in range(SUPERVISORS):
            self.start_supervisor(slot)
        started = time.monotonic()
        remaining = jobs - first
        # Every run, however short, kills workers and a supervisor, stops the pool,
        # stalls workers past T/2 and past T, stalls a supervisor past T with a
        # `worker stop` sent during the stall and another one past T with one sent
        # about when it ends, holds the SQLite lock past T/2, and races DLQ moves with
        # each other and with a `worker stop` (late enough that the DLQ has jobs to
        # move); the rest of the chaos is random. (action, seconds of a stall or hold)
        forced = [
            ("kill_worker", None), ("stop_worker", 4.5), ("kill_supervisor", None), ("hold_lock", 2.5),
            ("stop_supervisor", 4.5), ("kill_worker", None), ("stop_worker", 2.2), ("stop", None),
            ("stop_supervisor", 3.5), ("dlq_race", None), ("kill_worker", None), ("dlq_race_stop", None),
        ]
        if self.sqlite is None:
            forced.remove(("hold_lock", 2.5))
        self.pause(1.0)
        while time.monotonic() - started < chaos_seconds:
            if time.monotonic() >= self.next_status:
                self.check_status()
                self.next_status = time.monotonic() + STATUS_EVERY
            self.give_tick()
            if forced:
                action, seconds = forced.pop(0)
                worker_hits = self.slots_hit.total()
                self.chaos_step(action, seconds)
                # The lock was busy, or no worker process was up (a supervisor was
                # replacing them, or stopped): try again at the next step.
                missed = self.lock_hold is None if action == "hold_lock" else action in ("kill_worker", "stop_worker") and self.slots_hit.total() == worker_hits
                if missed:
                    forced.insert(0, (action, seconds))
            elif remaining > 0 and self.rng.random() < 0.3:
                batch = min(remaining, self.rng.randint(20, 100))
                self.enqueue_batch(batch)
                remaining -= batch
            else:
                self.chaos_step()
            self.pause(self.rng.uniform(0.2, 0.8))
        self.forced_left = [action for action, _ in forced]
        if remaining > 0:
            self.enqueue_batch(remaining)
        return self.settle()

    def settle(self) -> dict:
        """Stop the chaos: let burst supervisors drain everything, then check."""
        self.calm()
        self.note("settle")
        deadline = time.monotonic() + 60
        while self.ticks_pending() and time.monotonic() < deadline:
            self.pause(0.1)
        self.ready()
        self.cli("worker", "stop", "--timeout", "120", check=False, timeout=150)
        for slot in range(SUPERVISORS):
            # It waited for every supervisor it asked: one still running was not asked.
            self.expect_exit(slot, 10, "the final `worker stop`")
        finals = []
        for slot in range(SUPERVISORS):
            self.start_supervisor(slot, "--burst")
            finals.append(self.sups[slot])
        deadline = time.monotonic() + 600
        for sup in finals:
            sup.wait(timeout=max(1, deadline - time.monotonic()))
        return self.check()

    # --- invariants ------------------------------------------------------------------

    def check(self) -> dict:
        from sqlalchemy import select

        from queuectl.store import jobs as jobs_mod
        from queuectl.store import open_database
        from queuectl.store.models import CONFIG

        db = open_database(self.direct_url)
        rows = [jobs_mod.to_dict(r) for r in jobs_mod.listing(db)]
        with db.read() as conn:
            config = CONFIG
            purged_counter = int(conn.execute(select(config.c.value).where(config.c.key == jobs_mod.PURGED_KEY)).scalar() or 0)
        db.dispose()
        states = Counter(r["state"] for r in rows)
        events = defaultdict(list)
        overlaps = []
        for line in self.side_log.read_text().splitlines() if self.side_log.exists() else []:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "OVERLAP":
                overlaps.append(line)
            elif parts[0] in ("start", "end"):
                events[parts[1]].append(parts)
        not_final = [r["id"] for r in rows if r["state"] not in ("completed", "dead") and not (r["state"] == "cancelled" and r["id"] in self.chains)]
        no_success = [r["id"] for r in rows if r["state"] == "completed" and not any(e[0] == "end" and e[3] == "0" for e in events[r["id"]])]
        bad_dead = [r["id"] for r in rows if r["state"] == "dead" and (r["attempts"] != r["max_retries"] + 1 or not r["last_error"])]
        # Purged jobs leave the database, and the soak cannot know every purged id:
        # `dlq purge --all` lists ids only when it deleted at most 20. So a job is
        # accounted for by three sources that must agree: the ids the soak enqueued
        # (exact: each `enqueue --file` prints its contiguous range), the numbers the
        # purges printed, and the `_purged` counter that `status` subtracts. The ids
        # gone from the database must be exactly as many as the purges reported (more
        # is a lost job, fewer a purge counted twice, which made `status` show a
        # negative Completed in #10), the counter must equal that number, and every
        # id a purge listed must be gone and listed once.
        # The schedule's jobs: one per tick given, never more (a tick fired twice) or fewer.
        scheduled = [r["id"] for r in rows if r.get("schedule") == SCHEDULE]
        self.enqueued_ids.update(scheduled)
        ticks = [] if len(scheduled) == self.ticks_given else [f"{self.ticks_given} ticks given, {len(scheduled)} jobs enqueued"]
        chain_problems = self.check_chains(rows)
        present = {r["id"] for r in rows}
        gone = self.enqueued_ids - present
        purge_problems = []
        if present - self.enqueued_ids:
            purge_problems.append(f"ids never enqueued: {sorted(present - self.enqueued_ids)[:20]}")
        if len(gone) < self.purged_reported:
            purge_problems.append(f"purges reported {self.purged_reported} jobs but {len(gone)} are gone")
        if purged_counter != self.purged_reported:
            purge_problems.append(f"_purged is {purged_counter}, purges reported {self.purged_reported}")
        listed = Counter(self.purged_listed)
        if [i for i, n in listed.items() if n > 1]:
            purge_problems.append(f"purged twice: {[i for i, n in listed.items() if n > 1][:20]}")
        if set(listed) & present:
            purge_problems.append(f"purged but present: {sorted(set(listed) & present)[:20]}")
        final_counts = self.check_status()
        real_counts = {state: states.get(state, 0) for state in (final_counts or {})}
        survivors = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if self.marker in " ".join(proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE:
                    survivors.append(proc.pid)
            except psutil.Error:
                pass
        locked = [str(p) for p in [*self.logs, self.work / "cli.log"] if p.exists() and re.search("database is locked", p.read_text(errors="replace"))]
        attempts_started = sum(1 for evs in events.values() for e in evs if e[0] == "start")
        return {
            "jobs": len(rows),
            "enqueued": self.enqueued,
            "purged": self.purged_reported,
            "states": dict(states),
            "attempts_started": attempts_started,
            "kills": dict(self.kills),
            "stalls": dict(self.stalls),
            "busy_slots_hit": dict(sorted(self.slots_hit.items())),
            "lock_holds": dict(self.lock_holds),
            "dlq_races": dict(self.races),
            "status_checks": self.status_checks,
            "actions": dict(self.actions),
            "forced_not_done": self.forced_left,
            "lost": max(0, len(gone) - self.purged_reported) + len(not_final),
            "not_final": not_final[:20],
            "overlaps": overlaps[:20],
            "completed_without_success": no_success[:20],
            "bad_dead": bad_dead[:20],
            "purge_accounting": purge_problems,
            "chains": self.chain_count,
            "ticks_given": self.ticks_given,
            "ticks": ticks,
            "chain_order": chain_problems[:20],
            "negative_counts": self.negative_counts[:20],
            "final_status_counts": final_counts,
            "status_mismatch": [] if final_counts == real_counts else [{"status": final_counts, "real": real_counts}],
            "failed_commands": self.failed_commands[:20],
            "outlived_stop": self.outlived_stop[:20],
            "surviving_job_processes": survivors,
            "database_is_locked_in": locked,
        }

    def check_chains(self, rows: list[dict]) -> list[str]:
        """Each chain job against the job it waits for, from the side log's order: a
        job's first start must follow that job's last successful end; a cancelled one
        never started and names it."""
        by_id = {r["id"]: r for r in rows}
        first_start: dict[str, int] = {}
        last_ok: dict[str, int] = {}
        lines = self.side_log.read_text().splitlines() if self.side_log.exists() else []
        for n, line in enumerate(lines):
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "start":
                first_start.setdefault(parts[1], n)
            elif len(parts) == 4 and parts[0] == "end" and parts[3] == "0":
                last_ok[parts[1]] = n
        problems = []
        for job_id, dep in self.chains.items():
            job = by_id.get(job_id)
            if job is None:
                continue  # purged from the DLQ
            if job["state"] == "cancelled":
                if job_id in first_start:
                    problems.append(f"{job_id}: cancelled by its dependency after it started")
                if dep not in (job["last_error"] or ""):
                    problems.append(f"{job_id}: cancelled, but last_error {job['last_error']!r} does not name {dep}")
            if job_id in first_start and not (dep in last_ok and last_ok[dep] < first_start[job_id]):
                problems.append(f"{job_id}: started before {dep} completed")
            if job["state"] == "completed" and by_id.get(dep, {}).get("state") != "completed":
                problems.append(f"{job_id}: completed, but {dep} is {by_id.get(dep, {}).get('state')}")
        return problems

    def cleanup(self) -> None:
        if self.store_db is not None:
            self.store_db.dispose()
        self.calm()
        for sup in self.sups:
            if sup is not None and sup.poll() is None:
                for proc in [psutil.Process(sup.pid)] + psutil.Process(sup.pid).children(recursive=True):
                    try:
                        proc.kill()
                    except psutil.Error:
                        pass
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if self.marker in " ".join(proc.info["cmdline"] or []):
                    proc.kill()
            except psutil.Error:
                pass


VIOLATIONS = (
    "not_final", "overlaps", "completed_without_success", "bad_dead", "purge_accounting", "negative_counts",
    "status_mismatch", "failed_commands", "outlived_stop", "forced_not_done", "surviving_job_processes",
    "database_is_locked_in", "ticks", "chain_order",
)


def violations(report: dict) -> list[str]:
    problems = [f"{key}: {report[key]}" for key in VIOLATIONS if report[key]]
    if report["lost"]:
        problems.append(f"lost: {report['lost']}")
    return problems


def run_soak(db_url: str, workdir: Path, *, jobs: int, chaos_seconds: float, seed: int, listen_db: str | None = None) -> dict:
    """The soak on db_url. Through PgBouncer, db_url is PgBouncer's URL for the
    database and listen_db the database's own (see `Soak.__init__`)."""
    soak = Soak(db_url, workdir, seed, listen_db)
    started = time.monotonic()
    try:
        report = soak.run(jobs, chaos_seconds)
    finally:
        soak.cleanup()
    return {"seconds": round(time.monotonic() - started, 1), **report}


@contextlib.contextmanager
def through_pgbouncer(db_url: str, workdir: Path):
    """A PgBouncer in transaction mode in front of db_url's server (tests/pgbouncer.py,
    the suite's fixture), for one standalone run: yields its URL for the database.
    Its log is kept in workdir."""
    from pgbouncer import PgBouncer

    bouncer = PgBouncer(db_url)
    try:
        bouncer.start()
        yield bouncer.url(db_url)
    finally:
        (workdir / "pgbouncer.log").write_text(bouncer.log())
        bouncer.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--chaos-seconds", type=float, default=300)
    parser.add_argument("--db", help="database URL or path (default: a fresh SQLite file)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument(
        "--pgbouncer", action="store_true",
        help="run through a PgBouncer in transaction mode started in front of --db (a postgresql:// URL): "
             "the supervisors and every command get its URL, the supervisors --listen-db the database's",
    )
    args = parser.parse_args()
    if args.pgbouncer:
        from pgbouncer import why_unavailable

        if not (args.db or "").startswith("postgres"):
            parser.error("--pgbouncer needs --db postgresql+psycopg://...")
        if reason := why_unavailable(args.db):
            parser.error(f"--pgbouncer: {reason}")
    workdir = Path(tempfile.mkdtemp(prefix="queuectl-soak-"))
    db_url = args.db or str(workdir / "queue.db")
    if args.pgbouncer:
        with through_pgbouncer(db_url, workdir) as bouncer_url:
            report = run_soak(bouncer_url, workdir, jobs=args.jobs, chaos_seconds=args.chaos_seconds, seed=args.seed, listen_db=db_url)
    else:
        report = run_soak(db_url, workdir, jobs=args.jobs, chaos_seconds=args.chaos_seconds, seed=args.seed)
    print(json.dumps({"seed": args.seed, "workdir": str(workdir), "through_pgbouncer": args.pgbouncer, **report}, indent=2))
    problems = violations(report)
    print("PASS" if not problems else "FAIL:\n" + "\n".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
