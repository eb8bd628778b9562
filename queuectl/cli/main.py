"""Entry point: parse, run one command, map errors to exit codes (0, 1, 2)."""

import logging
import os
import sys

from queuectl.cli.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 here, with argparse's message
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(processName)s %(levelname)s %(message)s",
    )
    if not args.debug:
        logging.getLogger("alembic").setLevel(logging.WARNING)
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
        return _fail(args, err, 1, prefix="unexpected error: ")


def _fail(args, err: BaseException, code: int, prefix: str = "") -> int:
    if args.debug:
        logging.getLogger("queuectl").exception("failed")
    text = " ".join(str(err).split()) or type(err).__name__
    print(f"queuectl: error: {prefix}{text}", file=sys.stderr)
    return code
