"""Chaos soak: many jobs on 2 supervisors x 3 workers while a driver SIGKILLs workers
and supervisors, restarts them, and runs enqueues, `dlq retry`, `config set` and
`worker stop` concurrently. Then it checks, from the database and from a side log
every job appends to:

- every job is `completed` or `dead` (none lost, none stuck);
- no job ever ran two attempts at the same time (each attempt holds an flock on a
  per-job file; an attempt that finds it held logs OVERLAP);
- every completed job has a successful attempt in the log, and every dead job used
  all its attempts and says why;
- no job process survives; no "database is locked" anywhere.

Standalone:  python tests/soak.py [--jobs 2000] [--chaos-seconds 300] [--db URL] [--seed N]
In the test suite: tests/test_soak.py (short in CI, long with -m slow).
"""

import argparse
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SUPERVISORS = 2
WORKERS_EACH = 3


def _env(db_url: str) -> dict:
    env = dict(os.environ, QUEUECTL_DB=db_url, PYTHONPATH=str(REPO))
    env.pop("QUEUECTL_HOSTNAME", None)
    return env


class Soak:
    def __init__(self, db_url: str, workdir: Path, seed: int):
        self.db_url = db_url
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
        self.enqueued = 0

    # --- processes -------------------------------------------------------------------

    def cli(self, *args, check=True, timeout=120) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "queuectl", *args], capture_output=True, text=True, env=_env(self.db_url), timeout=timeout
        )
        (self.work / "cli.log").open("a").write(f"$ queuectl {' '.join(args)} -> {result.returncode}\n{result.stdout}{result.stderr}")
        if check and result.returncode != 0:
            raise RuntimeError(f"queuectl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def start_supervisor(self, slot: int, *extra: str) -> None:
        log = self.work / f"supervisor-{slot}-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "w") as out:
            self.sups[slot] = subprocess.Popen(
                [sys.executable, "-m", "queuectl", "worker", "start", "--concurrency", str(WORKERS_EACH), *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env(self.db_url),
            )

    def workers_of(self, slot: int) -> list[psutil.Process]:
        sup = self.sups[slot]
        if sup is None or sup.poll() is not None:
            return []
        try:
            return [c for c in psutil.Process(sup.pid).children() if "worker" in " ".join(c.cmdline())]
        except psutil.Error:
            return []

    # --- jobs ------------------------------------------------------------------------

    def job_command(self) -> tuple[str, dict]:
        """A random job: quick, slow, flaky, failing, timing out or output-heavy."""
        kind = self.rng.choices(["quick", "slow", "flaky", "fail", "timeout", "output"], [40, 20, 15, 8, 7, 10])[0]
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
        self.cli("enqueue", "--file", str(path))
        self.enqueued += count

    # --- chaos -----------------------------------------------------------------------

    def chaos_step(self, action: str | None = None) -> None:
        action = action or self.rng.choices(
            ["kill_worker", "kill_supervisor", "enqueue", "dlq_retry", "config", "stop"], [35, 12, 20, 10, 15, 8]
        )[0]
        self.actions[action] += 1
        if action == "kill_worker":
            victims = [w for slot in range(SUPERVISORS) for w in self.workers_of(slot)]
            if victims:
                self.rng.choice(victims).kill()
                self.kills["worker"] += 1
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
        elif action == "dlq_retry":
            self.cli("dlq", "retry", "--all", check=False)
        elif action == "config":
            self.cli("config", "set", "backoff-jitter", str(self.rng.choice([0, 0.2, 0.5, 1])))
        elif action == "stop":
            self.cli("worker", "stop", "--now" if self.rng.random() < 0.3 else "--no-wait", check=False)
            for slot in range(SUPERVISORS):
                sup = self.sups[slot]
                if sup is not None:
                    try:
                        sup.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        pass
                self.start_supervisor(slot)

    def run(self, jobs: int, chaos_seconds: float) -> dict:
        for key, value in {"heartbeat-interval": "0.2", "heartbeat-timeout": "3", "backoff-base": "1.5", "backoff-max": "2", "poll-interval": "0.05"}.items():
            self.cli("config", "set", key, value)
        first = min(jobs, max(50, jobs // 2))
        self.enqueue_batch(first)
        for slot in range(SUPERVISORS):
            self.start_supervisor(slot)
        started = time.monotonic()
        remaining = jobs - first
        # Every run, however short, kills workers and a supervisor and stops the pool;
        # the rest of the chaos is random.
        forced = ["kill_worker", "kill_supervisor", "kill_worker", "stop", "kill_worker"]
        time.sleep(1.0)
        while time.monotonic() - started < chaos_seconds:
            if forced:
                self.chaos_step(forced.pop(0))
            elif remaining > 0 and self.rng.random() < 0.3:
                batch = min(remaining, self.rng.randint(20, 100))
                self.enqueue_batch(batch)
                remaining -= batch
            else:
                self.chaos_step()
            time.sleep(self.rng.uniform(0.2, 0.8))
        if remaining > 0:
            self.enqueue_batch(remaining)
        return self.settle()

    def settle(self) -> dict:
        """Stop the chaos: let burst supervisors drain everything, then check."""
        self.cli("worker", "stop", "--timeout", "120", check=False)
        for slot in range(SUPERVISORS):
            sup = self.sups[slot]
            if sup is not None and sup.poll() is None:
                sup.kill()
                sup.wait()
                self.kills["supervisor"] += 1
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
        from queuectl import jobs as jobs_mod
        from queuectl.database import open_database

        db = open_database(self.db_url)
        rows = [jobs_mod.to_dict(r) for r in jobs_mod.listing(db)]
        db.dispose()
        states = Counter(r["state"] for r in rows)
        events = defaultdict(list)
        overlaps = []
        for line in self.side_log.read_text().splitlines() if self.side_log.exists() else []:
            parts = line.split()
            if parts[0] == "OVERLAP":
                overlaps.append(line)
            elif parts[0] in ("start", "end"):
                events[parts[1]].append(parts)
        not_final = [r["id"] for r in rows if r["state"] not in ("completed", "dead")]
        no_success = [r["id"] for r in rows if r["state"] == "completed" and not any(e[0] == "end" and e[3] == "0" for e in events[r["id"]])]
        bad_dead = [r["id"] for r in rows if r["state"] == "dead" and (r["attempts"] != r["max_retries"] + 1 or not r["last_error"])]
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
            "states": dict(states),
            "attempts_started": attempts_started,
            "kills": dict(self.kills),
            "actions": dict(self.actions),
            "lost": self.enqueued - len(rows) + len(not_final),
            "not_final": not_final[:20],
            "overlaps": overlaps[:20],
            "completed_without_success": no_success[:20],
            "bad_dead": bad_dead[:20],
            "surviving_job_processes": survivors,
            "database_is_locked_in": locked,
        }

    def cleanup(self) -> None:
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


def violations(report: dict) -> list[str]:
    problems = []
    for key in ("not_final", "overlaps", "completed_without_success", "bad_dead", "surviving_job_processes", "database_is_locked_in"):
        if report[key]:
            problems.append(f"{key}: {report[key]}")
    if report["lost"]:
        problems.append(f"lost: {report['lost']}")
    return problems


def run_soak(db_url: str, workdir: Path, *, jobs: int, chaos_seconds: float, seed: int) -> dict:
    soak = Soak(db_url, workdir, seed)
    try:
        return soak.run(jobs, chaos_seconds)
    finally:
        soak.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--chaos-seconds", type=float, default=300)
    parser.add_argument("--db", help="database URL or path (default: a fresh SQLite file)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="queuectl-soak-"))
    db_url = args.db or str(workdir / "queue.db")
    report = run_soak(db_url, workdir, jobs=args.jobs, chaos_seconds=args.chaos_seconds, seed=args.seed)
    print(json.dumps({"seed": args.seed, "workdir": str(workdir), **report}, indent=2))
    problems = violations(report)
    print("PASS" if not problems else "FAIL:\n" + "\n".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
