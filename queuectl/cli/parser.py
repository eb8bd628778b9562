"""The argparse parser. Imports only the standard library, so argparse-manpage can
build the man page from it, and `--help` is instant."""

import argparse
import os

try:
    from queuectl import __version__
except ImportError:  # argparse-manpage loads this file on its own at build time
    __version__ = "unknown"

STATES = "pending, running (alias processing), failed, completed, dead, cancelled, blocked"
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


# Job slots of one pool: each is a thread, a workers row and, while it runs a job, two
# descriptors; more than this wants several pools (or hosts), not one.
MAX_SLOTS = 1000


def _slots(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_SLOTS:
        raise argparse.ArgumentTypeError(f"at most {MAX_SLOTS} per pool, not {value} (start several pools for more)")
    return value


GLOBAL_AFTER_HELP = "also accepted after the subcommand, where it wins over one given before"

# The shells `queuectl completion` writes a script for (cli/completion.py).
COMPLETION_SHELLS = ("bash", "zsh", "fish")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (1 to 65535)")
    return value


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

    def __init__(self, *args, global_flags: bool = True, name_first: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._sub = global_flags
        # `schedule add NAME [options] COMMAND`: see parse_known_args.
        self._name_first = name_first
        if global_flags:
            _completes("file", self.add_argument(
                "--db", default=argparse.SUPPRESS, metavar="URL_OR_PATH", help="the database, as queuectl --db (" + GLOBAL_AFTER_HELP + ")",
            ))
            self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="as queuectl --debug")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if self._name_first and namespace.name is None and namespace.command and namespace.command[0] != "--":
            # The words after the options are NAME and the COMMAND. argparse gives a
            # positional before a REMAINDER only what precedes the first option, so
            # NAME is taken here and the options after it are parsed in a second pass
            # (those given before NAME stay: argparse only fills in what is missing).
            namespace.name, rest = namespace.command[0], namespace.command[1:]
            del namespace.command
            namespace, extras = super().parse_known_args(rest, namespace)
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
            '(keys: id, command, max_retries, priority, run_at, delay, timeout, queue, cwd, after, after_any, unique_key, on_conflict; '
            'after and after_any are lists of ids). '
            "A job with --after or --after-any is blocked until the jobs it names have ended: "
            "it runs once every --after job has completed and every --after-any job has ended in any way; "
            "if an --after job ends dead or cancelled, it is cancelled too (and so on down the chain). "
            "Named jobs must exist, or be defined on an earlier line of the same --file. "
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
    p.add_argument("--after", metavar="ID[,ID...]", help="blocked until these jobs have completed; cancelled if one ends dead or cancelled")
    p.add_argument("--after-any", dest="after_any", metavar="ID[,ID...]", help="blocked until these jobs have ended, in any state")
    p.add_argument(
        "--unique-key", dest="unique_key", metavar="KEY",
        help="at most one active (pending, failed or running) job holds KEY at a time, across every host; a finished job frees it",
    )
    p.add_argument(
        "--on-conflict", dest="on_conflict", metavar="error|skip",
        help="if KEY is held: error (default) exits 1 naming the job that holds it; skip exits 0, prints that job's id and enqueues nothing",
    )
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
        p.add_argument("--schedule", metavar="NAME", help="only jobs enqueued by this schedule")
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
    p.add_argument("--state", help="every job in this state (pending, failed, running, blocked)")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="return at once, without waiting for running jobs to stop")
    p.set_defaults(command_name="cancel")
    p = sub.add_parser(
        "retry",
        help="run finished jobs again",
        description=(
            "Put finished jobs (completed, dead or cancelled) back to pending with the same id, command and options, attempts reset. "
            "A job enqueued with --after/--after-any waits for its dependencies again (blocked until they have ended); "
            "refused if one of its --after dependencies is dead or cancelled. Jobs cancelled because this one ended dead or "
            "cancelled stay cancelled unless --with-dependents."
        ),
    )
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--state", help="every job in this state (dead, cancelled, completed)")
    p.add_argument("--with-dependents", dest="with_dependents", action="store_true",
                   help="also block again the jobs cancelled because these ended dead or cancelled, down the chain")
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


