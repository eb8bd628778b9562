"""One function per command: call the core, print the result. Errors are raised.

Input is validated before SQLAlchemy is imported (queuectl.store is imported
lazily), so a mistyped command fails in a few milliseconds.
"""

import json
import shlex
import sys
import time

from queuectl import jobspec
from queuectl.cli import render
from queuectl.cli.render import escape
from queuectl.errors import DuplicateId, KeyTaken, ValidationError
from queuectl.states import JobState

# `list` on a terminal with no filter shows this many of the newest jobs.
TERMINAL_LIST = 50


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
        """The command's store (opened once)."""
        from queuectl.store import Store

        if not self._stores:
            self._stores.append(Store.open(self.url(), durable=durable))
        return self._stores[0]

    def close(self) -> None:
        while self._stores:
            self._stores.pop().close()


def _print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _table(rows: list[list], headers: list[str], *, colour: bool = False, fit: int | None = None) -> None:
    """Print an aligned table (render.table); fit: the column cut to the terminal's
    width when stdout is one."""
    width = render.terminal_width() if fit is not None else None
    for line in render.table(rows, headers, colour=colour, fit=fit, width=width):
        print(line)


def _colour(args) -> bool:
    return not getattr(args, "json", False) and render.colour_wanted(getattr(args, "color", "auto"))


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
    if args.wait and (args.file is not None or args.json):
        raise ValidationError("--wait takes one job: not with --file or --json")
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
    except KeyTaken as err:
        if not numbers or err.index is None:
            raise
        where = "" if err.holder_index is None else f" (line {numbers[err.holder_index]})"
        raise KeyTaken(f"{_file_name(args)}: line {numbers[err.index]}: {escape(str(err))}{where}", key=err.key, holder=err.holder) from None
    if args.wait:
        return _wait_for_one(session, rows[0])
    if args.json:
        _print_json([job_dict(r) for r in rows] if args.file is not None else job_dict(rows[0]))
    elif args.file is not None:
        added = [r for r in rows if not r.get("skipped")]
        said = f"enqueued {len(added)} jobs" + (f" (ids {added[0]['id']}..{added[-1]['id']})" if added else "")
        if len(added) < len(rows):
            said += f"; skipped {len(rows) - len(added)} whose unique key an active job held"
        print(said)
    else:
        print(_enqueued_line(rows[0]))
    return 0


def _enqueued_line(row: dict) -> str:
    """What enqueue says of one job: enqueued, or skipped for the active job holding its key."""
    if row.get("skipped"):
        return f"skipped: unique key {row['unique_key']!r} is held by id={escape(row['id'])} ({row['state']}); nothing enqueued"
    state = row["state"]
    note = "" if state == JobState.PENDING.value else f" ({state}" + (f": {escape(row['last_error'])})" if row["last_error"] else ")")
    return f"enqueued id={escape(row['id'])} cmd={escape(row['command'])}{note}"


def _wait_for_one(session: Session, row: dict) -> int:
    """enqueue --wait, as `tsp -w`: the job's output, then its exit code (3 if it has
    none: cancelled, or lost with its worker). A skipped job waits for the holder."""
    from queuectl import waiting

    job_id = row["id"]
    print(_enqueued_line(row), file=sys.stderr, flush=True)
    (ended,) = waiting.wait(session.store(), [job_id])
    if ended.state != waiting.DELETED:
        output, _ = session.store().job_output(job_id)
        sys.stdout.write(output)
        sys.stdout.flush()
    if ended.completed:
        return 0
    print(f"queuectl: job {job_id} ended {ended.state}" + (f": {ended.last_error}" if ended.last_error else ""), file=sys.stderr)
    return ended.exit_code if ended.exit_code is not None and ended.state == JobState.DEAD.value else 3


# --- reading jobs --------------------------------------------------------------------


