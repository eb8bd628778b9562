"""One function per command: call the core, print the result. Errors are raised.

Input is validated before SQLAlchemy is imported (queuectl.store is imported
lazily), so a mistyped command fails in a few milliseconds.
"""

import json
import shlex
import sys

from queuectl import jobspec
from queuectl.errors import DuplicateId, ValidationError
from queuectl.states import JobState


class Session:
    """What one command's run opens, closed when it returns (so main() can also be
    called repeatedly in one process)."""

    def __init__(self, args):
        self.args = args
        self._stores: list = []

    def url(self) -> str:
        """The database URL from --db / $QUEUECTL_DB / the default, refused (exit 2) if unusable."""
        from queuectl.store import usable_url

        return usable_url(self.args.db)

    def store(self, durable: bool = True):
        from queuectl.store import Store

        store = Store.open(self.url(), durable=durable)
        self._stores.append(store)
        return store

    def close(self) -> None:
        while self._stores:
            self._stores.pop().close()


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
    """What the enqueue flags give each job (a flag's dest is its job spec key)."""
    return {key: getattr(args, key) for key in jobspec.SPEC_KEYS if key != "command"}


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
    return specs, numbers


def run_enqueue(args, session: Session) -> int:
    numbers: list[int] = []
    if args.command[:1] == ["--"]:  # argparse keeps the `--` that ends enqueue's options
        args.command = args.command[1:]
    if args.file is not None:
        specs, numbers = _specs_from_file(args)
        if not specs:
            # A cron pipeline that has nothing to send this time has not failed.
            # The database is not even opened.
            if args.json:
                _print_json([])
            else:
                print("no jobs")
            return 0
    elif not args.command:
        raise ValidationError("the command is empty (give a COMMAND, a JSON job spec or --file)")
    elif len(args.command) == 1 and args.command[0].lstrip().startswith("{"):
        specs = [jobspec.from_json(args.command[0], _flag_defaults(args))]
    else:
        command = args.command[0] if len(args.command) == 1 else shlex.join(args.command)
        specs = [jobspec.build(command, **_flag_defaults(args))]
    from queuectl.store import job_dict

    try:
        rows = session.store().enqueue(specs)
    except DuplicateId as err:
        lines = [n for n, spec in zip(numbers, specs) if spec.id is not None and spec.id == err.job_id]
        if not lines:
            raise
        raise DuplicateId(f"{_file_name(args)}: line {lines[-1]}: {err}", job_id=err.job_id) from None
    if args.json:
        _print_json([job_dict(r) for r in rows] if args.file is not None else job_dict(rows[0]))
    elif args.file is not None:
        print(f"enqueued {len(rows)} jobs (ids {rows[0]['id']}..{rows[-1]['id']})")
    else:
        print(f"enqueued id={rows[0]['id']} cmd={rows[0]['command']}")
    return 0


# --- reading jobs --------------------------------------------------------------------


def run_list(args, session: Session) -> int:
    state = JobState.parse(args.state) if args.state is not None else None
    queue = jobspec.check_queue(args.queue) if args.queue is not None else None
    rows = session.store().list_jobs(state=state, queue=queue, limit=args.limit)
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


def run_show(args, session: Session) -> int:
    job_id = jobspec.lookup_id(args.id)
    job = session.store().job(job_id)
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


def run_logs(args, session: Session) -> int:
    job_id = jobspec.lookup_id(args.id)
    output = session.store().job_output(job_id)
    sys.stdout.write(output)
    return 0


def run_status(args, session: Session) -> int:
    from queuectl import status as status_mod

    report = status_mod.report(session.store())
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


def run_dlq_list(args, session: Session) -> int:
    rows = session.store().list_jobs(state=JobState.DEAD)
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


def run_dlq_retry(args, session: Session) -> int:
    targets = _dlq_targets(args)
    ids = session.store().dlq_retry(targets)
    print(f"retried {len(ids)} job(s)" + (": " + " ".join(ids) if 0 < len(ids) <= 20 else ""))
    return 0


def run_dlq_purge(args, session: Session) -> int:
    targets = _dlq_targets(args)
    ids = session.store().dlq_purge(targets)
    print(f"purged {len(ids)} job(s)" + (": " + " ".join(ids) if 0 < len(ids) <= 20 else ""))
    return 0


# --- config --------------------------------------------------------------------------


def run_config_list(args, session: Session) -> int:
    entries = session.store().describe_config()
    if args.json:
        _print_json({e["key"]: e["value"] for e in entries})
        return 0
    _table([[e["key"], e["value"], "(default)" if e["default"] else "", e["help"]] for e in entries], ["KEY", "VALUE", "", "MEANING"])
    return 0


def run_config_get(args, session: Session) -> int:
    from queuectl import config

    config.canonical_key(args.key)  # an unknown key is a usage error before touching the database
    print(session.store().config_value(args.key))
    return 0


def run_config_set(args, session: Session) -> int:
    from queuectl import config

    config.parse_value(config.canonical_key(args.key), args.value)
    key, value = session.store().set_config(args.key, args.value)
    print(f"{key} = {value}")
    return 0


def run_config_unset(args, session: Session) -> int:
    from queuectl import config

    key = config.canonical_key(args.key)
    key, value = session.store().unset_config(key)
    print(f"{key} = {value} (default)")
    return 0


# --- workers -------------------------------------------------------------------------


def run_worker_start(args, session: Session) -> int:
    from queuectl.worker import supervisor

    if args.log is not None and not args.detach:
        raise ValidationError("--log is for --detach (in the foreground the log goes to stderr)")
    if args.log is not None and not args.log.strip():
        raise ValidationError("--log is empty: give a file path")
    options = supervisor.PoolOptions(
        concurrency=args.concurrency,
        queues=tuple(jobspec.check_queue(q) for q in args.queues or ()),
        burst=args.burst,
        hostname=args.hostname,
    )
    if args.detach:
        pid, log_path = supervisor.detach(session.url(), options, log=args.log)
        print(f"started supervisor pid={pid} log={log_path}")
        return 0
    return supervisor.run(session.url(), options)


def run_worker_stop(args, session: Session) -> int:
    from queuectl.worker import stop

    from queuectl.timeutil import parse_duration

    timeout = None if args.timeout is None else parse_duration(args.timeout, "--timeout")
    print(stop.stop(session.store(), now=args.now, timeout=timeout, wait=args.wait))
    return 0


# --- db ------------------------------------------------------------------------------


def _db_action(args, session: Session) -> int:
    from queuectl.store import schema

    message = schema.command(session.url(), args.command_name.split()[1], getattr(args, "revision", None))
    if message:
        print(message)
    return 0


run_db_upgrade = run_db_current = run_db_history = run_db_downgrade = _db_action


def run(args) -> int:
    """Run the command the parser named: `dlq retry` is run_dlq_retry."""
    session = Session(args)
    try:
        return globals()["run_" + args.command_name.replace(" ", "_")](args, session)
    finally:
        session.close()
