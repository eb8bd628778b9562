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
    """Cancelled by `queuectl cancel` before it could finish; never retried."""

    @classmethod
    def parse(cls, text: str) -> "JobState":
        """Parse a state typed by a user; 'processing' is an alias of running."""
        from queuectl.errors import ValidationError

        value = text.strip().lower()
        if value == "processing":
            value = "running"
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(s.value for s in cls)
            raise ValidationError(f"unknown state {text!r} (valid: {valid}, processing)") from None


# States a worker may claim (failed ones only once run_at has come).
CLAIMABLE = (JobState.PENDING.value, JobState.FAILED.value)
# States a job never leaves by itself.
TERMINAL = (JobState.COMPLETED.value, JobState.DEAD.value, JobState.CANCELLED.value)
# States of a job not finished yet: waiting, awaiting a retry or running. A
# schedule with --overlap skip fires no tick while one of its jobs is in one
# (store/schedules.py); a state added later that is neither claimable nor
# terminal (such as `blocked`) belongs here.
ACTIVE = (*CLAIMABLE, JobState.RUNNING.value)


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
