"""The entry point of the process `worker start --detach` starts: the same pool as
the foreground, with the options the CLI parsed (handed over by supervisor.detach),
logging to stderr, which detach pointed at the log file."""

import logging
import os
import sys

from queuectl.errors import QueuectlError
from queuectl.worker import supervisor


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return supervisor.run(os.environ["QUEUECTL_DB"], supervisor.options_from_env())
    except QueuectlError as err:
        print(f"queuectl: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.exit(code)
