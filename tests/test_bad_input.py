"""Hostile and random input: every input either works (exit 0) or is refused with
exit 2 (exit 1 only for a duplicate id or a job that is not there), on ONE stderr line
(argparse's own errors: its usage lines plus an error line), never a traceback, and a
refused command leaves the database exactly as it was.

The property tests call the CLI in-process, through queuectl.cli.main.main(argv),
against one SQLite file per test (the database grows as examples succeed; every
example compares a snapshot taken just before and just after it). A few real
subprocess runs at the end cover the same ground through `python -m queuectl`.

The inputs these properties found crashing queuectl ("unexpected error", exit 1) are
kept as explicit regression cases at the bottom.
"""

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from conftest import Cli, env_for
from fault_support import run_many
from queuectl.cli.main import main
from queuectl.cli.parser import build_parser
from queuectl.cli.render import escape
from queuectl.jobspec import MAX_COMMAND_BYTES, SPEC_KEYS
from queuectl.store import jobs as jobs_api
from queuectl.store import open_database
from queuectl.store.models import CONFIG
from support import error_line

# The database is per test, shared by its examples (each compares before/after).
# QUEUECTL_FUZZ_EXAMPLES=2000 for a deeper hunt than the suite's quick one.
PROPERTY = settings(
    max_examples=int(os.environ.get("QUEUECTL_FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TEN_YEARS = 10 * 365 * 86400
NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# How main() reports an exception nobody foresaw: always a bug.
CRASH = "queuectl: error: unexpected error: "
# What an operator may see with exit 1 from these commands (anything else is a bug).
EXIT_1_MESSAGES = ("already exists", "appears more than once", "no job with id", "no dead job with id")


# --- running the CLI in-process --------------------------------------------------------


class Run:
    def __init__(self, argv, code, out, err):
        self.argv, self.code, self.out, self.err = argv, code, out, err

    def __repr__(self):
        return f"Run(argv={self.argv!r}, code={self.code!r}, out={self.out[:300]!r}, err={self.err[:600]!r})"


def run(argv: list[str], stdin: bytes = b"") -> Run:
    """main(argv) with stdin, stdout and stderr replaced; argparse's SystemExit is an exit code."""
    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.stdin = saved_stdin
    return Run(argv, code, out.getvalue(), err.getvalue())


def check_refusal(r: Run, *fragments: str) -> str:
    """A refusal is exit 1 or 2, nothing on stdout, and one `queuectl: error:` line
    (or argparse's usage lines and error line, exit 2). Returns the error line."""
    assert r.code in (1, 2), r
    assert "Traceback" not in r.err, r
    assert r.out == "", r
    lines = r.err.splitlines()
    if r.err.startswith("usage: "):  # argparse's own error
        assert r.code == 2, r
        assert any(": error: " in line for line in lines[1:]), r
        message = next(line for line in lines if ": error: " in line)
    else:
        assert len(lines) == 1, r
        message = lines[0]
        assert message.startswith("queuectl: error: "), r
    assert not message.startswith(CRASH), r  # main()'s catch-all for exceptions nobody expected
    for fragment in fragments:
        assert fragment in message, r
    return message


def check_outcome(r: Run, exit_1=EXIT_1_MESSAGES) -> None:
    """Any outcome the contract allows: 0, or a proper refusal (1 only for `exit_1`)."""
    assert "Traceback" not in r.err, r
    if r.code == 0:
        return
    message = check_refusal(r)
    if r.code == 1 and exit_1 is not None:
        assert any(m in message for m in exit_1), r


@pytest.fixture
def qdb(tmp_path):
    """A migrated SQLite file (its path for --db) and the library's handle on it."""
    path = str(tmp_path / "queue.db")
    db = open_database(path)
    yield path, db
    db.dispose()


def snapshot(db):
    """Everything a refused command must leave alone: every job (live and dead) and every config row."""
    jobs = [tuple(row) for row in jobs_api.listing(db)]
    with db.read() as conn:
        config = conn.execute(select(CONFIG.c.key, CONFIG.c.value).order_by(CONFIG.c.key)).all()
    return jobs, [tuple(row) for row in config]


def new_jobs(db, before) -> list[dict]:
    known = {row[0] for row in before[0]}
    return [jobs_api.to_dict(row) for row in jobs_api.listing(db) if row.id not in known]


def attempt(path, db, argv, stdin=b"", exit_1=EXIT_1_MESSAGES) -> tuple[Run, tuple, list[dict]]:
    """Run `queuectl --db path ARGV`; a refusal must change nothing. Returns the run, the
    snapshot from before it and the jobs it added."""
    before = snapshot(db)
    r = run(["--db", path, *argv], stdin)
    check_outcome(r, exit_1)
    if r.code != 0:
        assert snapshot(db) == before, r
        return r, before, []
    return r, before, new_jobs(db, before)


# --- strategies ------------------------------------------------------------------------

ID_POOL = ["job-1", "a", "x.y:z", "UPPER_lower", "1a", "dup"]
any_text = st.text(max_size=40)
# Lone surrogates: \udc80-\udcff is how Python hands over argv bytes that are not UTF-8;
# any other one can only come from a JSON \u escape.
SURROGATES = ["\udcff", "caf\udce9", "a\ud800b", "\udfff"]
weird_text = st.one_of(
    any_text,
    st.sampled_from(SURROGATES),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=20),
    st.sampled_from(["", " ", "\t", "\n", "\x00", "-1", "1e9", "nan", "inf", "0x10", "1_000", "١٢", "１０", "5\n", "🙂", "\u2028"]),
)


def durations():
    return st.one_of(
        weird_text,
        st.from_regex(r"\A\s{0,2}-?[0-9]{1,12}(\.[0-9]{0,4})?\s{0,2}[smhdSMHDwy]?\s{0,2}\Z"),
        st.integers(0, 10**12).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["0", "0s", "315360000", "315360001", "3650d", "3651d", "87600h", "1.5m", "9" * 400]),
    )


def offsets():
    deltas = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
    return st.builds(timezone, deltas.map(lambda d: timedelta(minutes=round(d.total_seconds() / 60))))


@st.composite
def iso_timestamps(draw):
    """(text, expected UTC datetime or None if out of range) from a real datetime."""
    dt = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)))
    tz = draw(st.one_of(st.none(), offsets()))
    if tz is not None:
        dt = dt.replace(tzinfo=tz)
    spec = draw(st.sampled_from(["auto", "seconds", "milliseconds", "microseconds", "minutes"]))
    text = dt.isoformat(sep=draw(st.sampled_from(["T", " "])), timespec=spec)
    if tz is not None and tz.utcoffset(None) == timedelta(0) and draw(st.booleans()):
        text = text.replace("+00:00", draw(st.sampled_from(["Z", "z"])))
    if spec == "minutes":
        dt = dt.replace(second=0, microsecond=0)
    elif spec == "seconds":
        dt = dt.replace(microsecond=0)
    elif spec == "milliseconds":
        dt = dt.replace(microsecond=dt.microsecond // 1000 * 1000)
    try:
        expected = dt.replace(tzinfo=UTC) if tz is None else dt.astimezone(UTC)
    except (OverflowError, ValueError):
        expected = None
    return text, expected


def spec_values(key: str, cwd: str):
    generic = st.one_of(
        st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True), any_text,
        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
    specific = {
        "id": st.one_of(st.sampled_from(ID_POOL), st.from_regex(r"\A[A-Za-z0-9._:-]{1,130}\Z"), st.sampled_from(["123", "a b", "x" * 129, "a/b", "é"])),
        "command": st.one_of(st.sampled_from(["true", "echo 'it''s' \"q\"", "  ", "", "a\x00b", "exit 3", "echo \ud800", "caf\udce9"]), any_text),
        "max_retries": st.one_of(st.integers(-2, 1002), st.sampled_from(["3", " 4 ", "x", "1.0"])),
        "priority": st.one_of(st.integers(-(10**6) - 1, 10**6 + 1), st.sampled_from(["5", "-5", "high"])),
        "run_at": st.one_of(iso_timestamps().map(lambda t: t[0]), st.sampled_from(["tomorrow", "2030-02-30T00:00:00Z", "", "2030-01-01"])),
        "delay": st.one_of(durations(), st.floats(-10, 1e9)),
        "timeout": st.one_of(durations(), st.integers(-5, TEN_YEARS + 5)),
        "queue": st.one_of(st.sampled_from(["default", "emails", "a" * 64, "a" * 65, "my queue", ""]), st.from_regex(r"\A[A-Za-z0-9._:-]{1,66}\Z")),
        "cwd": st.sampled_from([cwd, "/", ".", "~", "", "/nonexistent/queuectl-x", "/etc/hostname", cwd + "/../" + Path(cwd).name]),
    }
    return st.one_of(specific.get(key, generic), generic) if key in specific else generic


@st.composite
def json_specs(draw, cwd: str):
    key = st.one_of(st.sampled_from(SPEC_KEYS), st.sampled_from(["retries", "Command", "cmd", "", "id "]), st.text(max_size=8))
    keys = draw(st.lists(key, max_size=6, unique=True))
    if draw(st.integers(0, 9)) > 1 and "command" not in keys:  # mostly with a command
        keys.append("command")
    return {key: draw(spec_values(key, cwd)) for key in keys}


FLAG_DEFAULTS = [[], ["--priority", "7"], ["--queue", "flagq"], ["--delay", "5m"], ["--max-retries", "2"], ["--timeout", "9"]]


# --- properties --------------------------------------------------------------------------


@PROPERTY
@given(data=st.data())
def test_json_job_specs(qdb, tmp_path, data):
    path, db = qdb
    spec = data.draw(json_specs(str(tmp_path)), label="spec")
    flags = data.draw(st.sampled_from(FLAG_DEFAULTS), label="flags")
    text = json.dumps(spec, ensure_ascii=data.draw(st.booleans(), label="ascii"))
    argv = ["enqueue", *flags, text]
    r, before, added = attempt(path, db, argv)

    unknown = set(spec) - set(SPEC_KEYS)
    if unknown or "command" not in spec:
        assert r.code == 2, r
        check_refusal(r, "unknown key(s)" if unknown else '"command"')
        return
    if r.code != 0:
        if r.code == 1:
            assert spec.get("id") in {row[0] for row in before[0]}, r
        return
    # Accepted: exactly one job, carrying what the spec said (flags fill the gaps).
    assert len(added) == 1, r
    job = added[0]
    assert job["command"] == spec["command"]
    assert job["state"] == "pending" and job["attempts"] == 0
    if spec.get("id") is not None:
        assert job["id"] == spec["id"]
    else:
        assert job["id"].isdigit()
    assert job["queue"] == (spec.get("queue") or ("flagq" if "--queue" in flags else "default"))
    if spec.get("priority") is not None:
        assert job["priority"] == int(spec["priority"])
    elif "--priority" in flags:
        assert job["priority"] == 7
    if spec.get("max_retries") is not None:
        assert job["max_retries"] == int(spec["max_retries"])
    assert os.path.isabs(job["cwd"]) and os.path.isdir(job["cwd"])
    # What a terminal could act on is shown escaped (render.escape).
    assert r.out == f"enqueued id={escape(job['id'])} cmd={escape(job['command'])}\n"


def json_like_text():
    """Text a user might paste as a JSON spec: valid JSON broken in one place, or noise."""
    valid = st.dictionaries(st.sampled_from(SPEC_KEYS), st.one_of(any_text, st.integers(), st.none()), max_size=4).map(
        lambda d: json.dumps({"command": "true", **d}),
    )

    @st.composite
    def broken(draw):
        text = draw(valid)
        i = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["cut", "insert", "delete"]))
        if how == "cut":
            return text[:i]
        if how == "insert":
            return text[:i] + draw(st.sampled_from(list('{}[]",:\\ \x00') + ["\\u", "\\ud800", "NaN", "1e999", "\n"])) + text[i:]
        return text[:i] + text[i + 1 :]

    return st.one_of(broken(), st.text(max_size=60).map(lambda t: "{" + t), st.just("{" * 2000 + "}" * 2000))


