"""The man page: the parser (the options, from cli/parser.py) plus the sections a
man page has beyond them, which argparse-manpage appends from `parser._manpage`.

argparse-manpage loads this file on its own at build time (setup.cfg,
[build_manpages]), outside any installed queuectl, so manual_parser() first puts the
source tree it is in on sys.path. What it imports from there needs nothing beyond
the standard library (tests/test_manpage.py checks): the config keys, the job states
and the DURATION and size grammars are read from the modules that define them, so
the page cannot drift from the code.
"""

import os
import re
import sys

SHORT_DESCRIPTION = "a durable background job queue for shell commands"

EXAMPLES = (
    ("queuectl enqueue 'make test'", "Add a job; any worker runs it under /bin/sh."),
    ("queuectl enqueue --id backup --delay 1h30m -- ./backup.sh --full", "A named job, due in an hour and a half; `--` ends enqueue's options."),
    ("queuectl enqueue --file jobs.txt", "One job per line (a command or a JSON job spec), all or nothing."),
    ("queuectl enqueue --wait make test", "Wait for the job, print its output and exit with its exit code."),
    ("queuectl enqueue --unique-key sync --on-conflict skip ./sync.sh", "Enqueue unless a sync job is still pending, failed or running."),
    ("queuectl worker start --concurrency 4 --detach", "Four jobs at once in the background; the pid and log file are printed."),
    ("queuectl status", "Job counts per state, the queues and the workers."),
    ("queuectl list --state failed,dead --since 2h", "The jobs that failed or died in the last two hours."),
    ("queuectl wait build-7 --timeout 10m", "Block until job build-7 has finished, for at most ten minutes."),
    ("queuectl queue limit media 2", "At most two jobs of queue media run at once, across all hosts (queue pause media: none)."),
    ("queuectl dlq retry --all", "Give every dead job a fresh start."),
    ("queuectl prune --completed-older-than 1d", "Delete completed jobs that ended more than a day ago (and cancelled ones past retain-cancelled)."),
    ("queuectl schedule add nightly --cron '30 2 * * *' --tz Europe/Berlin -- ./backup.sh",
     "Enqueue ./backup.sh at 02:30 Berlin time every day; running supervisors fire it, once per tick across all hosts."),
    ("queuectl config set max-retries 5", "Change a setting for every process that uses this database."),
    ("queuectl worker stop", "Let running jobs finish, then stop the workers of this database."),
    ("queuectl completion bash > ~/.local/share/bash-completion/completions/queuectl", "Install tab completion for bash."),
)

ENVIRONMENT = (
    ("QUEUECTL_DB", "The database when --db is not given: a SQLite file path or a SQLAlchemy URL. Empty counts as unset."),
    ("QUEUECTL_BUSY_TIMEOUT", "Seconds a SQLite writer waits for the database lock before it fails (more than 0, at most 86400; default 60)."),
    ("QUEUECTL_HOSTNAME", "The host identity of `worker start` (as --hostname; default: this machine's hostname)."),
    ("QUEUECTL_LISTEN", "0: PostgreSQL workers poll instead of waiting on LISTEN/NOTIFY."),
    ("QUEUECTL_LISTEN_DB", "PostgreSQL: the URL idle workers LISTEN on when the database URL goes through PgBouncer in "
                           "transaction mode (as `worker start --listen-db`)."),
    ("QUEUECTL_WEB_TOKEN", "The token `queuectl web` requires of every request when --token is not given (empty counts as unset; at least 16 characters)."),
    ("NO_COLOR", "Set and not empty: no colour with --color auto (the default)."),
    ("XDG_DATA_HOME", "Where the default database lives: $XDG_DATA_HOME/queuectl (default ~/.local/share/queuectl)."),
    ("XDG_RUNTIME_DIR", "Where workers publish their jobs' process groups: $XDG_RUNTIME_DIR/queuectl."),
    ("XDG_STATE_HOME", "Without XDG_RUNTIME_DIR, that directory is $XDG_STATE_HOME/queuectl/run (default ~/.local/state/queuectl/run)."),
    ("QUEUECTL_JOB_ID, QUEUECTL_ATTEMPT", "Set for each job's command: its job id, and its attempt (1 for the first)."),
)

FILES = (
    ("$XDG_DATA_HOME/queuectl/queue.db", "The default database (~/.local/share/queuectl/queue.db); its directory is created 0700 on first use."),
    ("DB.lock", "Beside a SQLite database DB: the lock file its writers queue on (with SQLite's own DB-wal and DB-shm)."),
    ("DB.worker.log", "The log of `worker start --detach` without --log, for a SQLite database DB."),
    ("$XDG_DATA_HOME/queuectl/worker-HOST[_PORT]-DBNAME.log", "The same for a PostgreSQL database: one file per server and database."),
    (
        "$XDG_RUNTIME_DIR/queuectl/",
        "Private to the user (else $XDG_STATE_HOME/queuectl/run): one WORKER.pgid file per running worker, naming its job's "
        "process group, so that whoever outlives a dead worker can kill the job it left behind.",
    ),
)