def _states(text: str) -> tuple[JobState, ...]:
    """`--state a,b`: several states, comma-separated (each as JobState.parse takes it)."""
    states = [JobState.parse(part) for part in text.split(",") if part.strip()]
    if not states:
        raise ValidationError("--state needs at least one state")
    return tuple(dict.fromkeys(states))


def _since(text: str):
    """`--since`: a DURATION ago (90s, 5m, 2h, 1d) or a TIMESTAMP (ISO 8601)."""
    from queuectl.timeutil import after, parse_duration, parse_timestamp, utcnow

    try:
        return after(utcnow(), -parse_duration(text))
    except ValidationError:
        pass
    try:
        return parse_timestamp(text)
    except ValidationError:
        raise ValidationError(f"invalid --since {text!r} (use a DURATION such as 90s, 5m, 2h, 1d or an ISO 8601 TIMESTAMP)") from None


def run_list(args, session: Session) -> int:
    states = _states(args.state) if args.state is not None else None
    queue = jobspec.check_queue(args.queue) if args.queue is not None else None
    since = _since(args.since) if args.since is not None else None
    schedule = jobspec.check_schedule_name(args.schedule) if args.schedule is not None else None
    store = session.store()
    last = args.last
    unfiltered = states is None and queue is None and since is None and schedule is None and args.limit is None and last is None
    if unfiltered and not args.json and render.is_terminal():
        # A person at a terminal: the newest page, not a million lines.
        total = store.job_total()
        if total > TERMINAL_LIST:
            last = TERMINAL_LIST
            print(f"showing the newest {TERMINAL_LIST} of {total} jobs; use --last N, a filter, or --json for more", file=sys.stderr)
    rows = store.list_jobs(states=states, queue=queue, since=since, limit=args.limit, last=last, schedule=schedule)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no jobs")
        return 0
    # A SCHEDULE column when a schedule enqueued any of them.
    scheduled = any(r["schedule"] for r in rows)
    extra = (lambda r: [r["schedule"] or "-"]) if scheduled else (lambda r: [])
    _table(
        [[r["id"], r["state"], r["runs"], r["attempts"], r["priority"], r["queue"], *extra(r), r["run_at"], r["command"]] for r in rows],
        ["ID", "STATE", "RUNS", "FAILED", "PRIO", "QUEUE", *(["SCHEDULE"] if scheduled else []), "RUN_AT", "COMMAND"],
        colour=_colour(args),
        fit=8 if scheduled else 7,
    )
    return 0


# `show` prints at most this much of the output; `logs` prints all that was kept.
SHOW_LINES = 20
SHOW_CHARS = 4000


def run_show(args, session: Session) -> int:
    job_id = jobspec.lookup_id(args.id)
    store = session.store()
    job = store.job(job_id)
    history = store.history(job_id)
    waits_for, waited_by = store.job_dependencies(job_id)
    if args.json:
        _print_json(dict(job, history=history, dependencies=waits_for, dependents=waited_by))
        return 0
    for key, value in job.items():
        if key not in ("output", "output_size", "attempts", "runs", "has_dependents"):
            print(f"{key + ':':13} {'' if value is None else escape(str(value))}")
    for label, linked in (("waits for:", waits_for), ("waited by:", waited_by)):
        if linked:
            print(f"{label:13} " + ", ".join(_linked(entry) for entry in linked))
    print(f"{'runs:':13} {job['runs']}{_runs_summary(history)}")
    print(f"{'attempts:':13} {job['attempts']} (failed attempts that count against max_retries; a retry by hand resets them)")
    if history:
        print("history:")
        _table([[a["number"], a["started_at"] or "-", _took(a["duration"]), a["host"] or "-", a["worker_id"] or "-",
                 "-" if a["exit_code"] is None else a["exit_code"], a["error"] or "completed"] for a in history],
               ["#", "STARTED", "TOOK", "HOST", "WORKER", "EXIT", "RESULT"])
    _output_preview(job)
    return 0


