"""`queuectl completion SHELL`: a tab-completion script generated from the parser.

shtab writes it, for bash, zsh and fish alike, by walking build_parser(): the
subcommands at every depth, each one's options, an option's choices, and file or
directory names where the parser marks a path (parser._completes). The script is
static shell code: pressing tab starts no Python (argcomplete's scripts call the
program back at every tab), so it costs nothing and never imports SQLAlchemy.
"""

from queuectl.cli.parser import build_parser


def script(shell: str) -> str:
    """The completion script for `shell` (one of parser.COMPLETION_SHELLS)."""
    import shtab  # only this command needs it

    return shtab.complete(build_parser(), shell=shell)
