"""The argparse parser. Imports only the standard library, so argparse-manpage can
build the man page from it, and `--help` is instant."""

import argparse
import os

try:
    from queuectl import __version__
except ImportError:  # argparse-manpage loads this file on its own at build time
    __version__ = "unknown"

STATES = "pending, running (alias processing), failed, completed, dead, cancelled"
DB_HELP = (
    "database: a SQLite file path or a SQLAlchemy URL such as postgresql+psycopg://user@host/db "
    "(env QUEUECTL_DB; default $XDG_DATA_HOME/queuectl/queue.db)"
)


# `status --watch` with no INTERVAL redraws this often.
WATCH_INTERVAL = "2s"

# Databases count rows in signed 64 bits; a bigger --limit overflows them.
_MAX_INT64 = 2**63 - 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid whole number {text!r}") from None
    if not 1 <= value <= _MAX_INT64:
        raise argparse.ArgumentTypeError(f"must be from 1 to {_MAX_INT64}, not {value}")
    return value


GLOBAL_AFTER_HELP = "also accepted after the subcommand, where it wins over one given before"

# The shells `queuectl completion` writes a script for (cli/completion.py).
COMPLETION_SHELLS = ("bash", "zsh", "fish")


def _completes(kind: str, action: argparse.Action) -> argparse.Action:
    """Mark an option's value as a path for the completion scripts: kind is "file" or
    "directory". `complete` is shtab's attribute, and a plain string there names one of
    its path completers, so this file still needs nothing outside the standard library."""
    action.complete = kind  # type: ignore[attr-defined]
    return action


class _Parser(argparse.ArgumentParser):
    """Every subcommand's parser also takes the global flags (`queuectl status --db X`)
    and reports its own usage errors.

    Their defaults are SUPPRESS: a subparser copies every attribute it has onto the
    top level's namespace, so one given after the subcommand replaces one given before
    it, and one not given leaves it alone. Unrecognised arguments are refused here,
    with this parser's usage: argparse would hand them up to the top level, whose
    usage says nothing about the subcommand."""

    def __init__(self, *args, global_flags: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._sub = global_flags
        if global_flags:
            _completes("file", self.add_argument(
                "--db", default=argparse.SUPPRESS, metavar="URL_OR_PATH", help="the database, as queuectl --db (" + GLOBAL_AFTER_HELP + ")",
            ))
            self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="as queuectl --debug")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if self._sub and extras:
            self.error("unrecognized arguments: " + " ".join(extras))
        return namespace, extras


def _add_json(parser, default=False) -> None:
    parser.add_argument("--json", action="store_true", default=default, help="print JSON instead of text")


