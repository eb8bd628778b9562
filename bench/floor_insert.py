"""Reference for the bulk-enqueue figure: the same rows through the bare database driver.

    python bench/floor_insert.py URL FILE FIRST_SEQ

Reads FILE (one command a line) and inserts one `jobs` row per line, in one
transaction, with the driver's own executemany (sqlite3, or psycopg 3): no
SQLAlchemy, no validation, no id counter. Its wall time (interpreter start-up
included, like the `queuectl enqueue --file` process it is compared with) is the
least this work costs from Python on this machine.
"""

import os
import sys
from datetime import UTC, datetime

COLUMNS = (
    "id", "seq", "command", "state", "attempts", "max_retries", "priority", "queue", "run_at", "timeout",
    "cwd", "created_at", "updated_at", "started_at", "finished_at", "exit_code", "last_error", "output", "worker_id",
)


def main() -> None:
    url, path, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    now = datetime.now(UTC).replace(tzinfo=None)
    cwd = os.getcwd()
    with open(path) as f:
        commands = [line.strip() for line in f if line.strip()]
    if url.startswith("sqlite:///"):
        import sqlite3

        stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DATETIME format
        conn = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        conn.execute("PRAGMA synchronous = FULL")  # what `queuectl enqueue` uses
        marks = ", ".join("?" * len(COLUMNS))
        begin, commit = (lambda: conn.execute("BEGIN IMMEDIATE")), (lambda: conn.execute("COMMIT"))
    else:
        import psycopg

        stamp = now
        conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1))
        marks = ", ".join(["%s"] * len(COLUMNS))
        begin, commit = (lambda: None), conn.commit
    rows = [
        (str(first + i), first + i, command, "pending", 0, 3, 0, "default", stamp, None, cwd, stamp, stamp, None, None, None, None, None, None)
        for i, command in enumerate(commands)
    ]
    begin()
    conn.cursor().executemany(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({marks})", rows)
    commit()
    conn.close()
    print(len(rows))


if __name__ == "__main__":
    main()
