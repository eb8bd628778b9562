"""The storage seam: every SQL statement and every transaction of queuectl.

The rest of the code (the CLI, the worker runtime, `status`) opens a `Store` and
calls its named operations; none of it imports SQLAlchemy. Each operation is one
transaction. Inside the package, one module per table or concern holds the
statements, each taking a connection:

- `database`: the engine, transactions, error translation, where the database is.
- `dialect`: every difference between SQLite and PostgreSQL, as methods.
- `models`: the tables (what the Alembic migrations create).
- `schema`: migrations (to head on open; `queuectl db ...`).
- `transitions`: the job state machine (claim, complete, fail, recover, moves).
- `jobs`: enqueueing and reading jobs; `dlq`: retry and purge of dead jobs.
- `browse`: the dashboard's pages of jobs, newest first, by keyset on seq.
- `unique`: unique keys of active jobs; `retention`: pruning finished jobs by age.
- `schedules`: recurring jobs, and firing their ticks exactly once.
- `tallies`: jobs enqueued and ended per queue and minute (`queuectl metrics`).
- `counts`: the numbers of `status`, and the jobs that ended last; `config`: the
  config table; `workers`: the workers table (registration, heartbeats, declaring
  processes dead).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from queuectl.errors import DeclaredDead
from queuectl.states import JobState, Outcome, StopMode, WorkerState
from queuectl.store import attempts, browse, config, control, counts, dependencies, dlq, jobs, retention, schedules, schema, tallies, transitions, workers
from queuectl.store import queues as queue_controls
from queuectl.store.browse import JobFilter
from queuectl.store.database import Database, resolve_url, usable_url, worker_log_path
from queuectl.timeutil import utcnow

__all__ = ["Database", "JobFilter", "Store", "job_dict", "open_database", "resolve_url", "usable_url", "worker_log_path"]

# How often a PostgreSQL claim is tried at once when it lost a queue's last slot to
# another claim while work is still due (see Store.claim).
_CLAIM_TRIES = 3

job_dict = jobs.to_dict  # a job row (as enqueue returns them) as the JSON object the CLI prints


def schedule_dict(row) -> dict:
    """A schedule row as the JSON object the CLI prints: its job spec's fields flat,
    `paused` a boolean, and no next_run while it is paused."""
    data = jobs.to_dict(row)
    spec = schedules.spec_of(data.pop("spec"))
    data["paused"] = row.paused_at is not None
    if data["paused"]:
        data["next_run"] = None
    ordered = {key: data.pop(key) for key in ("name", "cron", "tz", "next_run", "last_run", "last_job", "last_job_state", "paused")}
    ordered.update(command=spec.command, queue=spec.queue, priority=spec.priority, max_retries=spec.max_retries,
                   timeout=spec.timeout, cwd=spec.cwd)
    ordered.update(data)
    return ordered


def open_database(db: str | None = None, *, durable: bool = True) -> Database:
    """The configured database (--db, $QUEUECTL_DB or the default), its schema current."""
    database = Database(resolve_url(db), durable=durable)
    try:
        schema.ensure(database)
    except BaseException:
        database.dispose()
        raise
    return database


class Store:
    """One process's handle on the queue's database. Never shared across fork."""

    def __init__(self, db: Database):
        self.db = db

    @classmethod
    def open(cls, url: str, *, durable: bool = True, one_connection: bool = False, migrate: bool = True) -> Store:
        """Open `url` with its schema at this queuectl's head (migrated if needed;
        a worker, forked by a supervisor that did that, skips the look: migrate=False).
        durable=False: commits need not survive a power cut (workers; see dialect).
        one_connection: this process's threads share one connection (a worker)."""
        db = Database(url, durable=durable, one_connection=one_connection)
        if not migrate:
            return cls(db)
        try:
            schema.ensure(db)
        except BaseException:
            db.dispose()
            raise
        return cls(db)

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def display_url(self) -> str:
        """The URL with its secrets masked: for logs, titles and errors."""
        return self.db.display_url

    def close(self) -> None:
        self.db.dispose()

    def drop_connections(self) -> None:
        """Close pooled connections (reopened on next use): before a fork, so that no
        database descriptor crosses into the child."""
        self.db.engine.dispose()

    # --- jobs ------------------------------------------------------------------------

    def enqueue(self, specs: list) -> list[dict]:
        """Insert jobs all or nothing; their rows as dicts."""
        return jobs.enqueue(self.db, specs)

    def job(self, job_id: str) -> dict:
        """A job, live or dead, as the JSON object the CLI prints; NotFound otherwise."""
        return jobs.to_dict(jobs.get(self.db, job_id))

    def job_output(self, job_id: str) -> tuple[str, int | None]:
        """(output, characters it had in all) of the job's running or last attempt."""
        job = jobs.get(self.db, job_id)
        return job.output or "", job.output_size

    def attempt(self, job_id: str, number: int) -> dict:
        """Attempt `number` of a job, with its output; NotFound if there is none."""
        job_id = jobs.get(self.db, job_id).id  # NotFound for the job first
        with self.db.read() as conn:
            return jobs.to_dict(attempts.one(conn, job_id, number))

    def history(self, job_id: str) -> list[dict]:
        """A job's attempts, oldest first, as JSON objects: without their outputs (see
        attempt()), with their duration in seconds."""
        with self.db.read() as conn:
            rows = attempts.of_job(conn, job_id)
        found = []
        for row in rows:
            took = (row.finished_at - row.started_at).total_seconds() if row.started_at and row.finished_at else None
            entry = jobs.to_dict(row)
            entry.pop("has_own_output", None)
            entry["duration"] = None if took is None else round(took, 3)
            found.append(entry)
        return found

    def progress(self, job_id: str):
        """What `logs --follow` looks at: the job's state, runs, output and output_size."""
        with self.db.read() as conn:
            return jobs.progress(conn, job_id)

    def list_jobs(self, state: JobState | None = None, queue: str | None = None, limit: int | None = None, *,
                  states: tuple[JobState, ...] | None = None, since: datetime | None = None, last: int | None = None,
                  schedule: str | None = None) -> list[dict]:
        """Jobs in enqueue order, without their output (see jobs.listing for the filters)."""
        rows = jobs.listing(self.db, state=state, queue=queue, limit=limit, states=states, since=since, last=last, schedule=schedule)
        return [jobs.to_dict(row) for row in rows]

    def browse(self, filters: JobFilter, *, before: int | None = None, limit: int = 50) -> tuple[list[dict], int | None]:
        """A page of jobs matching `filters`, newest first, without their output, and the
        cursor of the next (older) page, None on the last (see store/browse.py)."""
        with self.db.read() as conn:
            rows, cursor = browse.page(conn, self.db.dialect, filters, before=before, limit=limit)
        return [jobs.to_dict(row) for row in rows], cursor

    def matching_ids(self, filters: JobFilter, limit: int = 1000, *, before: int | None = None) -> tuple[list[str], int | None]:
        """Ids of up to `limit` jobs matching `filters`, newest first, below the cursor
        `before`, and the cursor of the rest (None: no more): bulk actions act on a
        filter's matches a batch at a time through retry, cancel, delete, dlq_*."""
        with self.db.read() as conn:
            return browse.matching_ids(conn, self.db.dialect, filters, before=before, limit=limit)

    def job_total(self) -> int:
        """How many jobs the database holds, live and dead, from the counters (no scan)."""
        with self.db.read() as conn:
            return sum(counts.job_counts(conn).values())

    def job_dependencies(self, job_id: str) -> tuple[list[dict], list[dict]]:
        """A job's dependencies and its dependents: [{id, kind, state}] each."""
        with self.db.read() as conn:
            return dependencies.of_job(conn, job_id)

    def cancel(self, ids: list[str] | None = None, *, queue: str | None = None, state: JobState | None = None) -> tuple[list[str], list[str]]:
        """Cancel jobs (see store/control.py): (cancelled at once, running ones asked to stop)."""
        with self.db.begin() as conn:
            done = control.cancel(conn, ids, queue=queue, state=state, now=utcnow())
            self._wake(conn)
            return done

    def _wake(self, conn) -> None:
        """Wake idle workers if this transaction unblocked jobs."""
        if dependencies.woke(conn):
            self.db.dialect.notify(conn)

    def retry(self, ids: list[str] | None = None, *, state: JobState | None = None, with_dependents: bool = False) -> list[str]:
        """Terminal jobs (named, or all of `state`) back to pending, attempts reset."""
        with self.db.begin() as conn:
            retried = control.retry(conn, ids, state=state, now=utcnow(), with_dependents=with_dependents)
            dependencies.woke(conn)
            if retried:
                self.db.dialect.notify(conn)
            return retried

    def delete(self, ids: list[str] | None = None, *, state: JobState | None = None, finished_before: datetime | None = None) -> list[str]:
        """Remove terminal jobs for good (named, or of `state` finished before a time)."""
        with self.db.begin() as conn:
            return control.delete(conn, ids, state=state, finished_before=finished_before)

    def outcomes(self, ids: list[str]) -> dict[str, tuple[str, int | None, str | None]]:
        """(state, exit code, last error) of each of `ids` that exists, live or dead."""
        with self.db.read() as conn:
            return control.outcomes(conn, ids)

    def active(self, queue: str | None = None) -> list[str]:
        """Ids of the jobs not finished yet, in enqueue order."""
        with self.db.read() as conn:
            return control.active(conn, queue)

    def still_running(self, ids: list[str]) -> list[str]:
        with self.db.read() as conn:
            return control.still_running(conn, ids)

    def dlq_retry(self, ids: list[str] | None, with_dependents: bool = False) -> list[str]:
        return dlq.retry(self.db, ids, with_dependents=with_dependents)

    def dlq_purge(self, ids: list[str] | None) -> list[str]:
        return dlq.purge(self.db, ids)

    # --- retention -------------------------------------------------------------------

    def prune(self, retain: dict[str, float | None], now: datetime | None = None) -> dict[str, int]:
        """Delete finished jobs older than `retain` gives for their kind (seconds, or
        None to keep; a kind left out follows its retain-* config key), batch after
        batch until none is left (see store/retention.py); how many of each kind."""
        now = now or utcnow()
        total = dict.fromkeys(retention.KINDS, 0)
        with self.db.read() as conn:
            cfg = config.load(conn)
        seconds = {kind: retain[kind] if kind in retain else cfg[key] for kind, key in retention.CONFIG_KEYS.items()}
        cut = retention.cutoffs(seconds, now)
        with self.db.begin() as conn:
            tallies.roll_up(conn, now)
        while True:
            with self.db.begin() as conn:
                pruned = retention.prune_batch(conn, self.db.dialect, cut, wait=True)
            assert pruned is not None  # wait=True
            for kind, count in pruned.items():
                total[kind] += count
            if sum(pruned.values()) < retention.BATCH:
                return total

    def prune_batch(self, cfg: dict, now: datetime | None = None) -> dict[str, int] | None:
        """A supervisor's pass: one batch (at most retention.BATCH jobs) past the
        retain-* keys of `cfg`; None if another pruner is at work."""
        now = now or utcnow()
        with self.db.begin() as conn:
            tallies.roll_up(conn, now)  # in its own transaction: it needs no prune lock
        cut = retention.configured(cfg, now)
        if all(before is None for before in cut.values()):
            return dict.fromkeys(retention.KINDS, 0)
        with self.db.begin() as conn:
            return retention.prune_batch(conn, self.db.dialect, cut, wait=False)
    # --- schedules -------------------------------------------------------------------

    def add_schedule(self, name: str, *, cron: str, tz: str, catch_up: str, overlap: str, spec, next_run: datetime,
                     replace: bool = False) -> bool:
        """Define (or with `replace` redefine) a schedule; whether it replaced one."""
        with self.db.begin() as conn:
            return schedules.add(conn, name=name, cron=cron, tz=tz, catch_up=catch_up, overlap=overlap, spec=spec,
                                 next_run=next_run, now=utcnow(), replace=replace)

    def schedules(self) -> list[dict]:
        """Every schedule, by name, as the JSON object the CLI prints."""
        with self.db.read() as conn:
            return [schedule_dict(row) for row in schedules.listing(conn)]

    def schedule(self, name: str) -> dict:
        with self.db.read() as conn:
            return schedule_dict(schedules.get(conn, name))

    def remove_schedule(self, name: str) -> None:
        with self.db.begin() as conn:
            schedules.remove(conn, name)

    def pause_schedule(self, name: str) -> bool:
        with self.db.begin() as conn:
            return schedules.pause(conn, name, utcnow())

    def resume_schedule(self, name: str, now: datetime | None = None) -> bool:
        """Resume from its first tick after now (the ticks of the pause are not run)."""
        from queuectl import cron

        now = now or utcnow()
        with self.db.begin() as conn:
            row = schedules.get(conn, name)
            return schedules.resume(conn, name, cron.next_tick(row.cron, row.tz, now))

    def run_schedule(self, name: str, now: datetime | None = None) -> str:
        """Enqueue one run of a schedule now; the job's id."""
        with self.db.begin() as conn:
            return schedules.run_now(conn, self.db.dialect, name, now or utcnow())

    def due_schedules(self, now: datetime, limit: int) -> list:
        """Schedules whose next tick is at or before `now` (name, cron, tz, catch_up, next_run)."""
        with self.db.read() as conn:
            return schedules.due(conn, now, limit)

    def first_schedule_due(self) -> datetime | None:
        """When the first unpaused schedule's next tick comes (None: no schedule)."""
        with self.db.read() as conn:
            return schedules.first_due(conn)

    def fire_schedule(self, name: str, *, tick: datetime, next_run: datetime, run: bool, missed: int,
                      now: datetime | None = None) -> tuple[str, str | None] | None:
        """Fire one tick, exactly once across supervisors (see schedules.fire)."""
        with self.db.begin() as conn:
            return schedules.fire(conn, self.db.dialect, name, tick=tick, next_run=next_run, run=run, missed=missed, now=now or utcnow())

    # --- config ----------------------------------------------------------------------

    def config(self) -> dict:
        """Every config key's typed value."""
        with self.db.read() as conn:
            return config.load(conn)

    def describe_config(self) -> list[dict]:
        with self.db.read() as conn:
            return config.describe(conn)

    def config_value(self, name: str):
        with self.db.read() as conn:
            return config.get(conn, name)

    def set_config(self, name: str, value: str) -> tuple[str, int | float | None]:
        with self.db.begin() as conn:
            return config.set_value(conn, name, value)

    def unset_config(self, name: str) -> tuple[str, int | float | None]:
        """Back to its default: (key, default value)."""
        with self.db.begin() as conn:
            key = config.unset(conn, name)
            return key, config.get(conn, key)

    # --- status ----------------------------------------------------------------------

    def status(self, now: datetime, finished: int = 0) -> tuple[dict[str, int], object, list, dict[str, dict], list]:
        """Counts per state (with "ready": pending jobs due by `now`), the next job
        scheduled after `now`, the worker rows, the figures per queue and the
        `finished` jobs that ended last (see counts.recently_finished), all one read."""
        with self.db.read() as conn:
            return (counts.job_counts(conn, now), counts.next_scheduled(conn, now), workers.worker_rows(conn),
                    counts.per_queue(conn, now), counts.recently_finished(conn, finished) if finished else [])

    def queues(self, now: datetime) -> dict[str, dict]:
        """Per queue: ready, scheduled, running, failed, dead, oldest_ready, paused,
        max_running (see counts.per_queue)."""
        with self.db.read() as conn:
            return counts.per_queue(conn, now)

    # --- metrics (queuectl/metrics.py) -------------------------------------------------

    def throughput(self, now: datetime, minutes: int = 60, queue: str | None = None) -> list[dict]:
        """One dict per minute, oldest first: the `minutes` minutes ending with the one
        of `now`, each {"minute": aware UTC datetime, and a count per outcome
        (states.Outcome: enqueued, completed, failed, timed_out, dead, cancelled)}, 0
        where nothing happened; of one queue, or all. One indexed read (job_tallies)."""
        last = tallies.minute_of(now)
        first = last - timedelta(minutes=minutes - 1)
        with self.db.read() as conn:
            found = tallies.per_minute(conn, first, queue)
        names = [outcome.value for outcome in Outcome]
        series = []
        for n in range(minutes):
            minute = first + timedelta(minutes=n)
            series.append({"minute": minute, **{name: found.get((minute, name), 0) for name in names}})
        return series

    def tallies(self) -> dict[tuple[str, str], int]:
        """{(queue, outcome): how many since the database began counting} (migration 0010)."""
        with self.db.read() as conn:
            return tallies.totals(conn)

    def roll_up_tallies(self, now: datetime | None = None) -> int:
        """Fold tallies older than a day into their totals (see tallies.roll_up); rows folded."""
        with self.db.begin() as conn:
            return tallies.roll_up(conn, now or utcnow())

    def recent_timings(self, now: datetime, window_seconds: float = 900, limit: int = 5000) -> dict[str, dict]:
        """Per queue, {"durations": [...], "waits": [...]} (seconds, sorted) of the jobs
        completed in the `window_seconds` before `now`, the last `limit` of them at most
        (see counts.timings for what each measures)."""
        with self.db.read() as conn:
            rows = counts.recently_completed(conn, now - timedelta(seconds=window_seconds), limit)
        return counts.timings(rows)

    def metrics(self, now: datetime, window_seconds: float = 900, limit: int = 5000) -> dict:
        """Everything `queuectl metrics` exposes, in one read (one snapshot on
        PostgreSQL), in a number of statements that does not grow with queues or
        workers: "queues" (counts.per_queue), "blocked" ({queue: blocked jobs}), "tallies" (totals), "timings"
        (recent_timings), "workers" (the worker rows), "schedules" ({"active": n,
        "paused": n})."""
        with self.db.read() as conn:
            return {
                "queues": counts.per_queue(conn, now),
                "blocked": counts.blocked_per_queue(conn),
                "tallies": tallies.totals(conn),
                "timings": counts.timings(counts.recently_completed(conn, now - timedelta(seconds=window_seconds), limit)),
                "workers": workers.worker_rows(conn),
                "schedules": schedules.by_state(conn),
            }

    # --- the worker runtime ----------------------------------------------------------

    def register(self, **row) -> dict:
        """A new supervisor or worker row (see workers.register); the config it starts with."""
        with self.db.begin() as conn:
            workers.register(conn, now=utcnow(), **row)
            return config.load(conn)

    def work_due(self, queues: tuple[str, ...], now: datetime | None = None) -> bool:
        """A read-only look for a claimable job, before taking the write lock to claim."""
        with self.db.read() as conn:
            return transitions.work_due(conn, queues, now or utcnow())

    def drained(self, queues: tuple[str, ...], now: datetime | None = None) -> bool:
        """Nothing due, running or failed awaiting a retry (burst mode's end)."""
        with self.db.read() as conn:
            return transitions.drained(conn, queues, now or utcnow())

    def first_due(self, queues: tuple[str, ...]) -> datetime | None:
        """When the first job a claim could take comes (or came) due; None if there is
        none. An idle worker that waits to be woken asks it instead of work_due: one
        read tells whether to claim now, and else when to wake by itself (a delayed
        job, a retry's backoff)."""
        with self.db.read() as conn:
            return transitions.first_due(conn, queues)

    def wake_socket(self, name: str):
        """A pool's local wake-up socket (store/wakeup.py), bound under `name`; None
        on PostgreSQL (LISTEN) or where it cannot be bound."""
        return self.db.dialect.wake_socket(name)

    @property
    def wake_is_relayed(self) -> bool:
        """Whether a pool's wake-up socket is only useful with a LISTEN connection
        relayed into it (PostgreSQL), rather than poked by the enqueuers (SQLite)."""
        return self.db.dialect.wake_is_relayed

    def listener(self):
        """A LISTEN connection for new work where the backend has one (to
        $QUEUECTL_LISTEN_DB if set), else None."""
        from queuectl.store.database import listen_url

        return self.db.dialect.listener(self.db.url, listen_url())

    def claim(self, worker_id: str, queues: tuple[str, ...], now: datetime | None = None):
        """The next due job, now running under `worker_id`, or None."""
        in_statement = self.db.dialect.slot_in_claim
        for _ in range(_CLAIM_TRIES):
            with self.db.write_one() as conn:  # on PostgreSQL one statement
                job = transitions.claim(conn, worker_id, queues or None, now or utcnow(), slot_in_statement=in_statement)
            # On PostgreSQL a claim picks from its snapshot and may then lose a queue's
            # last slot to another host's claim: it claims nothing, while other work may
            # be due. Try again at once, rather than idle for a poll-interval.
            if job is not None or not in_statement or not self.work_due(queues, now):
                return job
        return None

    def complete_and_claim(self, job_id: str, worker_id: str, *, output: str | None, queues: tuple[str, ...], now: datetime | None = None,
                           output_size: int | None = None):
        """Success, and the next job claimed in the same write: (still owned?, next job or None).
        output_size: characters the job printed in all (default: len(output))."""
        return self.db.dialect.complete_and_claim(self.db, job_id, worker_id, output=output, output_size=output_size, now=now or utcnow(),
                                                  queues=tuple(queues) if queues else None)

    def record(self, job_id: str, worker_id: str, *, stopped: bool, error: str | None, exit_code: int | None,
               output: str | None, cfg: dict, claim_next: bool, queues: tuple[str, ...], now: datetime | None = None,
               cancelled: bool = False, output_size: int | None = None):
        """An attempt's outcome off the hot path (see transitions.record), and unless
        told otherwise the next job in the same transaction: (new state or None, next job)."""
        now = now or utcnow()
        with self.db.begin() as conn:
            state = transitions.record(
                conn, job_id, worker_id, stopped=stopped, error=error, exit_code=exit_code, output=output, now=now, cfg=cfg,
                cancelled=cancelled, output_size=output_size,
            )
            if state == JobState.PENDING.value:  # given back unrun: another worker may take it at once
                dependencies.woke(conn)
                self.db.dialect.notify(conn)
            else:
                self._wake(conn)
            return state, transitions.claim_after_ending(conn, worker_id, queues or None, now) if claim_next else None

    def stream_output(self, job_id: str, worker_id: str, *, output: str, output_size: int) -> bool:
        """A running job's output so far, from its owner; False if it owns it no more."""
        with self.db.write_one() as conn:
            return transitions.stream_output(conn, job_id, worker_id, output=output, output_size=output_size)

    def slots_heartbeat(self, changed: list[tuple[str, dict]], unchanged: list[str], running: list[tuple[str, str]]) -> tuple[set[str], dict, set[str]]:
        """One heartbeat for the slots of a worker process, in one transaction:
        `changed` [(worker id, the fields to write)] for slots whose row has news,
        `unchanged` the ids of the others (one statement for them all), `running`
        [(job id, worker id)] of the slots that run a job. (The ids still alive, the
        current config, the running jobs `cancel` asked to stop.)"""
        now = utcnow()
        alive: set[str] = set()
        with self.db.begin() as conn:
            if unchanged:
                alive.update(workers.heartbeat_many(conn, unchanged, now))
            for worker_id, fields in changed:
                if workers.heartbeat(conn, worker_id, now, **fields):
                    alive.add(worker_id)
            running = [(job_id, worker_id) for job_id, worker_id in running if worker_id in alive]
            cancelled = transitions.cancels_requested(conn, running) if running else set()
            return alive, config.load(conn), cancelled

    def heartbeat(self, process_id: str, **fields) -> tuple[bool, dict]:
        """Refresh a process's row: (still alive?, current config). False means a reaper
        declared it dead."""
        with self.db.begin() as conn:
            alive = workers.heartbeat(conn, process_id, utcnow(), **fields)
            return alive, config.load(conn)

    def supervisor_heartbeat(self, supervisor_id: str, state: WorkerState) -> tuple[StopMode | None, dict]:
        """A supervisor's beat: (the stop asked of it through the database, current config).
        Also forgets rows of processes that ended long ago. DeclaredDead if a reaper
        has declared this supervisor dead: it must stop, unseen by `worker stop`."""
        now = utcnow()
        with self.db.begin() as conn:
            if not workers.heartbeat(conn, supervisor_id, now, state=state.value):
                raise DeclaredDead(f"supervisor {supervisor_id} was declared dead by a reaper (silent for longer than heartbeat-timeout)")
            request = workers.stop_request(conn, supervisor_id)
            cfg = config.load(conn)
            workers.prune(conn, now)
        return (StopMode(request) if request else None), cfg

    def worker_stopped(self, worker_id: str, *, unstarted_job: str | None, processed: int, failed: int) -> None:
        """A worker's clean exit: a job it claimed but never started is given back."""
        now = utcnow()
        with self.db.begin() as conn:
            if unstarted_job is not None and transitions.release(conn, unstarted_job, worker_id, now=now):
                self.db.dialect.notify(conn)  # another worker may take it at once
            workers.heartbeat(conn, worker_id, now, processed=processed, failed=failed)
            workers.end(conn, worker_id, WorkerState.STOPPED, now)

    def end(self, process_id: str, state: WorkerState, *, cfg: dict, error: str | None = None) -> list[tuple[str, str]]:
        """End a process's row (stopped or dead) and charge each job it still held a
        failed attempt; [(job id, new state)]."""
        now = utcnow()
        with self.db.begin() as conn:
            workers.end(conn, process_id, state, now)
            recovered = transitions.recover(conn, process_id, now=now, cfg=cfg, **({"error": error} if error else {}))
            self._wake(conn)
        if recovered:
            self.recount_queues()
        return recovered

    def suspects(self, host: str, stale_before: datetime) -> list:
        """Live rows that may be dead: on `host` (pids to check) or silent since `stale_before`."""
        with self.db.read() as conn:
            return workers.suspects(conn, host=host, stale_before=stale_before)

    def held(self, worker_id: str) -> list[str]:
        with self.db.read() as conn:
            return transitions.held(conn, worker_id)

    def declare_dead(self, process_id: str, *, silent_since: datetime | None, cfg: dict) -> list[tuple[str, str]] | None:
        """Declare a process dead and recover its jobs; None if another reaper got there
        first or (with `silent_since`) it beat again after that time."""
        now = utcnow()
        with self.db.begin() as conn:
            if not workers.end(conn, process_id, WorkerState.DEAD, now, silent_since=silent_since):
                return None
            recovered = transitions.recover(conn, process_id, now=now, cfg=cfg)
            self._wake(conn)
        if recovered:
            self.recount_queues()  # after the recovery: see queues.py on lock order
        return recovered

    # --- queue controls ---------------------------------------------------------------

    def pause_queue(self, name: str, paused: bool) -> bool:
        """Pause (or resume) a queue on every host; whether it was paused before."""
        with self.db.begin() as conn:
            before = queue_controls.set_paused(conn, name, paused, utcnow())
            if not paused and before:
                self.db.dialect.notify(conn)  # idle workers may claim from it again
            return before

    def limit_queue(self, name: str, limit: int | None) -> int | None:
        """Set (None: clear) a queue's limit of running jobs across all hosts; the old limit."""
        with self.db.begin() as conn:
            before = queue_controls.set_limit(conn, name, limit, utcnow())
            self.db.dialect.notify(conn)
        self.recount_queues([name])
        return before

    def recount_queues(self, names: list[str] | None = None) -> None:
        """Repair the running counters of controlled queues (see queues.recount): its
        own transaction, after what it must see has committed."""
        with self.db.begin() as conn:
            queue_controls.recount(conn, names)

    def queue_controls(self) -> dict[str, dict]:
        with self.db.read() as conn:
            return queue_controls.controls(conn)

    def live_supervisors(self) -> list:
        with self.db.read() as conn:
            return workers.live_supervisors(conn)

    def request_stop(self, mode: StopMode, running: Callable[[object], bool]) -> list:
        """Flag every live supervisor for which running(row) holds to stop; those rows."""
        with self.db.begin() as conn:
            chosen = [row for row in workers.live_supervisors(conn) if running(row)]
            if chosen:
                workers.request_stop(conn, [row.id for row in chosen], mode.value)
            return chosen