def _linked(entry: dict) -> str:
    """'build (completed)', 'fetch (running, any end)': a dependency or dependent in `show`."""
    state = entry["state"] or "deleted"
    return f"{escape(entry['id'])} ({state}" + (", any end)" if entry["kind"] == "after_any" else ")")


def _runs_summary(history: list[dict]) -> str:
    """' (2 failed, 1 completed)': how the recorded runs ended."""
    from collections import Counter

    from queuectl.store.transitions import CANCELLED, STOPPED

    ended = Counter("completed" if a["error"] is None else "cancelled" if a["error"] == CANCELLED
                    else "stopped" if a["error"] == STOPPED else "failed" for a in history)
    return " (" + ", ".join(f"{n} {what}" for what, n in ended.most_common()) + ")" if ended else ""


def _took(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}s"


def _output_preview(job: dict) -> None:
    """The end of the job's output, bounded, control characters escaped; the rest is for `logs`."""
    from queuectl.following import cut_note

    output = job["output"] or ""
    running = job["state"] == JobState.RUNNING.value
    if not output:
        print("output:       (none" + (" yet)" if running else ")"))
        return
    lines = output.splitlines(keepends=True)
    shown = "".join(lines[-SHOW_LINES:])[-SHOW_CHARS:]
    size = job["output_size"] if job["output_size"] is not None else len(output)
    hidden = size - len(shown)
    where = f"queuectl logs {job['id']}" if not running else f"queuectl logs -f {job['id']}"
    print("output" + (" so far" if running else "") + (f" (its last {len(shown):,} of {size:,} characters; all kept: {where}):" if hidden else ":"))
    if size > len(output):
        print(cut_note(size - len(output)))
    # Line breaks and tabs as they are; any other control character escaped.
    text = escape(shown, keep="\n\t")
    print(text, end="" if text.endswith("\n") else "\n")


def run_logs(args, session: Session) -> int:
    from queuectl.following import cut_note

    job_id = jobspec.lookup_id(args.id)
    store = session.store()
    if args.follow and args.attempt is not None:
        raise ValidationError("--follow and --attempt go separately")
    if args.follow:
        from queuectl import following

        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        state = following.follow(store, job_id, write=write, note=lambda line: print(line, file=sys.stderr, flush=True))
        return 0 if state == JobState.COMPLETED.value else 3
    if args.attempt is not None:
        attempt = store.attempt(job_id, args.attempt)
        output, size = attempt["output"] or "", attempt["output_size"]
    else:
        output, size = store.job_output(job_id)
    if size is not None and size > len(output):
        print(cut_note(size - len(output)), file=sys.stderr, flush=True)
    sys.stdout.write(output)
    return 0


def run_status(args, session: Session) -> int:
    from queuectl import status as status_mod
    from queuectl.cli import status_view

    if args.watch is not None:
        return _watch_status(args, session)
    report = status_mod.report(session.store())
    if args.json:
        _print_json(report)
        return 0
    for line in status_view.lines(report):
        print(line)
    return 0


def _watch_status(args, session: Session) -> int:
    from queuectl.cli import watch

    interval = _duration(args.watch, "--watch interval")
    if not interval:
        raise ValidationError(f"invalid --watch interval {args.watch!r} (must be more than 0 seconds)")
    return watch.run(session.store(), interval, json_lines=args.json, colour=_colour(args))


def run_metrics(args, session: Session) -> int:
    from queuectl import metrics

    sys.stdout.buffer.write(metrics.exposition(session.store()))
    sys.stdout.flush()
    return 0


def run_queue_list(args, session: Session) -> int:
    from queuectl import status as status_mod
    from queuectl.cli import status_view
    from queuectl.timeutil import utcnow

    now = utcnow()
    entries = status_mod.queue_entries(session.store().queues(now), now)
    if args.json:
        _print_json(entries)
        return 0
    for line in status_view.queue_lines(entries):
        print(line)
    return 0