def _enqueue(sub) -> None:
    p = sub.add_parser(
        "enqueue",
        help="add a job (a shell command or a JSON job spec)",
        description=(
            "Add a job. Everything from the first word that is not an option of enqueue is the command, "
            "its own options included (`queuectl enqueue ls -la` runs `ls -la`), so enqueue's options "
            "(and --db, --debug) go before it; `--` also ends them (`queuectl enqueue --queue q -- ls -la`). "
            "One argument is a shell command string; several words are joined as the shell "
            "would quote them; a single argument starting with '{' is a JSON job spec "
            '(keys: id, command, max_retries, priority, run_at, delay, timeout, queue, cwd). '
            "With --file, one JSON spec or plain command per line, all in one transaction; "
            "a file with no jobs in it enqueues nothing and exits 0. "
            "Jobs run under /bin/sh (dash on Debian: no $RANDOM, no [[ ]]); for bash, enqueue bash -c '...'. "
            "DURATION: a number of seconds or amounts with units s, m, h, d, e.g. 90, 90s, 5m, 1h30m, 1.5h, 2d."
        ),
    )
    # REMAINDER: the command's own options (`ls -la`) are not taken for enqueue's.
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND ...", help="shell command, its words, or a JSON job spec (after enqueue's options)")
    _completes("file", p.add_argument("--file", "-f", metavar="PATH", help="enqueue every line of PATH ('-' for stdin), all or nothing"))
    p.add_argument("--id", help="name the job (1-128 of A-Z a-z 0-9 . _ : -, not all digits)")
    p.add_argument("--max-retries", "--retries", dest="max_retries", metavar="N", help="retries after the first attempt (default: config max-retries)")
    p.add_argument("--priority", metavar="N", help="higher runs first (default 0)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--delay", metavar="DURATION", help="run no sooner than DURATION from now (90, 90s, 5m, 1h30m, 1.5h, 2d)")
    when.add_argument("--run-at", dest="run_at", metavar="TIMESTAMP", help="run no sooner than this ISO 8601 time (UTC unless it has an offset)")
    p.add_argument("--timeout", metavar="DURATION", help="kill an attempt after DURATION (default: config job-timeout)")
    p.add_argument("--queue", metavar="NAME", help="queue name (default 'default')")
    _completes("directory", p.add_argument("--cwd", metavar="DIR", help="directory the job runs in (default: the current directory)"))
    p.add_argument(
        "--wait", action="store_true",
        help="wait for the job to finish, print its output and exit with its exit code (3 if it has none: cancelled, lost)",
    )
    _add_json(p)
    p.set_defaults(command_name="enqueue")


def _list(sub) -> None:
    for name in ("list", "jobs"):
        p = sub.add_parser(name, help="list jobs" + (" (alias of list)" if name == "jobs" else ""), description=(
            "List jobs in enqueue order, live and dead. Outputs are left out: see show and logs. "
            "On a terminal with no filter, only the newest 50 (said on stderr); piped or with --json, all of them."
        ))
        p.add_argument("--state", metavar="STATE[,STATE...]", help=f"only jobs in these states, comma-separated ({STATES})")
        p.add_argument("--queue", metavar="Q", help="only jobs of this queue")
        p.add_argument("--since", metavar="DURATION|TIMESTAMP", help="only jobs created since then: a DURATION ago (90s, 5m, 2h, 1d) or an ISO 8601 TIMESTAMP")
        p.add_argument("--last", type=_positive_int, metavar="N", help="the newest N jobs (still shown oldest first)")
        p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N jobs (the oldest)")
        _add_json(p)
        p.set_defaults(command_name="list")


def _show(sub) -> None:
    p = sub.add_parser("show", help="show one job with every field", description="Show one job, live or dead.")
    p.add_argument("id", metavar="ID")
    _add_json(p)
    p.set_defaults(command_name="show")
    p = sub.add_parser("logs", help="print a job's captured output", description=(
        "Print the captured stdout+stderr of a job's running or last attempt, as it was printed (for piping). "
        "Only the last output-limit of each attempt is kept; when more was printed, a line on stderr says how much was cut."
    ))
    p.add_argument("id", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true", help=(
        "print the output as it is produced, attempt after attempt (a line on stderr where each starts and ends), "
        "until the job has finished; exit 0 if it completed, 3 if it ended dead or cancelled"))
    p.add_argument("--attempt", type=_positive_int, metavar="N", help="the output of attempt N (see show) instead of the last one")
    p.set_defaults(command_name="logs")


def _cancel(sub) -> None:
    p = sub.add_parser(
        "cancel",
        help="cancel waiting or running jobs",
        description=(
            "Cancel jobs: a pending or failed job is cancelled at once; a running one is stopped by its worker "
            "(SIGTERM, then SIGKILL after config kill-grace), on any host, within a heartbeat-interval. "
            "Cancelled jobs are never retried. Waits until the running ones have stopped."
        ),
    )
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--queue", metavar="Q", help="every active job of this queue")
    p.add_argument("--state", help="every job in this state (pending, failed, running)")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="return at once, without waiting for running jobs to stop")
    p.set_defaults(command_name="cancel")
    p = sub.add_parser(
        "retry",
        help="run finished jobs again",
        description="Put finished jobs (completed, dead or cancelled) back to pending with the same id, command and options, attempts reset.",
    )
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--state", help="every job in this state (dead, cancelled, completed)")
    p.set_defaults(command_name="retry")
    p = sub.add_parser(
        "delete",
        help="remove finished jobs for good",
        description="Remove finished jobs (completed, dead or cancelled) for good. A waiting or running job must be cancelled first.",
    )
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--state", help="every job in this state (completed, dead, cancelled)")
    p.add_argument("--older-than", dest="older_than", metavar="DURATION", help="with --state: only jobs finished longer ago than DURATION (90s, 5m, 2h, 7d)")
    p.set_defaults(command_name="delete")


def _wait(sub) -> None:
    p = sub.add_parser(
        "wait",
        help="wait until jobs have finished",
        description=(
            "Block until every named job, or every job (of --queue) not finished when wait starts, has finished. "
            "Exit 0 if all completed, 3 if any ended dead or cancelled (listed on stderr), 124 when --timeout runs out."
        ),
    )
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--queue", metavar="Q", help="the jobs of this queue")
    p.add_argument("--timeout", metavar="DURATION", help="give up after DURATION (exit 124)")
    _add_json(p)
    p.set_defaults(command_name="wait")