@PROPERTY
@given(text=json_like_text(), lead=st.sampled_from(["", " ", "\t\n "]))
def test_json_text(qdb, text, lead):
    path, db = qdb
    argv = ["enqueue", lead + text]
    r, _, added = attempt(path, db, argv)
    assert len(added) == (1 if r.code == 0 else 0), r
    if r.code == 0 and text.lstrip().startswith("{"):
        assert added[0]["command"] == json.loads(text)["command"]


def ascii_duration(text: str) -> float | None:
    """The documented DURATION syntax, ASCII only: 90, 90s, 5m, 2h, 1d (one unit; the
    compound forms, 1h30m, are tested in test_durations_sizes.py)."""
    m = re.fullmatch(r"[ \t\n\r\f\v]*([0-9]+(?:\.[0-9]+)?)[ \t\n\r\f\v]*([smhdSMHD]?)[ \t\n\r\f\v]*", text)
    if not m:
        return None
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2).lower()]


@PROPERTY
@given(flag=st.sampled_from(["--delay", "--timeout"]), value=durations(), joined=st.booleans())
@example(flag="--timeout", value="315360000", joined=True)
@example(flag="--timeout", value="315360001", joined=True)
@example(flag="--delay", value="9" * 400, joined=True)
@example(flag="--delay", value="-5", joined=False)
def test_durations(qdb, flag, value, joined):
    path, db = qdb
    argv = ["enqueue", f"{flag}={value}" if joined else flag, *([] if joined else [value]), "true"]
    r, before, added = attempt(path, db, argv)
    expected = ascii_duration(value)
    if expected is not None:
        assert r.code == (0 if expected <= TEN_YEARS else 2), r
    if r.code != 0:
        if r.code == 2 and not r.err.startswith("usage:"):
            check_refusal(r, f"invalid {flag[2:]}")
        return
    job = added[0]
    if expected is None:
        return  # e.g. Unicode digits: accepted, no claim about the value
    if flag == "--timeout":
        assert job["timeout"] == (expected or None)
    else:
        run_at = datetime.fromisoformat(job["run_at"][:-1])
        created = datetime.fromisoformat(job["created_at"][:-1])
        assert abs((run_at - created).total_seconds() - expected) < 0.002, (job, expected)