parse_queue_limit = jobspec.parse_queue_limit  # `queue limit`'s N (the dashboard's too)


def run_queue_pause(args, session: Session) -> int:
    name = jobspec.check_queue(args.name)
    before = session.store().pause_queue(name, True)
    print(f"queue {escape(name)} {'was already' if before else 'is now'} paused: no worker claims its jobs (running ones finish)")
    return 0


def run_queue_resume(args, session: Session) -> int:
    name = jobspec.check_queue(args.name)
    before = session.store().pause_queue(name, False)
    print(f"queue {escape(name)} {'resumed' if before else 'was not paused'}")
    return 0


def run_queue_limit(args, session: Session) -> int:
    name = jobspec.check_queue(args.name)
    limit = parse_queue_limit(args.limit)
    session.store().limit_queue(name, limit)
    if limit is None:
        print(f"queue {escape(name)}: no limit")
    else:
        print(f"queue {escape(name)}: at most {limit} running {'job' if limit == 1 else 'jobs'} at once, across all hosts")
    return 0


# --- waiting -------------------------------------------------------------------------


def run_wait(args, session: Session) -> int:
    from queuectl import waiting

    if args.ids and args.queue is not None:
        raise ValidationError("give job ids or --queue, not both")
    ids = [jobspec.lookup_id(i) for i in args.ids] if args.ids else None
    queue = jobspec.check_queue(args.queue) if args.queue is not None else None
    timeout = _duration(args.timeout, "--timeout")
    ended = waiting.wait(session.store(), ids, queue=queue, timeout=timeout)
    if args.json:
        _print_json([{"id": e.id, "state": e.state, "exit_code": e.exit_code, "last_error": e.last_error} for e in ended])
    unhappy = [e for e in ended if not e.completed]
    for e in unhappy:
        print(f"queuectl: job {e.id} ended {e.state}" + (f": {e.last_error}" if e.last_error else ""), file=sys.stderr)
    if not args.json:
        print(f"{len(ended) - len(unhappy)} of {len(ended)} job(s) completed")
    return 3 if unhappy else 0


def _duration(text: str | None, what: str) -> float | None:
    from queuectl.timeutil import parse_duration

    return None if text is None else parse_duration(text, what)


# --- job control ---------------------------------------------------------------------


def run_cancel(args, session: Session) -> int:
    if args.ids and (args.queue or args.state):
        raise ValidationError("give job ids, or --queue/--state, not both")
    if not args.ids and args.queue is None and args.state is None:
        raise ValidationError("give job ids, --queue or --state")
    ids = [jobspec.lookup_id(i) for i in args.ids] if args.ids else None
    queue = jobspec.check_queue(args.queue) if args.queue is not None else None
    state = JobState.parse(args.state) if args.state is not None else None
    store = session.store()
    cancelled, asked = store.cancel(ids, queue=queue, state=state)
    said = f"cancelled {len(cancelled)} job(s)" + _some(cancelled)
    if asked:
        said += f"; asked {len(asked)} running job(s) to stop" + _some(asked)
    print(said, flush=True)
    if asked and args.wait:
        # Their workers see the cancel at their next heartbeat, then give the job
        # kill-grace to end; a dead worker's jobs are finished by whoever recovers them.
        while store.still_running(asked):
            time.sleep(_CANCEL_POLL)
        print("all stopped")
    return 0


_CANCEL_POLL = 0.1


def _terminal_targets(args) -> tuple[list[str] | None, JobState | None]:
    if args.ids and args.state is not None:
        raise ValidationError("give job ids or --state, not both")
    if not args.ids and args.state is None:
        raise ValidationError("give job ids or --state")
    if args.ids:
        return [jobspec.lookup_id(i) for i in args.ids], None
    return None, JobState.parse(args.state)


def run_retry(args, session: Session) -> int:
    ids, state = _terminal_targets(args)
    retried = session.store().retry(ids, state=state, with_dependents=args.with_dependents)
    print(f"retried {len(retried)} job(s)" + _some(retried))
    return 0


