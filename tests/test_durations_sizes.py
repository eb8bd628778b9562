"""One DURATION grammar everywhere (flags, job specs, config, `worker stop --timeout`)
and byte SIZEs for output-limit (#12)."""

import json
from datetime import datetime

import pytest

from queuectl.config import parse_value
from queuectl.errors import ValidationError
from queuectl.timeutil import parse_duration
from support import error_line

# --- 3. one DURATION grammar, byte sizes --------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("1.5h", 5400),
    ("1d2h3m4s", 93784), (" 1h 30m ", 5400), ("1H30M", 5400), ("0", 0),
])
def test_duration_grammar(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30m1h", "1h1h", "1h30", "h", "", "-5", "1e3", "5x", "1w", "1h-30m"])
def test_durations_refused_name_the_value_and_the_forms(text):
    with pytest.raises(ValidationError) as err:
        parse_duration(text, "--delay")
    assert f"invalid --delay {text!r}" in str(err.value) and "1h30m" in str(err.value) and "1.5h" in str(err.value)


def test_durations_everywhere(cli):
    job = json.loads(cli.ok("enqueue", "--json", "--timeout", "1h30m", "--delay", "1.5h", "true").stdout)
    assert job["timeout"] == 5400
    run_at, created = (datetime.fromisoformat(job[k][:-1]) for k in ("run_at", "created_at"))
    assert abs((run_at - created).total_seconds() - 5400) < 0.01
    assert json.loads(cli.ok("enqueue", "--json", '{"command": "true", "timeout": "2d"}').stdout)["timeout"] == 172800
    assert cli.ok("config", "set", "backoff-max", "1h30m").stdout == "backoff-max = 5400.0\n"
    assert cli.ok("worker", "stop", "--timeout", "1m30s").returncode == 0
    line = error_line(cli("worker", "stop", "--timeout", "5x"), 2, "invalid --timeout '5x'", "1h30m")
    assert "90s" in line
    error_line(cli("enqueue", "--timeout", "30m1h", "true"), 2, "invalid timeout '30m1h'", "1h30m")
    error_line(cli("config", "set", "job-timeout", "1y"), 2, "invalid value for job-timeout", "'1y'", "1h30m")


@pytest.mark.parametrize("text, size", [
    ("65536", 65536), ("64KiB", 65536), ("10MB", 10_000_000), ("1MiB", 1_048_576), ("64kib", 65536),
    ("2KB", 2000), ("1.5KiB", 1536), ("100B", 100), (" 64 KiB ", 65536), ("0", 0),
])
def test_size_grammar(text, size):
    assert parse_value("output-limit", text) == str(size)


def test_output_limit_takes_sizes_and_prints_bytes(cli):
    assert cli.ok("config", "set", "output-limit", "64KiB").stdout == "output-limit = 65536\n"
    assert cli.ok("config", "get", "output-limit").stdout == "65536\n"
    assert cli.ok("config", "set", "output-limit", "10MB").stdout == "output-limit = 10000000\n"
    assert cli.ok("config", "get", "output-limit").stdout == "10000000\n"
    assert cli.ok("config", "set", "output-limit", "1MiB").stdout == "output-limit = 1048576\n"
    assert json.loads(cli.ok("config", "list", "--json").stdout)["output-limit"] == 1048576
    error_line(cli("config", "set", "output-limit", "10XB"), 2, "invalid value for output-limit", "'10XB'", "KiB", "1024", "1000")
    error_line(cli("config", "set", "output-limit", "65MiB"), 2, "'65MiB' is out of range")
    assert cli.ok("config", "get", "output-limit").stdout == "1048576\n"


@pytest.mark.parametrize("text", ["1.5", "1.1KiB", "10XB", "1e3", "-1", "64 K", "KiB", ""])
def test_sizes_refused_name_the_value_and_the_forms(text):
    with pytest.raises(ValidationError) as err:
        parse_value("output-limit", text)
    assert f"invalid value for output-limit: {text!r}" in str(err.value)
