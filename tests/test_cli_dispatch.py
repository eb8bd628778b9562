"""Every command the parser names has the function that runs it (`dlq retry` is
commands.run_dlq_retry): the name is written once, in the parser."""

import argparse

from queuectl.cli import commands
from queuectl.cli.parser import build_parser


def command_names(parser: argparse.ArgumentParser) -> set[str]:
    names = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if "command_name" in sub._defaults:
                    names.add(sub._defaults["command_name"])
                names |= command_names(sub)
    return names


def test_every_parsed_command_has_its_function():
    names = command_names(build_parser())
    assert {"enqueue", "list", "dlq retry", "worker start", "db downgrade"} <= names
    missing = [n for n in sorted(names) if not callable(getattr(commands, "run_" + n.replace(" ", "_"), None))]
    assert missing == []
