"""Validating what a user asks to enqueue: ids, JSON specs, plain command lines."""

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from queuectl.errors import ValidationError
from queuectl.timeutil import parse_duration, parse_timestamp

_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_QUEUE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# A job runs as `sh -c COMMAND`, and Linux execs no single argument of 32 pages
# (MAX_ARG_STRLEN: 128 KiB with 4 KiB pages) or more, its terminating NUL included.
# A longer command would fail every attempt with "Argument list too long".
MAX_COMMAND_BYTES = 128 * 1024 - 1
MAX_PRIORITY = 1_000_000
MAX_RETRIES = 1000


@dataclass
class JobSpec:
    """A validated request to enqueue one job; None means "use the configured default".
    Each attribute is a key of FIELDS (below), which says how it is checked; an
    attribute named like a column of `jobs` is stored there as given (store/jobs.py)."""

    command: str
    id: str | None = None
    max_retries: int | None = None
    priority: int = 0
    run_at: datetime | None = None
    delay: float | None = None
    timeout: float | None = None  # 0 means "no timeout", even when job-timeout is set
    queue: str = "default"
    cwd: str | None = None
    after: tuple[str, ...] | None = None  # ids of jobs that must complete first
    after_any: tuple[str, ...] | None = None  # ids of jobs that must end first, however
    unique_key: str | None = None
    on_conflict: str | None = None  # what to do if unique_key is taken: "error" (None) or "skip"


def check_id(value) -> str:
    """A user-chosen id: 1-128 of [A-Za-z0-9._:-], not all digits (those are auto ids)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value.isdigit():
        raise ValidationError(f"invalid job id {value!r} (1-128 characters of A-Z a-z 0-9 . _ : -, not all digits)")
    return value


def check_schedule_name(value) -> str:
    """A schedule's name: 1-128 of [A-Za-z0-9._:-]."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValidationError(f"invalid schedule name {value!r} (1-128 characters of A-Z a-z 0-9 . _ : -)")
    return value


def lookup_id(value: str) -> str:
    """An id typed to find a job: any auto id or any valid name."""
    # isascii(): str.isdigit() is also true of '²' and other digits int() refuses.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return str(int(value))
    return check_id(value)


