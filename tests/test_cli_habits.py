"""Command-line habits (#12): global flags after the subcommand, `enqueue ls -la`, an
empty --file. Real processes through the `cli` fixture."""

import json
import os

from conftest import env_for
from support import error_line, usage_error
from worker_support import LONG


def usage_of(result, subcommand: str, *fragments: str) -> str:
    """A usage error reported by `queuectl SUBCOMMAND`'s own parser, with its usage."""
    last = usage_error(result, *fragments)
    assert result.stderr.startswith(f"usage: queuectl {subcommand} "), result.stderr
    assert last.startswith(f"queuectl {subcommand}: error: "), result.stderr
    return last


# --- 1. global flags after the subcommand ----------------------------------------------------


def test_db_after_the_subcommand(cli, tmp_path):
    cli.ok("enqueue", "--id", "here", "true")
    elsewhere = env_for(str(tmp_path / "elsewhere.db"))  # $QUEUECTL_DB names another database
    assert [j["id"] for j in json.loads(cli.ok("list", "--db", cli.db_url, "--json", env=elsewhere).stdout)] == ["here"]
    assert "Pending: 1" in cli.ok("status", "--db", cli.db_url, env=elsewhere).stdout
    assert "empty" in cli.ok("dlq", "list", "--db", cli.db_url, env=elsewhere).stdout
    assert "empty" in cli.ok("dlq", "--db", cli.db_url, env=elsewhere).stdout
    assert cli.ok("config", "get", "max-retries", "--db", cli.db_url, env=elsewhere).stdout == "3\n"
    # given before and after: the one after the subcommand wins
    wrong = str(tmp_path / "wrong.db")
    assert "Pending: 1" in cli.ok("--db", wrong, "status", "--db", cli.db_url, env=elsewhere).stdout
    assert "Pending: 0" in cli.ok("--db", cli.db_url, "status", "--db", wrong, env=elsewhere).stdout
    # and before only, as always
    assert "Pending: 1" in cli.ok("--db", cli.db_url, "status", env=elsewhere).stdout


def test_debug_after_the_subcommand(cli):
    quiet = cli("show", "nosuch")
    loud = cli("show", "nosuch", "--debug")
    error_line(quiet, 1, "nosuch")
    assert loud.returncode == 1 and "Traceback" in loud.stderr, loud.stderr


def test_a_usage_error_shows_the_subcommands_usage(scli):
    usage_of(scli("status", "--bogus"), "status", "unrecognized arguments: --bogus")
    usage_of(scli("dlq", "list", "--bogus"), "dlq list", "unrecognized arguments: --bogus")
    usage_of(scli("worker", "stop", "extra"), "worker stop", "unrecognized arguments: extra")
    usage_of(scli("enqueue", "--bogus", "ls"), "enqueue", "unrecognized arguments: --bogus")
    usage_of(scli("enqueue", "--priority"), "enqueue", "--priority")
    usage_of(scli("list", "--db"), "list", "--db")


# --- 2. enqueue COMMAND ARGS... ---------------------------------------------------------------


def test_the_commands_own_options_are_its_own(cli):
    assert cli.ok("enqueue", "ls", "-la").stdout.endswith("cmd=ls -la\n")
    added = json.loads(cli.ok("enqueue", "--queue", "q", "--id", "dashes", "--json", "--", "ls", "-la").stdout)
    assert (added["command"], added["queue"], added["id"]) == ("ls -la", "q", "dashes")
    # enqueue's own option names after the command belong to the command
    added = json.loads(cli.ok("enqueue", "--json", "--id", "mine", "echo", "--id", "theirs", "--json").stdout)
    assert (added["id"], added["command"]) == ("mine", "echo --id theirs --json")
    # a `--` inside the command is the command's
    added = json.loads(cli.ok("enqueue", "--json", "printf", "%s\\n", "-n", "--", "--queue").stdout)
    assert added["command"] == "printf '%s\\n' -n -- --queue"
    assert added["queue"] == "default"


def test_the_command_runs_with_its_options(cli):
    cli.ok("enqueue", "--id", "opts", "printf", "%s|", "-n", "--", "--db", "x")
    cli.ok("worker", "start", "--burst", timeout=LONG)
    assert cli.ok("logs", "opts").stdout == "-n|--|--db|x|"


def test_an_empty_command_is_still_refused(scli):
    error_line(scli("enqueue"), 2, "the command is empty")
    error_line(scli("enqueue", "--queue", "q", "--"), 2, "the command is empty")


# --- 4. an empty --file ---------------------------------------------------------------------------


def test_a_file_with_no_jobs_is_no_failure(cli, tmp_path):
    for content in ("", "\n\n", "# nothing today\n   \n"):
        result = cli.ok("enqueue", "--file", "-", input=content)
        assert (result.stdout, result.stderr) == ("no jobs\n", "")
    empty = tmp_path / "empty.jobs"
    empty.write_text("# comment only\n")
    assert cli.ok("enqueue", "-f", empty).stdout == "no jobs\n"
    assert cli.ok("enqueue", "-f", "-", "--json", input="").stdout == "[]\n"
    assert cli.ok("list").stdout == "no jobs\n"


def test_an_empty_file_does_not_create_the_database(scli, tmp_path):
    assert scli.ok("enqueue", "--file", "-", input="").stdout == "no jobs\n"
    assert not os.path.exists(scli.db_url)
