"""One function per command: call the core, print the result. Errors are raised.

Input is validated before SQLAlchemy is imported (queuectl.database is imported
lazily), so a mistyped command fails in a few milliseconds.
"""

import json
import shlex
import sys

from queuectl import jobspec
from queuectl.errors import DuplicateId, ValidationError
from queuectl.states import JobState


# Databases opened by the running command; run() disposes of them (closing their
# connections) when it returns, so main() can also be called repeatedly in one process.
_opened: list = []


def _db(args, durable: bool = True):
    from queuectl import database

    db = database.open_database(_url(args), durable=durable)
    _opened.append(db)
    return db


def _url(args) -> str:
    """The database URL from --db / $QUEUECTL_DB / the default, refused (exit 2) if unusable."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from queuectl import database

    url = database.resolve_url(args.db)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number, a stray '['
        raise ValidationError(f"invalid database URL {database.safe_url(url)!r}") from None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or path.startswith("file::memory:"):
            raise ValidationError("an in-memory SQLite database would vanish with this command; give a file path")
        if not jobspec.is_utf8(path):
            raise ValidationError(f"database path {path!r} is not valid UTF-8")
    return url


def _print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _table(rows: list[list], headers: list[str]) -> None:
    cells = [headers] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# --- enqueue -------------------------------------------------------------------------


def _flag_defaults(args) -> dict:
    return {
        "id": args.id,
        "max_retries": args.max_retries,
        "priority": args.priority,
        "delay": args.delay,
        "run_at": args.run_at,
        "timeout": args.timeout,
        "queue": args.queue,
        "cwd": args.cwd,
    }


def _file_name(args) -> str:
    return "<stdin>" if args.file == "-" else args.file


def _specs_from_file(args) -> tuple[list, list[int]]:
    """The job specs of every line of --file, and the line number of each."""
    if args.command:
        raise ValidationError("give either a COMMAND or --file, not both")
    if args.id:
        raise ValidationError("--id names one job; it cannot be used with --file")
    parser = jobspec.LineParser(_flag_defaults(args))
    name = _file_name(args)
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as stream:
                data = stream.read()
    except OSError as err:
        raise ValidationError(f"cannot read {args.file}: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValidationError(f"{name}: line {line}: not valid UTF-8") from None
    specs, numbers = [], []
    # split("\n"), not splitlines(): a form feed or the like inside a command is no line break.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            specs.append(parser.parse(line))
        except ValidationError as err:
            raise ValidationError(f"{name}: line {number}: {err}") from None
        numbers.append(number)
    if not specs:
        raise ValidationError(f"{name}: no jobs in it")
    return specs, numbers


def enqueue(args) -> int:
    numbers: list[int] = []
    if args.file is not None:
        specs, numbers = _specs_from_file(args)
    elif not args.command:
        raise ValidationError("the command is empty (give a COMMAND, a JSON job spec or --file)")
    elif len(args.command) == 1 and args.command[0].lstrip().startswith("{"):
        specs = [jobspec.from_json(args.command[0], _flag_defaults(args))]
    else:
        command = args.command[0] if len(args.command) == 1 else shlex.join(args.command)
        specs = [jobspec.build(command, **_flag_defaults(args))]
    from queuectl import jobs

    try:
        rows = jobs.enqueue(_db(args), specs)
    except DuplicateId as err:
        lines = [n for n, spec in zip(numbers, specs) if spec.id is not None and spec.id == err.job_id]
        if not lines:
            raise
        raise DuplicateId(f"{_file_name(args)}: line {lines[-1]}: {err}", job_id=err.job_id) from None
    if args.json:
        _print_json([jobs.to_dict(r) for r in rows] if args.file is not None else jobs.to_dict(rows[0]))
    elif args.file is not None:
        print(f"enqueued {len(rows)} jobs (ids {rows[0]['id']}..{rows[-1]['id']})")
    else:
        print(f"enqueued id={rows[0]['id']} cmd={rows[0]['command']}")
    return 0


# --- reading jobs --------------------------------------------------------------------


def list_jobs(args) -> int:
    state = JobState.parse(args.state) if args.state is not None else None
    queue = jobspec.check_queue(args.queue) if args.queue is not None else None
    from queuectl import jobs

    rows = [jobs.to_dict(r) for r in jobs.listing(_db(args), state=state, queue=queue, limit=args.limit)]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no jobs")
        return 0
    _table(
        [[r["id"], r["state"], r["attempts"], r["priority"], r["queue"], r["run_at"], _short(r["command"])] for r in rows],
        ["ID", "STATE", "ATTEMPTS", "PRIO", "QUEUE", "RUN_AT", "COMMAND"],
    )
    return 0


def show(args) -> int:
    job_id = jobspec.lookup_id(args.id)
    from queuectl import jobs

    job = jobs.to_dict(jobs.get(_db(args), job_id))
    if args.json:
        _print_json(job)
        return 0
    for key, value in job.items():
        if key != "output":
            print(f"{key + ':':13} {'' if value is None else value}")
    print("output:" if job["output"] else "output:       (none)")
    if job["output"]:
        print(job["output"], end="" if job["output"].endswith("\n") else "\n")
    return 0


def logs(args) -> int:
    job_id = jobspec.lookup_id(args.id)
    from queuectl import jobs

    output = jobs.get(_db(args), job_id).output or ""
    sys.stdout.write(output)
    return 0


def status(args) -> int:
    from queuectl import status as status_mod

    report = status_mod.report(_db(args))
    if args.json:
        _print_json(report)
        return 0
    counts = report["jobs"]
    print("=== Queue Status ===")
    for label, key in (("Pending", "pending"), ("Running", "running"), ("Failed", "failed"), ("Completed", "completed"), ("Dead (DLQ)", "dead")):
        print(f"{label}: {counts[key]}")
    nxt = report["next_scheduled"]
    print(f"Next Scheduled Job: {nxt['id']} at {nxt['run_at']}" if nxt else "Next Scheduled Job: none")
    print()
    print("=== Workers ===")
    if not report["workers"]:
        print("no workers running")
        return 0
    _table(
        [
            [w["id"], w["host"], w["pid"], w["state"], w["job_id"] or "-", f"{w['heartbeat_age']:.1f}s", _pct(w.get("cpu_percent")), _mb(w.get("rss_bytes")), w["processed"], w["failed"]]
            for w in report["workers"]
        ],
        ["WORKER", "HOST", "PID", "STATE", "JOB", "HEARTBEAT", "CPU", "RSS", "DONE", "FAILED"],
    )
    return 0


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _mb(value) -> str:
    return "-" if value is None else f"{value / 1048576:.1f}M"


# --- dlq -----------------------------------------------------------------------------


def dlq_list(args) -> int:
    from queuectl import jobs

    rows = [jobs.to_dict(r) for r in jobs.listing(_db(args), state=JobState.DEAD)]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("the dead-letter queue is empty")
        return 0
    _table(
        [[r["id"], r["attempts"], r["exit_code"], _short(r["last_error"] or "", 40), _short(r["command"], 40)] for r in rows],
        ["ID", "ATTEMPTS", "EXIT", "LAST_ERROR", "COMMAND"],
    )
    return 0


def _dlq_targets(args) -> list[str] | None:
    if args.all and args.ids:
        raise ValidationError("give job ids or --all, not both")
    if not args.all and not args.ids:
        raise ValidationError("give job ids or --all")
    return None if args.all else [jobspec.lookup_id(i) for i in args.ids]


def dlq_retry(args) -> int:
    targets = _dlq_targets(args)
    from queuectl import dlq

    ids = dlq.retry(_db(args), targets)
    print(f"retried {len(ids)} job(s)" + (": " + " ".join(ids) if 0 < len(ids) <= 20 else ""))
    return 0


def dlq_purge(args) -> int:
    targets = _dlq_targets(args)
    from queuectl import dlq

    ids = dlq.purge(_db(args), targets)
    print(f"purged {len(ids)} job(s)" + (": " + " ".join(ids) if 0 < len(ids) <= 20 else ""))
    return 0


# --- config --------------------------------------------------------------------------


def config_list(args) -> int:
    from queuectl import settings

    with _db(args).read() as conn:
        entries = settings.describe(conn)
    if args.json:
        _print_json({e["key"]: e["value"] for e in entries})
        return 0
    _table([[e["key"], e["value"], "(default)" if e["default"] else "", e["help"]] for e in entries], ["KEY", "VALUE", "", "MEANING"])
    return 0


def config_get(args) -> int:
    from queuectl import config

    config.canonical_key(args.key)  # an unknown key is a usage error before touching the database
    from queuectl import settings

    with _db(args).read() as conn:
        print(settings.get(conn, args.key))
    return 0


def config_set(args) -> int:
    from queuectl import config

    config.parse_value(config.canonical_key(args.key), args.value)
    from queuectl import settings

    with _db(args).begin() as conn:
        key, value = settings.set_value(conn, args.key, args.value)
    print(f"{key} = {value}")
    return 0


def config_unset(args) -> int:
    from queuectl import config

    key = config.canonical_key(args.key)
    from queuectl import settings

    with _db(args).begin() as conn:
        settings.unset(conn, key)
        value = settings.get(conn, key)
    print(f"{key} = {value} (default)")
    return 0


# --- workers -------------------------------------------------------------------------


def worker_start(args) -> int:
    from queuectl.worker import supervisor

    if args.queues:
        args.queues = [jobspec.check_queue(q) for q in args.queues]
    if args.detach:
        pid, log_path = supervisor.detach(args)
        print(f"started supervisor pid={pid} log={log_path}")
        return 0
    return supervisor.run(
        _url(args),
        concurrency=args.concurrency,
        queues=tuple(args.queues or ()),
        burst=args.burst,
        hostname=args.hostname,
    )


def worker_stop(args) -> int:
    from queuectl.worker import stop

    if args.timeout is not None and args.timeout < 0:
        raise ValidationError("--timeout must not be negative")
    result = stop.stop(_db(args), now=args.now, timeout=args.timeout, wait=args.wait)
    print(result.message)
    return result.exit_code


# --- db ------------------------------------------------------------------------------


def db_command(args) -> int:
    from queuectl import migrate

    message = migrate.run(_url(args), args.command_name.split()[1], getattr(args, "revision", None))
    if message:
        print(message)
    return 0


COMMANDS = {
    "enqueue": enqueue,
    "list": list_jobs,
    "show": show,
    "logs": logs,
    "status": status,
    "dlq list": dlq_list,
    "dlq retry": dlq_retry,
    "dlq purge": dlq_purge,
    "config list": config_list,
    "config get": config_get,
    "config set": config_set,
    "config unset": config_unset,
    "worker start": worker_start,
    "worker stop": worker_stop,
    "db upgrade": db_command,
    "db current": db_command,
    "db history": db_command,
    "db downgrade": db_command,
}


def run(args) -> int:
    try:
        return COMMANDS[args.command_name](args)
    finally:
        while _opened:
            _opened.pop().dispose()