# Every JobState must have one: a state missing here stops the man page build.
STATE_MEANINGS = {
    "pending": "Waiting to run: due now (ready) or at its run_at time (scheduled), until a worker claims it.",
    "running": "Claimed by a worker, its command running (`processing` is accepted as an alias in --state).",
    "failed": "Its last attempt failed (non-zero exit, timeout, or a command that could not start); a retry is due after a backoff.",
    "completed": "Its command exited 0. Kept until deleted, or pruned once older than config retain-completed (7 days by default).",
    "dead": "Out of retries: in the dead-letter queue (`queuectl dlq`), with its last error, exit code and output; "
            "kept until purged unless config retain-dead is set.",
    "cancelled": ("Cancelled with `queuectl cancel`, or because a job it waited for (`enqueue --after`) ended dead or cancelled "
                  "(last_error names it); never retried (`queuectl retry` starts it afresh); pruned after config retain-cancelled."),
    "blocked": ("Waiting for the jobs named by `enqueue --after` / `--after-any` to end; never claimed. Pending once they have "
                "(every --after job completed, every --after-any job ended), cancelled if an --after job ends dead or cancelled."),
}


def manual_parser():
    """build_parser() with the man page's one-line description and extra sections."""
    if not __package__:  # loaded as a lone file (runpy) by argparse-manpage
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from queuectl.cli.parser import build_parser

    parser = build_parser()
    parser.man_short_description = SHORT_DESCRIPTION  # type: ignore[attr-defined]
    parser._manpage = sections()  # type: ignore[attr-defined]
    return parser


def sections() -> list[dict[str, str]]:
    """The extra sections, in order, as argparse-manpage takes them: roff text under a heading."""
    from queuectl import config, timeutil, waiting
    from queuectl.errors import QueuectlError, ValidationError
    from queuectl.states import JobState

    exit_status = (
        ("0", "Success."),
        (str(QueuectlError.exit_code), "An operational error: no such job, a duplicate id, the database unreachable or unusable, "
                                        "`worker stop --timeout` ran out."),
        (str(ValidationError.exit_code), "A usage or validation error: a bad option, bad JSON, a bad value."),
        ("3", "`wait`: a job ended dead or cancelled. `enqueue --wait`: the job ended without an exit code (cancelled, lost)."),
        (str(waiting.WaitTimedOut.exit_code), "`wait --timeout` ran out, as timeout(1)."),
        ("130", "Interrupted (Ctrl-C)."),
    )
    keys = [(f"{key.name} (default {key.default})", key.help) for key in config.KEYS.values()]
    return [
        {"heading": "EXAMPLES", "content": _items(EXAMPLES)},
        {"heading": "JOB STATES", "content": _items([(s.value, STATE_MEANINGS[s.value]) for s in JobState])},
        {"heading": "CONFIG KEYS", "content": _paragraph(
            "Stored in the database and shared by every process that uses it: `queuectl config list|get|set|unset`. "
            "Keys take hyphens or underscores.",
        ) + _items(keys)},
        {"heading": "DURATIONS AND SIZES", "content": _paragraph(
            f"A DURATION (--delay, --timeout, --older-than, --since, a job spec's delay and timeout, duration config keys; "
            f"the prune flags and retain-* keys also take never) "
            f"is {timeutil.DURATION_FORMS}; not more than {timeutil.MAX_SECONDS // 86400} days. "
            f"A size (output-limit) is {config.SIZE_FORMS}. "
            "A TIMESTAMP is ISO 8601, UTC unless it has an offset, e.g. 2026-01-01T09:00:00Z.",
        )},
        {"heading": "ENVIRONMENT", "content": _items(ENVIRONMENT)},
        {"heading": "FILES", "content": _items(FILES)},
        {"heading": "EXIT STATUS", "content": _items(exit_status) + _paragraph("`enqueue --wait` exits with its job's own exit code.")},
    ]


def _items(pairs) -> str:
    """A tagged paragraph per (term, text): the term in bold, the text indented below."""
    return "".join(f".TP\n\\fB{_roff(term)}\\fR\n{_roff(text)}\n" for term, text in pairs)


def _paragraph(text: str) -> str:
    return f".PP\n{_roff(text)}\n"


def _roff(text: str) -> str:
    """text as roff: backslashes and hyphens escaped (a bare '-' may print as a hyphen
    that cannot be pasted into a shell), `code` in bold, no line starting a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"`([^`]*)`", r"\\fB\1\\fR", text)
    return "\\&" + text if text.startswith((".", "'")) else text
