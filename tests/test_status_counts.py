"""`status` counts without counting the history: completed is derived from the
'_seq' and '_purged' counters, and must always equal a real count."""

import random

from sqlalchemy import select

from queuectl.store import counts, dlq, schema, transitions
from queuectl.store.database import Database, resolve_url
from queuectl.store.models import DEAD_JOBS
from support import CFG, T0, enqueue, real_counts, seconds


def derived_counts(db) -> dict[str, int]:
    with db.read() as conn:
        return counts.job_counts(conn)


def test_counts_match_the_real_ones_through_every_kind_of_change(db):
    rng = random.Random(7)
    now = T0
    for step in range(60):
        now += seconds(10)
        action = rng.choice(["enqueue", "enqueue", "run", "run", "run", "retry", "purge"])
        if action == "enqueue":
            for _ in range(rng.randint(1, 4)):
                enqueue(db, now=now, max_retries=rng.choice([0, 1]))
        elif action == "run":
            with db.begin() as conn:
                job = transitions.claim(conn, "w1", None, now)
                if job is not None:
                    if rng.random() < 0.5:
                        transitions.complete(conn, job.id, "w1", exit_code=0, output="", now=now)
                    elif rng.random() < 0.7:
                        transitions.fail(conn, job.id, "w1", error="exit code 1", exit_code=1, output="", now=now, cfg=CFG)
                    # else: left running
        elif action == "retry":
            with db.read() as conn:
                dead = conn.execute(select(DEAD_JOBS.c.id)).scalars().all()
            if dead:
                dlq.retry(db, rng.sample(dead, rng.randint(1, len(dead))), now=now)
        else:
            with db.read() as conn:
                dead = conn.execute(select(DEAD_JOBS.c.id)).scalars().all()
            if dead:
                dlq.purge(db, rng.sample(dead, rng.randint(1, len(dead))))
        assert derived_counts(db) == real_counts(db), f"after step {step} ({action})"
    assert real_counts(db)["completed"] > 0 and real_counts(db)["dead"] >= 0


def test_upgrading_a_database_that_already_purged_jobs_counts_them(empty_db_url):
    db = Database(resolve_url(empty_db_url))
    try:
        with db.translate_errors(), db.dialect.migration_lock(db.engine) as conn:
            schema.upgrade(conn, "0001")  # a database made before the '_purged' counter
        # What that older queuectl did, in its own schema: 5 enqueued, 3 dead, 2 of them
        # purged (with no counter to bump).
        columns = "id, seq, command, attempts, max_retries, priority, queue, run_at, cwd, created_at, updated_at"
        with db.begin() as conn:
            for seq in range(1, 6):
                conn.exec_driver_sql(
                    f"INSERT INTO jobs ({columns}, state) VALUES (?, ?, 'true', 0, 0, 0, 'default', ?, '/', ?, ?, 'pending')"
                    if db.dialect.name == "sqlite" else
                    f"INSERT INTO jobs ({columns}, state) VALUES (%s, %s, 'true', 0, 0, 0, 'default', %s, '/', %s, %s, 'pending')",
                    (str(seq), seq, T0.replace(tzinfo=None), T0.replace(tzinfo=None), T0.replace(tzinfo=None)),
                )
            conn.exec_driver_sql("UPDATE config SET value = '5' WHERE key = '_seq'")
            conn.exec_driver_sql(f"INSERT INTO dead_jobs ({columns}, state, dead_at) SELECT {columns}, 'dead', run_at FROM jobs WHERE id IN ('1', '2', '3')")
            conn.exec_driver_sql("DELETE FROM jobs WHERE id IN ('1', '2', '3')")
            conn.exec_driver_sql("DELETE FROM dead_jobs WHERE id IN ('1', '2')")

        schema.ensure(db)

        assert derived_counts(db) == real_counts(db) == {"pending": 2, "running": 0, "completed": 0, "failed": 0, "dead": 1, "cancelled": 0, "blocked": 0}
    finally:
        db.dispose()