def run_delete(args, session: Session) -> int:
    ids, state = _terminal_targets(args)
    before = None
    if args.older_than is not None:
        if state is None:
            raise ValidationError("--older-than goes with --state")
        from queuectl.timeutil import after, parse_duration, utcnow

        before = after(utcnow(), -parse_duration(args.older_than, "--older-than"))
    deleted = session.store().delete(ids, state=state, finished_before=before)
    print(f"deleted {len(deleted)} job(s)" + _some(deleted))
    return 0


def run_prune(args, session: Session) -> int:
    from queuectl import config

    retain = {}
    for kind in ("completed", "cancelled", "dead"):
        text = getattr(args, f"{kind}_older_than")
        if text is not None:
            retain[kind] = config.parse_retention(text, f"--{kind}-older-than")
    pruned = session.store().prune(retain)
    if args.json:
        _print_json(pruned)
    else:
        print(f"pruned {sum(pruned.values())} job(s): " + ", ".join(f"{count} {kind}" for kind, count in pruned.items()))
    return 0


def _some(ids: list[str]) -> str:
    return ": " + " ".join(ids) if 0 < len(ids) <= 20 else ""


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
        [[r["id"], r["attempts"], r["exit_code"], render.shorten(r["last_error"] or "", 40), render.shorten(r["command"], 40)] for r in rows],
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
    ids = session.store().dlq_retry(targets, with_dependents=args.with_dependents)
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
    from queuectl import config

    _table([[e["key"], config.display(e["value"]), "(default)" if e["default"] else "", e["help"]] for e in entries], ["KEY", "VALUE", "", "MEANING"])
    return 0


def run_config_get(args, session: Session) -> int:
    from queuectl import config

    config.canonical_key(args.key)  # an unknown key is a usage error before touching the database
    print(config.display(session.store().config_value(args.key)))
    return 0


def run_config_set(args, session: Session) -> int:
    from queuectl import config

    config.parse_value(config.canonical_key(args.key), args.value)
    key, value = session.store().set_config(args.key, args.value)
    print(f"{key} = {config.display(value)}")
    return 0


def run_config_unset(args, session: Session) -> int:
    from queuectl import config

    key = config.canonical_key(args.key)
    key, value = session.store().unset_config(key)
    print(f"{key} = {config.display(value)} (default)")
    return 0


# --- schedules -----------------------------------------------------------------------


def run_schedule_add(args, session: Session) -> int:
    from queuectl import cron
    from queuectl.timeutil import utcnow

    name = jobspec.check_schedule_name(args.name or "")
    if args.cron is None:
        raise ValidationError("schedule add needs --cron EXPR (5 fields, or @hourly, @daily, @weekly, @monthly, @yearly)")
    expr, next_run = cron.check(args.cron, args.tz, utcnow())
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        raise ValidationError("the command is empty (give NAME, then the COMMAND)")
    command = args.command[0] if len(args.command) == 1 else shlex.join(args.command)
    options = {key: getattr(args, key) for key in ("max_retries", "priority", "timeout", "queue", "cwd")}
    spec = jobspec.build(command, **options)
    replaced = session.store().add_schedule(name, cron=expr, tz=args.tz, catch_up=args.catch_up, overlap=args.overlap, spec=spec,
                                            next_run=next_run, replace=args.replace)
    if args.json:
        _print_json(session.store().schedule(name))
        return 0
    what = "replaced" if replaced else "added"
    print(f"{what} schedule {escape(name)}: {escape(expr)} ({escape(args.tz)}), next run {_iso(next_run)}, cmd={escape(command)}")
    return 0


def _iso(value) -> str:
    from queuectl.timeutil import iso

    return iso(value) or "-"


def _schedule_name(args) -> str:
    return jobspec.check_schedule_name(args.name)