@PROPERTY
@given(ts=st.one_of(iso_timestamps(), weird_text.map(lambda t: (t, None))), joined=st.booleans())
@example(ts=("0001-01-01T00:00:00+01:00", None), joined=True)
@example(ts=("9999-12-31T23:59:59-01:00", None), joined=True)
@example(ts=("2030-02-30T00:00:00Z", None), joined=True)
def test_timestamps(qdb, ts, joined):
    path, db = qdb
    text, expected = ts
    argv = ["enqueue", f"--run-at={text}" if joined else "--run-at", *([] if joined else [text]), "true"]
    r, _, added = attempt(path, db, argv)
    if expected is not None and (joined or not text.startswith("-")):
        assert r.code == 0, r
    if r.code != 0:
        if not r.err.startswith("usage:"):
            check_refusal(r, "invalid timestamp")
        return
    if expected is not None:
        stored = datetime.fromisoformat(added[0]["run_at"][:-1] + "+00:00")
        assert abs(stored - expected) < timedelta(milliseconds=1), (text, added[0]["run_at"], expected)


def id_texts():
    return st.one_of(
        st.sampled_from(ID_POOL),
        st.from_regex(r"\A[A-Za-z0-9._:-]{1,130}\Z"),
        weird_text,
        st.sampled_from(["0", "00", "123", "9" * 21, "x" * 128, "x" * 129, "a b", "a'b", "a;b", "-", "--", "é", "١٢"]),
    )


