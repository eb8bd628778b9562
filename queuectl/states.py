"""Job and worker states, stored as their string values."""

import enum


class JobState(str, enum.Enum):
    PENDING = "pending"
    """Waiting for its run_at time and a free worker."""
    RUNNING = "running"
    """Claimed by a worker (worker_id says which); its command is running."""
    FAILED = "failed"
    """The last attempt failed; a retry is scheduled at run_at."""
    COMPLETED = "completed"
    """Exited 0. Kept as history until purged."""
    DEAD = "dead"
    """Out of retries; the job lives in dead_jobs (the DLQ)."""
    CANCELLED = "cancelled"
    """Cancelled by `queuectl cancel` before it could finish, or because a job it
    waited for (`enqueue --after`) ended dead or cancelled; never retried."""
    BLOCKED = "blocked"
    """Waiting for the jobs it depends on (`enqueue --after`, `--after-any`) to end;
    never claimed (outside the claim index), pending once they have."""

    @classmethod
    def parse(cls, text: str) -> "JobState":
        """Parse a state typed by a user; 'processing' is an alias of running."""
        from queuectl.errors import ValidationError

        value = text.strip().lower()
        if value == ALIAS:
            value = "running"
        try:
            return cls(value)
        except ValueError:
            raise ValidationError(f"unknown state {text!r} (valid: {STATE_NAMES})") from None


# The alias of running that --state (and the dashboard's filter) accepts.
ALIAS = "processing"
# The states as every "unknown state" message names them, the CLI's and the
# dashboard's: the alias is said to be one, not listed as a state of its own. The
# same text as cli/parser.STATES (`--help`), which imports only the standard library.
STATE_NAMES = ", ".join(f"{s.value} (alias {ALIAS})" if s is JobState.RUNNING else s.value for s in JobState)


# States a worker may claim (failed ones only once run_at has come).
CLAIMABLE = (JobState.PENDING.value, JobState.FAILED.value)
# States a job waits in without a worker (cancel takes them at once).
WAITING = (*CLAIMABLE, JobState.BLOCKED.value)
# States of a job not finished yet (cancel, wait): it holds its unique key (see
# store/unique.py: at most one job per key is in one of them, enforced by the partial
# unique index ix_jobs_unique_key), and a schedule with --overlap skip fires no tick
# while one of its jobs is in one (store/schedules.py). A new active state goes here,
# and the unique index's migration with it.
ACTIVE = (*WAITING, JobState.RUNNING.value)
# States a job never leaves by itself.
TERMINAL = (JobState.COMPLETED.value, JobState.DEAD.value, JobState.CANCELLED.value)


class Outcome(str, enum.Enum):
    """What the job tallies count (store/tallies.py; `queuectl metrics`): per queue and
    minute, in the transaction of the change itself. `timed_out` overlaps `failed`
    and `dead`: a timed-out attempt counts as both timed_out and what followed it."""

    ENQUEUED = "enqueued"
    """A job inserted: `enqueue` (each job of a --file too) and each schedule tick's
    job. A retry of a finished or dead job is not a new job and is not counted."""
    COMPLETED = "completed"
    """An attempt exited 0: the job completed."""
    FAILED = "failed"
    """An attempt failed (exit status, signal, timeout, lost worker) and the job will
    be retried."""
    TIMED_OUT = "timed_out"
    """An attempt was killed because it ran past its timeout, whatever followed
    (counted in failed or dead as well)."""
    DEAD = "dead"
    """A job moved to the DLQ: its last allowed attempt failed, or was lost with its
    worker and recovered as failed."""
    CANCELLED = "cancelled"
    """A job cancelled: waiting or running (`cancel`, a cancel that outlived its
    worker), or because a job it waited for (--after) ended dead or cancelled."""


# The error of an attempt killed at its timeout starts with this (worker/runner.py).
TIMEOUT_ERROR = "timed out after"
# The outcomes of a job or attempt that ended (queuectl_jobs_finished_total).
FINISHED_OUTCOMES = tuple(o.value for o in Outcome if o is not Outcome.ENQUEUED)


class WorkerState(str, enum.Enum):
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEAD = "dead"


LIVE_WORKER_STATES = (WorkerState.IDLE.value, WorkerState.BUSY.value, WorkerState.STOPPING.value)


class Role(str, enum.Enum):
    """What a row of the workers table is."""

    SUPERVISOR = "supervisor"
    """A `worker start` process: forks, fences and replaces its workers."""
    WORKER = "worker"
    """One of its worker processes: claims and runs jobs."""


class StopMode(str, enum.Enum):
    """How a pool is asked to stop (signals, Ctrl-C, or `worker stop` through the database)."""

    GRACEFUL = "graceful"
    """Claim nothing more; let running jobs finish."""
    NOW = "now"
    """Kill running jobs and give them back unrun (no attempt charged)."""