def run_schedule_list(args, session: Session) -> int:
    rows = session.store().schedules()
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no schedules")
        return 0
    _table(
        [[r["name"], r["cron"], r["tz"], "paused" if r["paused"] else r["next_run"], r["last_run"] or "-", r["last_job"] or "-",
          r["last_job_state"] or ("-" if r["last_job"] is None else "deleted"), r["skipped"], r["command"]] for r in rows],
        ["NAME", "CRON", "ZONE", "NEXT_RUN", "LAST_RUN", "LAST_JOB", "STATE", "SKIPPED", "COMMAND"],
        colour=_colour(args),
        fit=8,
    )
    return 0


# `schedule show` lists this many of the schedule's newest jobs.
SHOW_SCHEDULE_JOBS = 10


def run_schedule_show(args, session: Session) -> int:
    name = _schedule_name(args)
    store = session.store()
    schedule = store.schedule(name)
    recent = store.list_jobs(schedule=name, last=SHOW_SCHEDULE_JOBS)
    if args.json:
        _print_json(dict(schedule, jobs=recent))
        return 0
    for key, value in schedule.items():
        if key == "next_run" and schedule["paused"]:
            value = "- (paused)"
        print(f"{key + ':':15} {'' if value is None else escape(str(value))}")
    if recent:
        print(f"jobs (the newest {SHOW_SCHEDULE_JOBS}; all: queuectl list --schedule {escape(name)}):")
        _table([[r["id"], r["state"], r["created_at"], r["finished_at"] or "-"] for r in recent],
               ["ID", "STATE", "ENQUEUED", "FINISHED"], colour=_colour(args))
    return 0


def run_schedule_remove(args, session: Session) -> int:
    name = _schedule_name(args)
    session.store().remove_schedule(name)
    print(f"removed schedule {escape(name)} (its jobs stay)")
    return 0


def run_schedule_pause(args, session: Session) -> int:
    name = _schedule_name(args)
    changed = session.store().pause_schedule(name)
    print(f"paused schedule {escape(name)}" if changed else f"schedule {escape(name)} was already paused")
    return 0


def run_schedule_resume(args, session: Session) -> int:
    name = _schedule_name(args)
    store = session.store()
    changed = store.resume_schedule(name)
    if changed:
        print(f"resumed schedule {escape(name)}, next run {store.schedule(name)['next_run']}")
    else:
        print(f"schedule {escape(name)} was not paused")
    return 0


def run_schedule_run(args, session: Session) -> int:
    name = _schedule_name(args)
    store = session.store()
    job_id = store.run_schedule(name)
    if args.json:
        _print_json(store.job(job_id))
        return 0
    print(f"enqueued id={escape(job_id)} for schedule {escape(name)}")
    return 0


# --- workers -------------------------------------------------------------------------


def run_worker_start(args, session: Session) -> int:
    from queuectl.worker import supervisor

    if args.log is not None and not args.detach:
        raise ValidationError("--log is for --detach (in the foreground the log goes to stderr)")
    if args.log is not None and not args.log.strip():
        raise ValidationError("--log is empty: give a file path")
    url = session.url()
    if args.listen_db is not None:
        _use_listen_url(args.listen_db, url)
    options = supervisor.PoolOptions(
        concurrency=args.concurrency,
        processes=args.processes,
        queues=tuple(jobspec.check_queue(q) for q in args.queues or ()),
        burst=args.burst,
        hostname=args.hostname,
    )
    if args.detach:
        pid, log_path = supervisor.detach(url, options, log=args.log)
        print(f"started supervisor pid={pid} log={log_path}")
        return 0
    return supervisor.run(url, options)