@PROPERTY
@given(job_id=id_texts())
@example(job_id="dup")
def test_ids_on_enqueue(qdb, job_id):
    path, db = qdb
    if not any(row.id == "dup" for row in jobs_api.listing(db)):
        run(["--db", path, "enqueue", "--id", "dup", "true"])
    argv = ["enqueue", f"--id={job_id}", "true"]
    r, before, added = attempt(path, db, argv)
    valid = bool(NAME.fullmatch(job_id)) and not job_id.isdigit()
    exists = job_id in {row[0] for row in before[0]}
    if job_id == "--":
        # CPython < 3.12 argparse drops a "--" even from `--id=--` (the value becomes []),
        # so this valid name can only be given in a JSON spec. Refused cleanly, though.
        check_refusal(r, "invalid job id")
    elif not valid:
        assert r.code == 2, r
        check_refusal(r, "invalid job id")
    elif exists:
        assert r.code == 1, r
        check_refusal(r, "already exists", repr(job_id))
    else:
        assert r.code == 0, r
        assert [j["id"] for j in added] == [job_id]


@PROPERTY
@given(action=st.sampled_from([["show"], ["show", "--json"], ["logs"], ["dlq", "retry"], ["dlq", "purge"]]), job_id=id_texts())
@example(action=["show"], job_id="1")
@example(action=["show"], job_id="0001")
@example(action=["logs"], job_id="9" * 21)
def test_ids_on_lookup(qdb, action, job_id):
    path, db = qdb
    if not jobs_api.listing(db):
        run(["--db", path, "enqueue", "echo one"])
        run(["--db", path, "enqueue", "--id", "job-1", "echo two"])
    argv = [*action, *(["--"] if job_id.startswith("-") else []), job_id]
    r, before, _ = attempt(path, db, argv)
    ascii_auto = job_id.isascii() and job_id.isdigit() and len(job_id) <= 20
    valid = ascii_auto or (bool(NAME.fullmatch(job_id)) and not job_id.isdigit())
    if not valid:
        assert r.code == 2, r
        return
    wanted = str(int(job_id)) if ascii_auto else job_id
    if action[0] == "dlq":  # nothing is dead here
        assert r.code == 1, r
        check_refusal(r, "no dead job with id", repr(wanted))
    elif wanted in {row[0] for row in before[0]}:
        assert r.code == 0, r
    else:
        assert r.code == 1, r
        check_refusal(r, "no job with id", repr(wanted))


# Documented ranges (README, `config` table), for checking what `config set` accepted.
CONFIG_RANGES = {
    "max-retries": (int, 0, 1000),
    "backoff-base": (float, 1, 1000),
    "backoff-max": (float, 0, 30 * 86400),
    "backoff-jitter": (float, 0, 1),
    "job-timeout": (float, 0, 30 * 86400),
    "poll-interval": (float, 0.005, 60),
    "heartbeat-interval": (float, 0.05, 3600),
    "heartbeat-timeout": (float, 0.2, 86400),
    "output-limit": (int, 0, 64 * 1024 * 1024),
}


