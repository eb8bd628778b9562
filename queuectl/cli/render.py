"""What text output may put on a terminal: control characters escaped, state colours,
the terminal's size, and aligned tables.

A job's command, id, queue, error and output come from whoever enqueued it or from
the program it ran. Printed raw, an ESC starts an escape sequence (moving the cursor,
rewriting the title, hiding the lines before it), a CR overwrites the line, a BEL
rings. Every table and `show`'s text view pass those fields through `escape`;
`logs` (meant for piping) and `--json` (escaped by JSON itself) print them as stored.
"""

import os
import re
import shutil
import sys
import unicodedata

# ANSI colours (SGR) for job states; the rest stay plain.
STATE_COLOURS = {"completed": "32", "dead": "31", "failed": "33", "running": "36"}
_RESET = "\x1b[0m"


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
    return f"\x1b[{code}m{text}{_RESET}" if code else text


def terminal_width(stream=None) -> int | None:
    """The terminal's columns when `stream` (stdout) is one, else None (no limit)."""
    if not is_terminal(stream):
        return None
    return shutil.get_terminal_size().columns


def shorten(text: str, width: int = 60, collapse: bool = True) -> str:
    """`text` in at most `width` characters (ending "..." when cut); collapse: its
    runs of whitespace, line breaks included, as one space."""
    if collapse:
        text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def table(rows: list[list], headers: list[str], *, colour: bool = False, fit: int | None = None, width: int | None = None) -> list[str]:
    """An aligned table's lines, every cell escaped. colour: paint the STATE column.
    fit: the index of the column cut so that lines fit in `width` (the last column,
    so the others stay aligned); no width, no cut."""
    cells = [headers] + [["" if c is None else escape(str(c)) for c in row] for row in rows]
    if width is not None and fit is not None:
        others = sum(max(len(r[i]) for r in cells) + 2 for i in range(len(headers)) if i != fit)
        room = max(width - others, 20)
        for row in cells[1:]:
            row[fit] = shorten(row[fit], room, collapse=False)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    state = headers.index("STATE") if colour and "STATE" in headers else None
    lines = []
    for number, row in enumerate(cells):
        padded = [c.ljust(w) for c, w in zip(row, widths)]
        if state is not None and number:
            padded[state] = state_colour(row[state], padded[state])
        lines.append("  ".join(padded).rstrip())
    return lines


# The only escape sequences in a rendered line are the colours above: every field
# from outside went through escape().
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def cut(line: str, width: int) -> str:
    """`line` cut to `width` visible characters, its colour codes kept (and reset if
    the cut falls inside a coloured span)."""
    if len(line) <= width:
        return line
    out, seen, pos = [], 0, 0
    for match in _SGR.finditer(line):
        text = line[pos : match.start()]
        if seen + len(text) >= width:
            break
        out.append(text)
        out.append(match.group())
        seen += len(text)
        pos = match.end()
    else:
        if seen + len(line) - pos <= width:
            return line
    out.append(line[pos : pos + width - seen])
    result = "".join(out)
    colours = _SGR.findall(result)
    return result + _RESET if colours and colours[-1] != _RESET else result