def _status(sub) -> None:
    p = sub.add_parser(
        "status",
        help="job counts, queues and workers",
        description=(
            "Show job counts per state (pending split into ready now and scheduled later), the next scheduled job, "
            "the figures per queue (and queues no live worker takes) and the workers. "
            "With --watch, a live view that also shows the last jobs to finish, redrawn every INTERVAL "
            "until q or Ctrl-C (exit 0); piped, one snapshot per INTERVAL, each under a '--- TIME ---' line "
            "(with --json, one JSON document per line)."
        ),
    )
    _add_json(p)
    p.add_argument(
        "--watch", nargs="?", const=WATCH_INTERVAL, default=None, metavar="INTERVAL",
        help=f"redraw every INTERVAL, a DURATION such as 0.5, 2s or 1m (default {WATCH_INTERVAL})",
    )
    p.set_defaults(command_name="status")


def _queue(sub) -> None:
    p = sub.add_parser(
        "queue",
        help="the queues and their jobs",
        description=(
            "Figures per queue: ready, scheduled, running, failed and dead jobs, how long the oldest ready job has waited, "
            "and the queue's controls (PAUSED, limit=N); pause, resume and limit a queue on every host."
        ),
    )
    _add_json(p)
    p.set_defaults(command_name="queue list")
    qsub = p.add_subparsers(dest="queue_command", metavar="ACTION")
    lp = qsub.add_parser("list", help="figures per queue", description="Figures per queue (queues with no live or dead jobs are left out).")
    _add_json(lp, default=argparse.SUPPRESS)
    lp.set_defaults(command_name="queue list")
    for action, text in (
        ("pause", "stop every worker on every host from claiming the queue's jobs (running ones finish; enqueue still works)"),
        ("resume", "let workers claim the queue's jobs again"),
    ):
        ap = qsub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        ap.add_argument("name", metavar="QUEUE")
        ap.set_defaults(command_name=f"queue {action}")
    mp = qsub.add_parser(
        "limit", help="run at most N of the queue's jobs at once, across all hosts",
        description="Let at most N jobs of QUEUE run at once across all hosts (enforced in the claim); none removes the limit.",
    )
    mp.add_argument("name", metavar="QUEUE")
    mp.add_argument("limit", metavar="N", help="a whole number from 1, or none")
    mp.set_defaults(command_name="queue limit")


def _dlq(sub) -> None:
    p = sub.add_parser("dlq", help="the dead-letter queue", description="Inspect, retry or purge dead jobs (out of retries).")
    _add_json(p)
    p.set_defaults(command_name="dlq list")
    dsub = p.add_subparsers(dest="dlq_command", metavar="ACTION")
    lp = dsub.add_parser("list", help="list dead jobs", description="List dead jobs. Outputs are left out: see show and logs.")
    # SUPPRESS: a subparser's defaults overwrite its parent's values, so `dlq --json list`
    # would lose the --json given before the action.
    _add_json(lp, default=argparse.SUPPRESS)
    lp.set_defaults(command_name="dlq list")
    for action, text in (("retry", "move dead jobs back to pending, attempts reset"), ("purge", "delete dead jobs for good")):
        ap = dsub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        ap.add_argument("ids", nargs="*", metavar="ID")
        ap.add_argument("--all", action="store_true", help="every dead job")
        ap.set_defaults(command_name=f"dlq {action}")


