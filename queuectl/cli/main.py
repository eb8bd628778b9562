"""Entry point: parse, run one command, map errors to exit codes (0, 1, 2)."""

import gc
import logging
import os
import sys

from queuectl.cli.parser import build_parser

# Commands that may run for hours: they keep the cyclic garbage collector on.
# Every other command is over in a moment.
LONG_RUNNING = frozenset({"worker start"})


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. May be called repeatedly in one process."""
    return execute(parse(argv))


def parse(argv: list[str] | None = None):
    """The parsed command line; usage errors exit 2 here, with argparse's message."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(processName)s %(levelname)s %(message)s",
    )
    if not args.debug:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    return args


def execute(args) -> int:
    # A short command creates little cyclic garbage, and all of it goes at exit, but
    # the collector would still make its passes over every object that importing
    # SQLAlchemy allocates: some 5% of `queuectl enqueue`. Off for the command's run
    # (restored after, for callers that run several commands in one process).
    pause_gc = args.command_name not in LONG_RUNNING and gc.isenabled()
    if pause_gc:
        gc.disable()
    try:
        return _execute(args)
    finally:
        if pause_gc:
            gc.enable()


def _execute(args) -> int:
    from queuectl.errors import QueuectlError

    try:
        from queuectl.cli import commands

        return commands.run(args) or 0
    except QueuectlError as err:
        return _fail(args, err, err.exit_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `queuectl list | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as err:  # anything unforeseen: one line, not a traceback
        # Its first line only: a database library puts the statement and its
        # parameters on the lines after (the store translates those it sees).
        return _fail(args, err, 1, prefix="unexpected error: ", first_line_only=True)


def _fail(args, err: BaseException, code: int, prefix: str = "", first_line_only: bool = False) -> int:
    if args.debug:
        logging.getLogger("queuectl").exception("failed")
    text = str(err).strip()
    if first_line_only:
        text = text.splitlines()[0] if text else ""
    text = " ".join(text.split()) or type(err).__name__
    print(f"queuectl: error: {prefix}{text}", file=sys.stderr)
    return code


def run_process() -> None:
    """The program itself (`python -m queuectl`): main(), then a quick exit.

    Tearing down an interpreter that has SQLAlchemy loaded (a last garbage collection,
    then every module freed one by one) costs a short command nearly 20% of its time,
    and achieves nothing: when execute() returns, the command has disposed of its
    databases (commands.run) and written its output, so after a flush os._exit ends
    the process. If a flush fails, the normal exit reports it, as it always has.
    """
    args = parse()
    code = execute(args)
    # `worker start` too: its supervisor has joined every worker it forked before
    # returning (Supervisor.shutdown), which is all multiprocessing's exit would do;
    # a `--burst` run is timed from start to exit.
    logging.shutdown()  # what its atexit handler would have done: flush and close handlers
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: Python started with that descriptor closed
                stream.flush()
    except (OSError, ValueError):  # ValueError: a closed stream
        sys.exit(code)
    os._exit(code)