def key_spellings():
    keys = list(CONFIG_RANGES)
    return st.one_of(
        st.sampled_from(keys),
        st.sampled_from(keys).map(lambda k: k.replace("-", "_")),
        st.sampled_from(keys).map(str.upper),
        st.sampled_from(keys).map(lambda k: f" {k} "),
    )


def config_values():
    return st.one_of(
        weird_text,
        st.integers(-10, 10**9).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(0, 2).map(lambda f: f"{f:.3f}"),
        durations(),
        st.sampled_from(["0", "1", "0.005", "0.004", "30d", "31d", "1e3", "1E-3", "67108864", "67108865", "9" * 5000]),
    )


@PROPERTY
@given(key=key_spellings(), value=config_values())
@example(key="output-limit", value="9" * 5000)
@example(key="backoff-base", value="nan")
@example(key="backoff-jitter", value="-0")
def test_config_set_every_key(qdb, key, value):
    path, db = qdb
    argv = ["config", "set", key, value] if not value.startswith("-") else ["config", "set", key, "--", value]
    r, before, _ = attempt(path, db, argv)
    canonical = key.strip().lower().replace("_", "-")
    if r.code != 0:
        assert r.code == 2, r
        if not r.err.startswith("usage:"):
            check_refusal(r, f"invalid value for {canonical}")
        return
    kind, low, high = CONFIG_RANGES[canonical]
    shown = r.out.strip()
    assert shown.startswith(f"{canonical} = "), r
    number = kind(shown.split(" = ", 1)[1])
    assert low <= number <= high and not math.isnan(number), r
    got = run(["--db", path, "config", "get", key])
    assert (got.code, got.out.strip()) == (0, str(number)), got


@PROPERTY
@given(action=st.sampled_from(["get", "set", "unset"]), key=weird_text)
def test_config_unknown_keys(qdb, action, key):
    path, db = qdb
    assume(key.strip().lower().replace("_", "-") not in CONFIG_RANGES)
    argv = ["config", action, *(["--"] if key.startswith("-") else []), key, *(["1"] if action == "set" else [])]
    r, _, _ = attempt(path, db, argv)
    assert r.code == 2, r
    if not r.err.startswith("usage:"):
        check_refusal(r, "unknown config key")


VOCABULARY = [
    "enqueue", "list", "jobs", "show", "logs", "status", "dlq", "retry", "purge", "config", "get", "set", "unset",
    "worker", "stop", "db", "current", "history", "upgrade",
    "--json", "--all", "--state", "--queue", "--limit", "--id", "--priority", "--retries", "--max-retries", "--delay",
    "--run-at", "--timeout", "--cwd", "--file", "-f", "-", "--now", "--no-wait", "--db", "--debug", "--version", "-h",
    "--help", "--", "--bogus", "-x", "true", "echo hi", "1", "0", "-1", "99999999999999999999", "pending", "processing",
    "dead", "max-retries", "output-limit", "5m", "2030-01-01T00:00:00Z", "{", '{"command": "true"}', "job-1", "nan", "",
]
# Random words, but no path separators or URLs: a random --db or --file must stay in the test's directory.
word = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/~\x00"), max_size=12).filter(lambda t: "://" not in t)


