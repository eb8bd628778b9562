"""What server-side prepared statements would save a PostgreSQL worker's hot path.

    python bench/prepared_statements.py [URL] [--jobs N] [--rounds R]

A worker's loop without its processes: in one process, N jobs enqueued, then claimed
and completed one after another as a worker does (the first `claim`, then
`complete_and_claim` for each), on a store opened as a worker opens it. Rounds
alternate psycopg's default (a statement prepared on the server at its 5th run) with
queuectl's (never prepared: PgBouncer in transaction mode cannot follow a prepared
statement, docs/design.md section 19), each in a fresh database; prints jobs/s per
round and the medians. Never part of the test run.
"""

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from queuectl import jobspec
from queuectl.store import Store
from queuectl.store.dialect import PostgresDialect

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def drain(url: str, jobs: int, threshold: int | None) -> float:
    """Jobs/s of a claim-and-complete loop, psycopg's prepare_threshold = threshold."""
    options = PostgresDialect.engine_options

    def patched(self, durable):
        found = options(self, durable)
        found["connect_args"]["prepare_threshold"] = threshold
        return found

    PostgresDialect.engine_options = patched  # type: ignore[method-assign]
    try:
        store = Store.open(url, durable=False, one_connection=True)
    finally:
        PostgresDialect.engine_options = options  # type: ignore[method-assign]
    try:
        store.enqueue([jobspec.build("true") for _ in range(jobs)])
        start = time.perf_counter()
        job, done = store.claim("w-bench", ()), 0
        while job is not None:
            _, job = store.complete_and_claim(job.id, "w-bench", output="", queues=())
            done += 1
        took = time.perf_counter() - start
    finally:
        store.close()
    assert done == jobs
    return jobs / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=DEFAULT_URL)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    admin = sa.create_engine(args.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    results: dict[str, list[float]] = {"prepared (psycopg default, 5)": [], "never prepared (queuectl)": []}
    for n in range(args.rounds):
        for label, threshold in (("prepared (psycopg default, 5)", 5), ("never prepared (queuectl)", None)):
            name = f"qctl_bench_prep_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            try:
                rate = drain(sa.engine.make_url(args.url).set(database=name).render_as_string(hide_password=False), args.jobs, threshold)
            finally:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            results[label].append(rate)
            print(f"round {n + 1}: {label}: {rate:,.0f} jobs/s", flush=True)
    for label, rates in results.items():
        print(f"{label}: median {statistics.median(rates):,.0f} jobs/s (min {min(rates):,.0f}, max {max(rates):,.0f})")
    admin.dispose()


if __name__ == "__main__":
    main()