def _json_type(value) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    names = {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def is_utf8(text: str) -> bool:
    """False for text holding lone surrogates (undecodable bytes from argv, a file name, JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_command(value) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"the command must be a string, not {_json_type(value)}")
    if not value.strip():
        raise ValidationError("the command is empty")
    if "\x00" in value:
        raise ValidationError("the command contains a NUL byte")
    if not is_utf8(value):
        raise ValidationError("the command is not valid UTF-8")
    size = len(value.encode("utf-8"))
    if size > MAX_COMMAND_BYTES:
        raise ValidationError(
            f"the command is {size} bytes; a job's `sh -c` can be given at most {MAX_COMMAND_BYTES}"
            " (Linux's limit on one argument): put it in a script and enqueue the script"
        )
    return value


def check_int(value, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValidationError(f"invalid {what} {value!r} (a whole number from {low} to {high})")
    try:
        number = int(value)
    except ValueError:
        raise ValidationError(f"invalid {what} {value!r} (a whole number from {low} to {high})") from None
    if not low <= number <= high:
        raise ValidationError(f"invalid {what} {value!r} (a whole number from {low} to {high})")
    return number


def check_queue(value) -> str:
    if not isinstance(value, str) or not _QUEUE.fullmatch(value):
        raise ValidationError(f"invalid queue name {value!r} (1-64 characters of A-Z a-z 0-9 . _ : -)")
    return value


# The highest `queue limit` (more would be no limit).
MAX_QUEUE_LIMIT = 1_000_000


def parse_queue_limit(text: str) -> int | None:
    """A queue's limit of running jobs as typed (`queue limit`, the dashboard): a
    whole number from 1, or none (no limit)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_QUEUE_LIMIT:
        raise ValidationError(f"invalid limit {text!r} (a whole number from 1 to {MAX_QUEUE_LIMIT}, or none)")
    return value


def check_cwd(value) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValidationError(f"invalid working directory {value!r}")
    if not is_utf8(value):
        # The database stores text: a path that is not UTF-8 cannot be kept.
        raise ValidationError(f"working directory {value!r} is not valid UTF-8")
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isdir(path):
        problem = "is not a directory" if os.path.exists(path) else "does not exist"
        raise ValidationError(f"working directory {value!r} {problem}")
    return path


MAX_DEPENDENCIES = 1000


def check_ids(value, what: str) -> tuple[str, ...]:
    """Job ids to wait for: a list of ids (JSON), or a comma-separated string (a flag)."""
    if isinstance(value, tuple) or value == []:  # [] in JSON: waits for nothing
        return tuple(value)
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
    elif isinstance(value, list) and all(isinstance(part, (str, int)) and not isinstance(part, bool) for part in value):
        parts = [str(part).strip() for part in value]
    else:
        raise ValidationError(f"invalid {what} {value!r} (job ids: a list in JSON, comma-separated in a flag)")
    if not parts or not all(parts):
        raise ValidationError(f"invalid {what} {value!r} (an empty job id)")
    if len(parts) > MAX_DEPENDENCIES:
        raise ValidationError(f"{what} names {len(parts)} jobs; at most {MAX_DEPENDENCIES}")
    try:
        return tuple(dict.fromkeys(lookup_id(part) for part in parts))
    except ValidationError as err:
        raise ValidationError(f"invalid {what}: {err}") from None
MAX_UNIQUE_KEY = 255
ON_CONFLICT = ("error", "skip")


def check_unique_key(value) -> str:
    """Any text of 1-255 characters without control characters (it is shown in errors)."""
    if not isinstance(value, str) or not value or len(value) > MAX_UNIQUE_KEY or not is_utf8(value) or not value.isprintable():
        raise ValidationError(f"invalid unique key {value!r} (1-{MAX_UNIQUE_KEY} printable characters)")
    return value


def check_on_conflict(value) -> str:
    if value not in ON_CONFLICT:
        raise ValidationError(f"invalid on_conflict {value!r} (one of: {', '.join(ON_CONFLICT)})")
    return value


@dataclass(frozen=True)
class Field:
    """One key of a job spec: its JSON key, which is also the JobSpec attribute, the
    dest of its `enqueue` flag (cli/parser.py) and, if `jobs` has a column of that
    name, the column. `check` turns a given value (text from a flag or a line, or a
    JSON value) into the typed one, or raises ValidationError."""

    name: str
    check: Callable[[Any], Any]


# In the order help texts and errors list them.
FIELDS = (
    Field("id", check_id),
    Field("command", check_command),
    Field("max_retries", lambda v: check_int(v, "max_retries", 0, MAX_RETRIES)),
    Field("priority", lambda v: check_int(v, "priority", -MAX_PRIORITY, MAX_PRIORITY)),
    Field("run_at", lambda v: v if isinstance(v, datetime) else parse_timestamp(v)),
    Field("delay", lambda v: parse_duration(v, "delay")),  # not stored: it becomes run_at
    Field("timeout", lambda v: parse_duration(v, "timeout")),
    Field("queue", check_queue),
    Field("cwd", check_cwd),
    Field("after", lambda v: check_ids(v, "after")),  # not stored in jobs: job_dependencies
    Field("after_any", lambda v: check_ids(v, "after_any")),
    Field("unique_key", check_unique_key),
    Field("on_conflict", check_on_conflict),  # not stored: it only decides this enqueue
)
SPEC_KEYS = tuple(f.name for f in FIELDS)
# The command first: of a spec with several bad fields, the error names the first
# bad one in this order.
_CHECKED = sorted(FIELDS, key=lambda f: f.name != "command")


def build(command, **given) -> JobSpec:
    """Validate every field (keys of FIELDS; None means not given); raises
    ValidationError naming the first bad one."""
    if given.get("run_at") is not None and given.get("delay") is not None:
        raise ValidationError("give either a delay or run_at, not both")
    given = dict(given, command=command)
    if given.get("cwd") is None:
        given["cwd"] = os.getcwd()  # checked like a given one: it may have been removed
    # The command has no default: checked even when null.
    return JobSpec(**{f.name: f.check(given[f.name]) for f in _CHECKED if f.name == "command" or given.get(f.name) is not None})


def from_json(text: str, defaults: dict | None = None) -> JobSpec:
    """A JSON object job spec; only "command" is required, unknown keys are refused.

    defaults (the command-line flags) fill the keys the spec leaves out.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ValidationError(f"invalid JSON job spec: {err}") from None
    if not isinstance(data, dict):
        raise ValidationError("a JSON job spec must be an object")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise ValidationError(f"unknown key(s) in job spec: {', '.join(unknown)} (valid: {', '.join(SPEC_KEYS)})")
    if "command" not in data:
        raise ValidationError('a job spec needs a "command"')
    fields = {k: v for k, v in (defaults or {}).items() if v is not None}
    if data.get("run_at") is not None or data.get("delay") is not None:
        fields.pop("run_at", None)
        fields.pop("delay", None)
    # null means "not given" for every key but command, which has no default.
    fields.update({k: v for k, v in data.items() if v is not None and k != "command"})
    return build(data["command"], **fields)


class LineParser:
    """The lines of one --file: a JSON spec if a line starts with '{', else a shell command.

    Plain command lines all take the same flag defaults, so those are validated
    (the cwd checked on disk...) with the first one only; every later one just
    checks its command. A big file then costs little more than reading it.
    """

    def __init__(self, defaults: dict | None = None):
        self.defaults = defaults or {}
        self._plain: dict | None = None  # a plain line's fields but its command

    def parse(self, line: str) -> JobSpec:
        stripped = line.strip()
        if stripped.startswith("{"):
            return from_json(stripped, self.defaults)
        if self._plain is None:
            # Validated whole, so that its errors are those of any other spec.
            first = build(stripped, **self.defaults)
            self._plain = {k: v for k, v in vars(first).items() if k != "command"}
            return first
        return JobSpec(command=check_command(stripped), **self._plain)