def _prune(sub) -> None:
    p = sub.add_parser(
        "prune",
        help="delete finished jobs past their retention",
        description=(
            "Delete completed, cancelled and dead jobs that ended longer ago than their retention, with their attempt history, "
            "in batches of at most 1000 (short transactions), until none is left; running supervisors do the same every "
            "config prune-interval. Each kind's retention is its config key (retain-completed, retain-cancelled, retain-dead) "
            "unless its flag is given. A DURATION, or never (keep them). `status` counts stay exact."
        ),
    )
    for kind in ("completed", "cancelled", "dead"):
        p.add_argument(f"--{kind}-older-than", dest=f"{kind}_older_than", metavar="DURATION",
                       help=f"delete {kind} jobs that ended longer ago than DURATION, or never (default: config retain-{kind})")
    _add_json(p)
    p.set_defaults(command_name="prune")


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


def _metrics(sub) -> None:
    p = sub.add_parser(
        "metrics",
        help="print the metrics in the Prometheus text format",
        description=(
            "Print the queue's metrics once, in the Prometheus text format: jobs per queue and state, the age of the oldest "
            "ready job, counters of jobs enqueued and ended (kept in the database: they survive every restart), run and wait "
            "times of the jobs completed in the last 15 minutes, workers, queue controls and schedules. For node-exporter's "
            "textfile collector: queuectl metrics > DIR/queuectl.prom.$$ && mv DIR/queuectl.prom.$$ DIR/queuectl.prom "
            "(see README, Metrics)."
        ),
    )
    p.set_defaults(command_name="metrics")


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
        if action == "retry":
            ap.add_argument("--with-dependents", dest="with_dependents", action="store_true",
                            help="also block again the jobs cancelled because these died, down the chain")
        ap.set_defaults(command_name=f"dlq {action}")


SCHEDULE_CATCH_UP = ("one", "none")
SCHEDULE_OVERLAP = ("skip", "allow")