@PROPERTY
@given(argv=st.lists(st.one_of(st.sampled_from(VOCABULARY), word, st.sampled_from(SURROGATES[:2])), max_size=8), stdin=st.binary(max_size=80))
@example(argv=["list", "--limit", "0"], stdin=b"")
@example(argv=["enqueue", "--file", "-"], stdin=b"true\n\xff\n")
@example(argv=["worker", "stop", "--timeout", "nan"], stdin=b"")
@example(argv=["--db", ".", "list"], stdin=b"")
def test_random_argv(qdb, tmp_path, monkeypatch, argv, stdin):
    path, db = qdb
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    # Without --db, commands use $QUEUECTL_DB, then $XDG_DATA_HOME: both stay in tmp_path.
    monkeypatch.setenv("QUEUECTL_DB", path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            parsed = build_parser().parse_args(argv)
        # These would start workers, drop the schema or serve until stopped: not for a random walk.
        assume(parsed.command_name not in ("worker start", "db downgrade", "web"))
    except SystemExit:
        pass
    with contextlib.chdir(work):
        # exit 1 may also mean an unusable --db (a directory...): any clear message.
        attempt(path, db, argv, stdin, exit_1=None)


@st.composite
def job_files(draw, cwd: str):
    line = st.one_of(
        st.sampled_from(["true", "echo 'a b'", "", "   ", "# a comment", "  # indented comment", '{"command": "echo j"}',
                         '{"command": "true", "id": "f-1"}', '{"command": "true", "id": "f-1"}', '{"cmd": "x"}', "{", "a\x00b",
                         f'{{"command": "true", "cwd": "{cwd}"}}', '{"command": "true", "cwd": "/nonexistent/q"}', "\x0cform feed", "x\r"]),
        any_text,
    )
    lines = draw(st.lists(line, max_size=8))
    data = "\n".join(lines).encode("utf-8")
    if draw(st.integers(0, 4)) == 0:  # break the UTF-8 somewhere
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82", b"\xc0\xaf"])) + data[i:]
    return data


@PROPERTY
@given(data=st.data())
def test_job_files_all_or_nothing(qdb, tmp_path, data):
    path, db = qdb
    content = data.draw(job_files(str(tmp_path)), label="file")
    argv = ["enqueue", "--file", "-"]
    r, _, added = attempt(path, db, argv, stdin=content)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as err:
        line = content.count(b"\n", 0, err.start) + 1
        assert r.code == 2, r
        check_refusal(r, f"<stdin>: line {line}: not valid UTF-8")
        return
    wanted = [n for n, t in enumerate(text.split("\n"), 1) if t.strip() and not t.lstrip().startswith("#")]
    if not wanted:  # nothing to send is no failure (#12), and nothing is written
        assert (r.code, r.out, added) == (0, "no jobs\n", []), r
    elif r.code == 0:
        assert len(added) == len(wanted), r
        assert r.out.startswith(f"enqueued {len(wanted)} jobs"), r
    else:
        assert "<stdin>: line " in r.err, r  # which line is wrong, always


# --- specific hostile inputs ------------------------------------------------------------


# Linux refuses to exec an argument of 32 pages (MAX_ARG_STRLEN, 128 KiB) or more, its
# NUL included. A job runs as `sh -c COMMAND`, so a longer command could never start.
EXEC_ARG_MAX = 128 * 1024 - 1


def test_huge_commands(qdb, tmp_path):
    path, db = qdb
    ok = "echo " + "a" * (100 * 1024)
    r, _, added = attempt(path, db, ["enqueue", ok])
    assert r.code == 0 and added[0]["command"] == ok

    at_limit = ":" * EXEC_ARG_MAX
    r, _, added = attempt(path, db, ["enqueue", at_limit])
    assert r.code == 0 and len(added[0]["command"]) == EXEC_ARG_MAX

    # bytes count, not characters: 65,536 x "é" is 131,072 bytes
    for too_big in (":" * (EXEC_ARG_MAX + 1), "é" * (EXEC_ARG_MAX // 2 + 1), ":" * (1024 * 1024), ":" * (1024 * 1024 + 1)):
        for argv, stdin in ((["enqueue", too_big], b""), (["enqueue", json.dumps({"command": too_big})], b""),
                            (["enqueue", "--file", "-"], too_big.encode() + b"\n")):
            r, _, _ = attempt(path, db, argv, stdin)
            assert r.code == 2, r
            check_refusal(r, f"the command is {len(too_big.encode())} bytes", f"at most {EXEC_ARG_MAX}")
    # A job file is all or nothing: one line too long refuses every line.
    r, _, _ = attempt(path, db, ["enqueue", "--file", "-"], b"true\n" + b":" * (EXEC_ARG_MAX + 1) + b"\necho after\n")
    assert r.code == 2, r
    check_refusal(r, "<stdin>: line 2:", f"at most {EXEC_ARG_MAX}")
    assert MAX_COMMAND_BYTES == EXEC_ARG_MAX


def test_huge_commands_through_a_real_process(qdb, tmp_path):
    """A real `enqueue` cannot itself take an argv word of 128 KiB (its own exec would
    fail), so longer commands arrive via --file."""
    path, db = qdb
    cli = Cli(path, tmp_path)
    ok = "echo " + "b" * (100 * 1024)
    assert cli.ok("enqueue", ok).stdout == f"enqueued id=1 cmd={ok}\n"
    for size in (EXEC_ARG_MAX + 1, 1024 * 1024):
        jobs_file = tmp_path / "long.jobs"
        jobs_file.write_text("true\n" + json.dumps({"command": ":" * size}) + "\n")
        error_line(cli("enqueue", "--file", jobs_file), 2, f"{jobs_file}: line 2:", f"the command is {size} bytes")
        error_line(cli("enqueue", "--file", "-", input=":" * size + "\n"), 2, "<stdin>: line 1:", f"at most {EXEC_ARG_MAX}")
    assert [j.id for j in jobs_api.listing(db)] == ["1"]


def test_nul_bytes(qdb, tmp_path):
    path, db = qdb
    for argv, stdin in ((["enqueue", "echo a\x00b"], b""), (["enqueue", "--cwd", f"{tmp_path}\x00x", "true"], b""),
                        (["enqueue", "--file", "-"], b"true\necho a\x00b\n")):
        r, _, _ = attempt(path, db, argv, stdin)
        assert r.code == 2, r
    check_refusal(run(["--db", path, "enqueue", "echo a\x00b"]), "NUL byte")
    check_refusal(run(["--db", path, "enqueue", "--file", "-"], b"true\necho a\x00b\n"), "<stdin>: line 2:", "NUL byte")
    # Through a real process (argv cannot carry NUL; a file can).
    jobs_file = tmp_path / "nul.jobs"
    jobs_file.write_bytes(b"echo fine\nprintf 'a\x00b'\n")
    error_line(Cli(path, tmp_path)("enqueue", "--file", jobs_file), 2, "line 2", "NUL byte")
    assert jobs_api.listing(db) == []


@pytest.mark.parametrize(
    "content, line",
    [
        (b"echo ok\n\xff\xfe bad\n", 2),
        (b"echo ok\necho fine\n# note\necho \xe2\x82\n", 4),  # a truncated 3-byte sequence
        (b"echo \xed\xa0\x80 surrogate\n", 1),  # a UTF-16 surrogate encoded as UTF-8 (CESU-8)
        (b"echo \xc0\xaf overlong\n", 1),
        (b'{"command": "echo \xff"}\n', 1),
        (b"echo ok\necho trailing \xc3", 2),  # cut in the middle of a character at EOF
    ],
)
def test_invalid_utf8_in_a_job_file(qdb, tmp_path, content, line):
    path, db = qdb
    jobs_file = tmp_path / "bad.jobs"
    jobs_file.write_bytes(content)
    r, _, _ = attempt(path, db, ["enqueue", "--file", str(jobs_file)])
    check_refusal(r, f"{jobs_file}: line {line}: not valid UTF-8")
    assert r.code == 2
    r, _, _ = attempt(path, db, ["enqueue", "--file", "-"], stdin=content)
    check_refusal(r, f"<stdin>: line {line}: not valid UTF-8")
    assert jobs_api.listing(db) == []


def test_nonexistent_cwd(qdb, tmp_path):
    path, db = qdb
    gone = str(tmp_path / "no" / "such" / "dir")
    jobs_file = tmp_path / "jobs.txt"
    jobs_file.write_text("true\n")
    cases = [
        ["enqueue", "--cwd", gone, "true"],
        ["enqueue", "--cwd", "relative/missing", "true"],
        ["enqueue", json.dumps({"command": "true", "cwd": gone})],
        ["enqueue", "--cwd", gone, "--file", str(jobs_file)],  # a flag default for every line
        ["enqueue", "--cwd", str(jobs_file), "true"],  # a file, not a directory
    ]
    for argv in cases:
        r, _, _ = attempt(path, db, argv)
        assert r.code == 2, r
        check_refusal(r, "working directory")
    assert jobs_api.listing(db) == []


NASTY_ARGV = [
    ["enqueue", "--delay", "１０s", "true"],  # fullwidth digits
    ["enqueue", "--priority", "9" * 5000, "true"],
    ["enqueue", '{"command": "true", "run_at": "9999-12-31T23:59:59-01:00"}'],
    ["enqueue", '{"command": "true", "timeout": 1e999}'],
    ["enqueue", '{"command": ' + "[" * 20000 + "]" * 20000 + "}"],
    ["enqueue", "--queue", "q" * 65, "true"],
    ["show", "x" * 200],
    ["list", "--state", "\u2028"],
    ["list", "--limit", "x"],
    ["config", "set", "output-limit", "9" * 5000],
    ["config", "set", "poll-interval", "1e-400"],
    ["dlq", "retry", "a'b"],
    ["worker", "stop", "--timeout", "-1"],
    ["worker", "start", "--concurrency", "0"],
    ["worker", "start", "--queue", "bad queue"],
    ["enqueue", "--cwd", "/nonexistent/caf\udce9", "true"],  # bytes that are not UTF-8, as argv delivers them
    ["enqueue", "--id", "caf\udce9", "true"],
    ["show", "\udcff"],
]


def test_no_traceback_from_a_real_process(cli, db, tmp_path):
    """The same contract through `python -m queuectl`, on every backend."""
    before = snapshot(db)
    results = run_many(cli.db_url, tmp_path, NASTY_ARGV)
    accepted = 0
    for argv, r, _ in results:
        detail = f"{argv!r:.200}\nexit {r.returncode}\nstdout: {r.stdout[:300]!r}\nstderr: {r.stderr[:1000]!r}"
        assert "Traceback" not in r.stderr, detail
        assert r.returncode in (0, 2), detail
        if r.returncode == 0:
            accepted += argv[0] == "enqueue"
            continue
        assert r.stdout == "", detail
        lines = r.stderr.splitlines()
        assert len(lines) == 1 or (r.stderr.startswith("usage: ") and ": error: " in lines[-1]), detail
        assert CRASH not in r.stderr, detail
    after = snapshot(db)
    settings = lambda snap: [row for row in snap[1] if row[0] != "_seq"]  # noqa: E731 (_seq: the id counter)
    assert settings(after) == settings(before)
    assert after[0][: len(before[0])] == before[0] and len(after[0]) == len(before[0]) + accepted


# --- regressions: inputs that once crashed with "unexpected error", exit 1 ------------------
# (Found by the properties above; fixed in 9e860cd. Kept as explicit cases so that they
# are tried on every run, not only when Hypothesis happens to draw them.)

REGRESSIONS = {
    # str.isdigit() but not int()-able (superscripts, circled digits), in lookup_id()
    "superscript id for show": (["show", "²"], b"", "invalid job id"),
    "superscript id for logs": (["logs", "³"], b"", "invalid job id"),
    "circled id for dlq retry": (["dlq", "retry", "①"], b"", "invalid job id"),
    "mixed id for dlq purge": (["dlq", "purge", "2²"], b"", "invalid job id"),
    # --limit beyond a signed 64-bit integer overflowed SQLite / PostgreSQL
    "limit 2**63": (["list", "--limit", str(2**63)], b"", "--limit"),
    "limit 20 digits": (["list", "--limit", "9" * 20], b"", "--limit"),
    # make_url() raises ValueError, not ArgumentError, for a port that is not a number
    "url port not a number": (["--db", "postgresql+psycopg://u@h:abc/db", "list"], b"", "invalid database URL"),
    "sqlite url port": (["--db", "sqlite://:x/queue.db", "list"], b"", "invalid database URL"),
    "url stray bracket": (["--db", "postgresql+psycopg://postgres@[::1/none", "list"], b"", "invalid database URL"),
    # an in-memory database failed inside the migration
    "in-memory sqlite": (["--db", "sqlite:///:memory:", "list"], b"", "in-memory"),
    "sqlite url without path": (["--db", "sqlite://", "list"], b"", "in-memory"),
    # a JSON integer beyond any float overflowed float()
    "json timeout beyond a float": (["enqueue", '{"command": "true", "timeout": 1%s}' % ("0" * 400)], b"", "invalid timeout"),
    "json delay beyond a float": (["enqueue", '{"command": "true", "delay": 1%s}' % ("0" * 400)], b"", "invalid delay"),
    # a lone surrogate from JSON was encoded with surrogateescape before the UTF-8 check
    "json surrogate": (["enqueue", '{"command": "echo \\ud800"}'], b"", "not valid UTF-8"),
    "json surrogate in a file": (["enqueue", "--file", "-"], b'{"command": "echo \\udfff"}\n', "<stdin>: line 1: the command is not valid UTF-8"),
    # null values were dropped, so build() was called without a command
    "json null command": (["enqueue", '{"command": null}'], b"", "the command must be a string"),
}


@pytest.mark.parametrize("argv, stdin, fragment", REGRESSIONS.values(), ids=REGRESSIONS.keys())
def test_regressions(qdb, argv, stdin, fragment):
    path, db = qdb
    r, _, _ = attempt(path, db, argv, stdin)
    assert r.code == 2, r
    check_refusal(r, fragment)


@pytest.fixture
def latin1_dir(tmp_path):
    """A directory whose name is not UTF-8 (as any Linux file system allows)."""
    path = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
    os.mkdir(path)
    return path


def test_names_that_are_not_utf8(qdb, latin1_dir, tmp_path):
    """What a non-UTF-8 file name looks like on the command line (surrogate escapes):
    refused with exit 2, as the database stores text. Through real processes, with bytes argv."""
    path, db = qdb
    env = env_for(path)

    def cli(*args, cwd=tmp_path):
        return subprocess.run([sys.executable, "-m", "queuectl", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)

    error_line(cli("enqueue", "--cwd", latin1_dir, "true"), 2, "working directory", "not valid UTF-8")
    error_line(cli("enqueue", "true", cwd=latin1_dir), 2, "working directory", "not valid UTF-8")  # the default cwd
    error_line(cli("--db", os.path.join(latin1_dir, b"q.db"), "list"), 2, "not valid UTF-8")
    assert jobs_api.listing(db) == []


def test_a_listen_url_is_for_postgresql_only(scli):
    error_line(scli("worker", "start", "--listen-db", "postgresql+psycopg://postgres@127.0.0.1/x"), 2, "--listen-db is for a PostgreSQL database")
    error_line(scli("worker", "start", "--listen-db", " "), 2, "--listen-db is empty")
