"""`queuectl config`: keys, defaults, validation; values live in the database."""

import pytest

from queuectl import config
from queuectl.store import config as settings
from support import config_value, enqueue, error_line, job_row, usage_error

DEFAULTS = {
    "max-retries": 3,
    "backoff-base": 2.0,
    "backoff-max": 3600.0,
    "backoff-jitter": 0.0,
    "job-timeout": 0.0,
    "poll-interval": 0.05,
    "heartbeat-interval": 1.0,
    "heartbeat-timeout": 30.0,
    "kill-grace": 10.0,
    "output-limit": 65536,
    "retain-completed": 604800.0,
    "retain-cancelled": 604800.0,
    "retain-dead": None,  # never: kept until purged ("never" in text)
    "prune-interval": 60.0,
}




def test_list_shows_every_key_and_its_default(cli):
    assert list(config.KEYS) == list(DEFAULTS)
    assert cli.json("config", "list") == DEFAULTS
    lines = cli.ok("config", "list").stdout.splitlines()
    assert lines[0].split() == ["KEY", "VALUE", "MEANING"]
    assert [line.split()[:3] for line in lines[1:]] == [[key, config.display(value), "(default)"] for key, value in DEFAULTS.items()]


def test_set_get_unset(cli, db):
    assert cli.ok("config", "set", "max_retries", " 5 ").stdout == "max-retries = 5\n"
    assert cli.ok("config", "set", "backoff-max", "1h").stdout == "backoff-max = 3600.0\n"
    assert cli.ok("config", "set", "job_timeout", "90s").stdout == "job-timeout = 90.0\n"
    assert cli.ok("config", "get", "max_retries").stdout == "5\n"

    # Stored in the database, so every process (here: the library) sees it.
    assert config_value(db, "max-retries") == "5"
    with db.read() as conn:
        assert settings.load(conn) == dict(DEFAULTS, **{"max-retries": 5, "job-timeout": 90.0})
    job_id = enqueue(db)
    assert (job_row(db, job_id).max_retries, job_row(db, job_id).timeout) == (5, 90.0)

    lines = {line.split()[0]: line for line in cli.ok("config", "list").stdout.splitlines()[1:]}
    assert "(default)" not in lines["max-retries"] and "(default)" not in lines["job-timeout"]
    assert "(default)" in lines["backoff-base"]

    assert cli.ok("config", "unset", "max_retries").stdout == "max-retries = 3 (default)\n"
    assert config_value(db, "max-retries") is None
    with db.read() as conn:
        assert settings.load(conn) == dict(DEFAULTS, **{"job-timeout": 90.0})


@pytest.mark.parametrize("action", [["get"], ["set", "5"], ["unset"]], ids=["get", "set", "unset"])
@pytest.mark.parametrize("key", ["max_retry", "_seq", ""])
def test_unknown_key_is_exit_2_listing_the_valid_keys(scli, sqlite_db, action, key):
    seq_before = config_value(sqlite_db, "_seq")
    line = error_line(scli("config", action[0], key, *action[1:]), 2, "unknown config key")
    assert all(name in line for name in DEFAULTS)
    assert config_value(sqlite_db, "_seq") == seq_before


BAD_VALUES = [
    ("max-retries", "-1"),
    ("max-retries", "abc"),
    ("max-retries", "2.5"),
    ("max-retries", "1001"),
    ("backoff-base", "0.5"),
    ("backoff-base", "nan"),
    ("backoff-jitter", "2"),
    ("backoff-max", "-5"),
    ("backoff-max", "forever"),
    ("job-timeout", "31d"),
    ("poll-interval", "0"),
    ("heartbeat-timeout", "0.1"),
    ("output-limit", "1.5"),
    ("output-limit", ""),
]


@pytest.mark.parametrize("key, value", BAD_VALUES)
def test_bad_values_are_exit_2_and_change_nothing(scli, sqlite_db, key, value):
    with sqlite_db.begin() as conn:
        settings.set_value(conn, "max-retries", "4")
    error_line(scli("config", "set", key, value), 2, f"invalid value for {key}")
    assert config_value(sqlite_db, "max-retries") == "4"
    assert config_value(sqlite_db, key) == ("4" if key == "max-retries" else None)


def test_usage_errors(scli):
    usage_error(scli("config"))
    usage_error(scli("config", "set", "max-retries"), "VALUE")
    usage_error(scli("config", "get"), "KEY")
    usage_error(scli("config", "frobnicate"), "invalid choice")
