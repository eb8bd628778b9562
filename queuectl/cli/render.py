"""What text output may put on a terminal: control characters escaped, state colours,
and the terminal's width.

A job's command, id, queue, error and output come from whoever enqueued it or from
the program it ran. Printed raw, an ESC starts an escape sequence (moving the cursor,
rewriting the title, hiding the lines before it), a CR overwrites the line, a BEL
rings. Every table and `show`'s text view pass those fields through `escape`;
`logs` (meant for piping) and `--json` (escaped by JSON itself) print them as stored.
"""

import os
import shutil
import sys
import unicodedata

# ANSI colours (SGR) for job states; the rest stay plain.
STATE_COLOURS = {"completed": "32", "dead": "31", "failed": "33", "running": "36"}


# What a terminal may act on: controls (C0, DEL, C1), format characters (bidi
# overrides, zero-width joiners...) and line/paragraph separators. Not unassigned or
# private-use characters, nor non-ASCII spaces: str.isprintable() refuses those too,
# but a terminal shows them as a glyph or a blank, and a command may hold them.
_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def escape(text: str, keep: str = "") -> str:
    """`text` with every character a terminal could act on written as a Python escape
    (ESC as \\x1b, CR as \\r, a C1 control as \\x9b...); characters in `keep` (say
    a newline, for a multi-line output) stay as they are."""
    if text.isprintable():
        return text
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in _UNSAFE and c not in keep else c for c in text)


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def colour_wanted(choice: str = "auto", stream=None) -> bool:
    """--color always / never; auto: only on a terminal, and not with NO_COLOR set
    (https://no-color.org). --color always wins over NO_COLOR, as a flag given now."""
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return is_terminal(stream)


def state_colour(state: str, text: str) -> str:
    """`text` (a state, maybe padded) in the state's colour, if it has one."""
    code = STATE_COLOURS.get(state)
    return f"\x1b[{code}m{text}\x1b[0m" if code else text


def terminal_width(stream=None) -> int | None:
    """The terminal's columns when `stream` (stdout) is one, else None (no limit)."""
    if not is_terminal(stream):
        return None
    return shutil.get_terminal_size().columns