def _config(sub) -> None:
    p = sub.add_parser("config", help="show or change configuration", description="Configuration lives in the database, shared by every process.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    lp = csub.add_parser("list", help="every key with its value", description="List every key with its value.")
    _add_json(lp)
    lp.set_defaults(command_name="config list")
    gp = csub.add_parser("get", help="print one value", description="Print the bare value of KEY.")
    gp.add_argument("key", metavar="KEY")
    gp.set_defaults(command_name="config get")
    sp = csub.add_parser("set", help="change a value", description="Set KEY to VALUE (validated).")
    sp.add_argument("key", metavar="KEY")
    sp.add_argument("value", metavar="VALUE")
    sp.set_defaults(command_name="config set")
    up = csub.add_parser("unset", help="restore a default", description="Restore KEY to its default.")
    up.add_argument("key", metavar="KEY")
    up.set_defaults(command_name="config unset")


def _worker(sub) -> None:
    p = sub.add_parser("worker", help="run or stop workers", description="Run a supervisor with worker processes, or stop running ones.")
    wsub = p.add_subparsers(dest="worker_command", metavar="ACTION", required=True)
    sp = wsub.add_parser(
        "start", help="run a supervisor and its workers",
        description="Run a supervisor that forks worker processes; Ctrl-C stops gracefully, a second Ctrl-C at once.",
    )
    sp.add_argument("--concurrency", "--count", "-c", dest="concurrency", type=_positive_int, default=1, metavar="N", help="worker processes (default 1)")
    sp.add_argument("--queue", "-q", dest="queues", action="append", metavar="Q", help="only take jobs from this queue (repeatable)")
    sp.add_argument("--burst", action="store_true", help="exit once no job is due, running or awaiting a retry (jobs delayed into the future do not hold it)")
    sp.add_argument(
        "--detach", action="store_true",
        help="run in the background, print the pid; log to --log, else next to a SQLite database, else to worker-HOST-DBNAME.log beside the default database",
    )
    _completes("file", sp.add_argument(
        "--log", metavar="PATH", help="with --detach: the log file (appended to; must be a regular file of this user, not a symbolic link)",
    ))
    sp.add_argument("--hostname", default=os.environ.get("QUEUECTL_HOSTNAME"), help="host identity (env QUEUECTL_HOSTNAME; default: this machine's hostname)")
    sp.set_defaults(command_name="worker start")
    tp = wsub.add_parser(
        "stop", help="stop running supervisors",
        description="Stop the supervisors of this database: on this host by signal, elsewhere through a stop flag in the database.",
    )
    tp.add_argument("--now", action="store_true", help="kill running jobs and requeue them instead of letting them finish")
    tp.add_argument("--timeout", default=None, metavar="DURATION", help="wait at most this long, e.g. 30, 90s, 5m (default: until they exit)")
    tp.add_argument("--no-wait", dest="wait", action="store_false", help="signal and return at once")
    tp.set_defaults(command_name="worker stop")


def _db(sub) -> None:
    p = sub.add_parser("db", help="schema migrations (Alembic)", description="Manage the database schema.")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    dsub.add_parser("upgrade", help="migrate to the newest schema").set_defaults(command_name="db upgrade")
    dsub.add_parser("current", help="print the current revision").set_defaults(command_name="db current")
    dsub.add_parser("history", help="list the revisions").set_defaults(command_name="db history")
    dp = dsub.add_parser("downgrade", help="migrate down to REV (destroys data of later revisions)")
    dp.add_argument("revision", metavar="REV")
    dp.set_defaults(command_name="db downgrade")


def _completion(sub) -> None:
    p = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description=(
            "Print a completion script for SHELL, generated from this parser: subcommands, their options, "
            "the choices of an option, file names for paths. It runs no Python at tab time. "
            "Install it where the shell looks: bash, ~/.local/share/bash-completion/completions/queuectl; "
            "zsh, a file _queuectl in a directory of $fpath; fish, ~/.config/fish/completions/queuectl.fish."
        ),
    )
    p.add_argument("shell", choices=COMPLETION_SHELLS, metavar="SHELL", help="one of " + ", ".join(COMPLETION_SHELLS))
    p.set_defaults(command_name="completion")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="queuectl",
        global_flags=False,
        description=(
            "A durable background job queue for shell commands: enqueue commands, "
            "run them on a pool of workers with retries, exponential backoff and a dead-letter queue."
        ),
        epilog=(
            "--db and --debug are also accepted after the subcommand (queuectl status --db X); given in both "
            "places, the one after the subcommand wins. A --db path whose directory does not exist is refused "
            "(only the default location's directory is created). "
            "Exit status: 0 success, 1 operational error (not found, duplicate id, database unusable), 2 usage or validation error."
        ),
    )
    _completes("file", parser.add_argument("--db", default=None, metavar="URL_OR_PATH", help=DB_HELP))
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--color", "--colour", dest="color", choices=("auto", "always", "never"), default="auto",
        help="colour job states in tables: auto (default) only when stdout is a terminal and NO_COLOR is unset",
    )
    parser.add_argument("--version", action="version", version=f"queuectl {__version__}")
    sub = parser.add_subparsers(dest="command_group", metavar="COMMAND", required=True)
    for add in (_enqueue, _list, _show, _wait, _cancel, _status, _queue, _dlq, _config, _worker, _db, _completion):
        add(sub)
    return parser