def _use_listen_url(listen_db: str, url: str) -> None:
    """--listen-db: checked, then handed to the pool as $QUEUECTL_LISTEN_DB (its forked
    workers and a detached pool inherit it; the environment, not argv, keeps a password
    out of `ps`)."""
    import os

    from queuectl.store import usable_url
    from queuectl.store.dialect import LISTEN_DB_ENV

    if not listen_db.strip():
        raise ValidationError("--listen-db is empty: give a postgresql:// URL")
    if "://" not in listen_db or not url.startswith("postgres"):
        raise ValidationError("--listen-db is for a PostgreSQL database: give a postgresql:// URL, with --db one too")
    os.environ[LISTEN_DB_ENV] = usable_url(listen_db)


def run_worker_stop(args, session: Session) -> int:
    from queuectl.timeutil import parse_duration
    from queuectl.worker import stop

    timeout = None if args.timeout is None else parse_duration(args.timeout, "--timeout")
    print(stop.stop(session.store(), now=args.now, timeout=timeout, wait=args.wait))
    return 0


# --- web -----------------------------------------------------------------------------

WEB_TOKEN_ENV = "QUEUECTL_WEB_TOKEN"
WEB_EXTRA_MISSING = "queuectl web needs the [web] extra: pip install 'queuectl[web]'"
# The top-level modules of the [web] extra's packages (and of their own dependencies).
WEB_EXTRA_MODULES = frozenset({"starlette", "jinja2", "markupsafe", "uvicorn", "python_multipart", "multipart", "h11", "click", "anyio"})


def _import_form_parser() -> None:
    """python-multipart, which Starlette imports only at the first POST: missing, the
    command says so at start rather than failing every action."""
    try:
        import python_multipart  # noqa: F401  # its name from 0.0.13
    except ImportError:
        import multipart  # type: ignore[import-untyped, unused-ignore]  # noqa: F401  # before 0.0.13


def run_web(args, session: Session) -> int:
    """Serve the dashboard until Ctrl-C (see queuectl/web/)."""
    import os

    from queuectl.timeutil import parse_duration

    token = args.token if args.token is not None else os.environ.get(WEB_TOKEN_ENV)
    token = token if token and token.strip() else None
    refresh = parse_duration(args.refresh, "--refresh")
    if not 0.5 <= refresh <= 3600:
        raise ValidationError(f"--refresh {args.refresh!r} is out of range (0.5s..1h)")
    try:
        _import_form_parser()
        from queuectl.web import security, serve
    except ImportError as err:
        if (err.name or "").split(".")[0] not in WEB_EXTRA_MODULES:
            raise  # not a missing dependency: a bug, reported as one
        print(WEB_EXTRA_MISSING, file=sys.stderr)
        return 1
    if token is not None and len(token) < security.MIN_TOKEN_LENGTH:
        raise ValidationError(f"the token ({'--token' if args.token is not None else '$' + WEB_TOKEN_ENV}) has {len(token)} characters: "
                              f"use at least {security.MIN_TOKEN_LENGTH}, e.g. $(openssl rand -hex 16)")
    if token is None and not security.is_loopback(args.host):
        raise ValidationError(f"--host {args.host} is not a loopback address: set --token (or ${WEB_TOKEN_ENV}) so that every request needs it")
    return serve.run(session.url(), host=args.host, port=args.port, read_only=args.read_only, token=token, refresh=refresh,
                     announce=lambda line: print(line, flush=True))


# --- db ------------------------------------------------------------------------------


def _db_action(args, session: Session) -> int:
    from queuectl.store import schema

    message = schema.command(session.url(), args.command_name.split()[1], getattr(args, "revision", None))
    if message:
        print(message)
    return 0


run_db_upgrade = run_db_current = run_db_history = run_db_downgrade = _db_action


# --- completion ----------------------------------------------------------------------


def run_completion(args, session: Session) -> int:
    """Print the completion script; the database is never opened."""
    from queuectl.cli import completion

    sys.stdout.write(completion.script(args.shell))
    return 0


def run(args) -> int:
    """Run the command the parser named: `dlq retry` is run_dlq_retry."""
    session = Session(args)
    try:
        return globals()["run_" + args.command_name.replace(" ", "_")](args, session)
    finally:
        session.close()
