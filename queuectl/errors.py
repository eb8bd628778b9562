"""One exception hierarchy; the CLI maps it to exit codes (see cli/main.py)."""


class QueuectlError(Exception):
    """An operational error (exit 1)."""

    exit_code = 1

    def __init__(self, message: str | None = None):
        super().__init__(message or self.__doc__)


class ValidationError(QueuectlError):
    """Invalid input (exit 2)."""

    exit_code = 2


class NotFound(QueuectlError):
    """No such job or schedule."""


class DuplicateId(QueuectlError):
    """A job with this id already exists."""

    def __init__(self, message: str | None = None, job_id: str | None = None):
        super().__init__(message)
        self.job_id = job_id


class StillRunning(QueuectlError):
    """`worker stop --timeout` ran out with supervisors still running."""


class DeclaredDead(QueuectlError):
    """This process was declared dead by a reaper (it was silent for longer than
    heartbeat-timeout); its jobs may already run elsewhere."""


class DatabaseError(QueuectlError):
    """The database could not be used."""


class ConnectionsExhausted(DatabaseError):
    """The database server refused a connection: all it allows are in use (it passes
    when some are closed)."""


class StatementFailed(QueuectlError):
    """The database refused a statement for a reason other than being unusable (a
    schema changed by hand, a constraint): a bug or tampering, never retried."""


class SchemaTooNew(DatabaseError):
    """The database was created by a newer queuectl; upgrade queuectl first."""


class KeyTaken(QueuectlError):
    """A unique key is held by another active job."""

    def __init__(self, message: str, *, key: str, holder: str | None, index: int | None = None, holder_index: int | None = None):
        super().__init__(message)
        self.key = key
        self.holder = holder  # the active job holding the key (None: unknown, a race lost)
        self.index = index  # of an enqueue's specs: the one refused
        self.holder_index = holder_index  # of an enqueue's specs: the earlier one holding the key


class DuplicateSchedule(QueuectlError):
    """A schedule with this name already exists."""