def _schedule(sub) -> None:
    p = sub.add_parser("schedule", help="recurring jobs (cron)", description=(
        "Recurring jobs: a cron expression in a time zone and the job it enqueues at every tick. "
        "Running supervisors (worker start) fire the ticks, each exactly once across all of them and all hosts, "
        "within poll-interval (at least 0.25 s, at most 1 s) of its time."
    ))
    ssub = p.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)
    ap = ssub.add_parser("add", name_first=True, help="define a schedule", description=(
        "Define a schedule NAME (1-128 of A-Z a-z 0-9 . _ : -) that enqueues COMMAND at every tick of --cron. "
        "EXPR: 5 fields (minute hour day-of-month month day-of-week, as in crontab(5)) or @hourly, @daily, @midnight, "
        "@weekly, @monthly, @yearly, @annually. As with enqueue, everything from the first word after NAME that is "
        "not an option is the command; `--` also ends the options. The job's options are those of enqueue "
        "(--queue, --priority, --max-retries, --timeout, --cwd); its jobs carry the schedule's name (list --schedule NAME)."
    ))
    ap.add_argument("command", nargs=argparse.REMAINDER, metavar="NAME [--] COMMAND ...", help="the schedule's name, then its command")
    ap.add_argument("--cron", metavar="EXPR", help="when: a cron expression (required)")
    ap.add_argument("--tz", default="UTC", metavar="ZONE", help="the IANA time zone of EXPR, e.g. Europe/Berlin (default UTC); DST as Debian's cron")
    ap.add_argument("--catch-up", dest="catch_up", choices=SCHEDULE_CATCH_UP, default="one", help=(
        "ticks missed while no supervisor ran: one enqueues a single run for all of them (default), none skips to the next tick"))
    ap.add_argument("--overlap", choices=SCHEDULE_OVERLAP, default="skip", help=(
        "a tick while a job of this schedule is still pending, failed or running: skip it and count it skipped (default), or allow it"))
    ap.add_argument("--replace", action="store_true", help="redefine the schedule if it exists (keeping its history and pause)")
    ap.add_argument("--max-retries", "--retries", dest="max_retries", metavar="N", help="the job's retries (default: config max-retries)")
    ap.add_argument("--priority", metavar="N", help="the job's priority (default 0)")
    ap.add_argument("--timeout", metavar="DURATION", help="kill an attempt after DURATION (default: config job-timeout)")
    ap.add_argument("--queue", metavar="NAME", help="the job's queue (default 'default')")
    _completes("directory", ap.add_argument("--cwd", metavar="DIR", help="directory the job runs in (default: the current directory)"))
    _add_json(ap)
    ap.set_defaults(command_name="schedule add", name=None)
    lp = ssub.add_parser("list", help="every schedule", description=(
        "Every schedule: its expression and zone, next and last run, its last job and that job's state, and whether it is paused."))
    _add_json(lp)
    lp.set_defaults(command_name="schedule list")
    for action, text in (
        ("show", "one schedule with every field, its skipped and missed tick counts and its recent jobs"),
        ("remove", "delete a schedule (its jobs stay, with its name)"),
        ("pause", "stop firing a schedule's ticks"),
        ("resume", "fire a paused schedule again, from its next tick (the ticks of the pause are not run)"),
        ("run", "enqueue one run of a schedule now (whatever its pause or overlap policy; its ticks are unchanged)"),
    ):
        xp = ssub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        xp.add_argument("name", metavar="NAME")
        if action in ("show", "run"):
            _add_json(xp)
        xp.set_defaults(command_name=f"schedule {action}")


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
        description="Run a supervisor that forks worker processes running --concurrency job slots; Ctrl-C stops gracefully, a second Ctrl-C at once.",
    )
    sp.add_argument(
        "--concurrency", "--count", "-c", dest="concurrency", type=_slots, default=1, metavar="N",
        help=f"job slots: jobs run at once (default 1, at most {MAX_SLOTS})",
    )
    sp.add_argument(
        "--processes", "-p", type=_slots, default=None, metavar="P",
        help="worker processes the slots are spread over (default: one per CPU, at most N and 4); each runs its slots on threads",
    )
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
    sp.add_argument(
        "--listen-db", metavar="URL", default=None,
        help="PostgreSQL: the URL idle workers LISTEN on for new jobs, direct or through a session-mode pooler, when --db goes "
             "through PgBouncer in transaction mode (env QUEUECTL_LISTEN_DB; default: the --db URL)",
    )
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


def _web(sub) -> None:
    p = sub.add_parser(
        "web",
        help="serve the web dashboard, its JSON API and /metrics",
        description=(
            "Serve the dashboard (overview, jobs, dead-letter queue, workers, queues, schedules), a JSON API under /api/ "
            "and /metrics (Prometheus), from the same database as every other command, until Ctrl-C. Needs the [web] "
            "extra (pip install 'queuectl[web]'). Without a token it listens on a loopback address only; with one, "
            "every request needs it (the login form's cookie, or Authorization: Bearer TOKEN). Exit 2 for a non-loopback "
            "--host without a token."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; another than loopback needs --token)")
    p.add_argument("--port", type=_port, default=8080, help="TCP port (default 8080)")
    p.add_argument("--read-only", action="store_true", help="show everything, change nothing: no action buttons, every POST refused (403)")
    p.add_argument("--token", default=None, help="require this token of every request, at least 16 characters (env QUEUECTL_WEB_TOKEN)")
    p.add_argument("--refresh", default="5s", metavar="INTERVAL", help="how often the overview refreshes itself, a DURATION (default 5s)")
    p.set_defaults(command_name="web")


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
    for add in (_enqueue, _list, _show, _wait, _cancel, _prune, _status, _metrics, _queue, _dlq, _schedule, _config, _worker, _db, _web, _completion):
        add(sub)
    return parser
