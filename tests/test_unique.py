"""Unique jobs (enqueue --unique-key): at most one active job per key, race-free
across processes on both backends; a finished job frees its key; retries refuse
a key another active job holds; the 0007 migration, with data, both ways."""

import json
import multiprocessing

import sqlalchemy as sa
from alembic import command as alembic_command
from sqlalchemy import select

from queuectl import jobspec
from queuectl.errors import KeyTaken
from queuectl.store import Store, jobs, schema
from queuectl.store.database import Database, resolve_url
from queuectl.store.models import JOBS, METADATA
from support import T0, all_ids, enqueue, error_line, finish, job_row, kill, real_counts

RACERS = 8


def active_with_key(db, key: str) -> list[tuple[str, str]]:
    with db.read() as conn:
        rows = conn.execute(select(JOBS.c.id, JOBS.c.state).where(JOBS.c.unique_key == key, JOBS.c.state.in_(("pending", "failed", "running"))))
        return [(row.id, row.state) for row in rows]


def _race(url: str, key: str, on_conflict: str, barrier, results) -> None:
    """One enqueuer process: its own connection, released at once with the others."""
    db = Database(url)
    spec = jobspec.build("true", unique_key=key, on_conflict=on_conflict)
    barrier.wait(timeout=60)
    try:
        row = jobs.enqueue(db, [spec])[0]
        results.put(("skipped" if row.get("skipped") else "enqueued", row["id"]))
    except KeyTaken as err:
        results.put(("refused", err.holder))
    except Exception as err:  # reported to the test, not lost in a child
        results.put(("crashed", repr(err)))
    finally:
        db.dispose()


def race(db, key: str, on_conflict: str) -> list[tuple[str, str]]:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(RACERS), ctx.Queue()
    db.engine.dispose()  # no pooled connection crosses the fork
    procs = [ctx.Process(target=_race, args=(db.url, key, on_conflict, barrier, results)) for _ in range(RACERS)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return outcomes


def test_racing_enqueuers_leave_exactly_one_job(db):
    outcomes = race(db, "nightly", "error")
    enqueued = [job_id for what, job_id in outcomes if what == "enqueued"]
    assert len(enqueued) == 1, outcomes
    assert sorted(outcomes) == sorted([("enqueued", enqueued[0])] + [("refused", enqueued[0])] * (RACERS - 1)), outcomes
    assert active_with_key(db, "nightly") == [(enqueued[0], "pending")]

    # With skip, every loser is told the winner's id; still one job.
    outcomes = race(db, "hourly", "skip")
    winner = [job_id for what, job_id in outcomes if what == "enqueued"]
    assert len(winner) == 1, outcomes
    assert sorted(outcomes) == sorted([("enqueued", winner[0])] + [("skipped", winner[0])] * (RACERS - 1)), outcomes
    assert active_with_key(db, "hourly") == [(winner[0], "pending")]
    assert len(all_ids(db)) == 2
    # Skipped enqueues took no sequence number: the counts of status stay exact.
    assert Store(db).job_total() == 2


def test_error_names_the_holder_and_skip_prints_its_id(cli, db):
    first = cli.json("enqueue", "--unique-key", "report", "sleep 1")
    error_line(cli("enqueue", "--unique-key", "report", "true"), 1, "unique key 'report'", f"job {first['id']} (pending)")

    skipped = cli.ok("enqueue", "--unique-key", "report", "--on-conflict", "skip", "true")
    assert skipped.stdout == f"skipped: unique key 'report' is held by id={first['id']} (pending); nothing enqueued\n"
    as_json = cli.json("enqueue", "--unique-key", "report", "--on-conflict", "skip", "true")
    assert (as_json["id"], as_json["command"], as_json["skipped"]) == (first["id"], "sleep 1", True)
    # A JSON spec takes the same keys.
    spec = json.dumps({"command": "true", "unique_key": "report", "on_conflict": "skip"})
    assert f"id={first['id']}" in cli.ok("enqueue", spec).stdout
    assert all_ids(db) == [first["id"]]

    # show and list show the key.
    assert cli.json("show", first["id"])["unique_key"] == "report"
    assert [j["unique_key"] for j in cli.json("list")] == ["report"]
    assert "unique_key:   report" in cli.ok("show", first["id"]).stdout


def test_bad_unique_key_or_on_conflict_is_a_usage_error(cli, db):
    error_line(cli("enqueue", "--unique-key", "", "true"), 2, "invalid unique key")
    error_line(cli("enqueue", "--unique-key", "x" * 256, "true"), 2, "invalid unique key")
    error_line(cli("enqueue", "--unique-key", "a\x1bb", "true"), 2, "invalid unique key")
    error_line(cli("enqueue", "--unique-key", "k", "--on-conflict", "replace", "true"), 2, "on_conflict", "error, skip")
    error_line(cli("enqueue", json.dumps({"command": "true", "unique_key": 5})), 2, "invalid unique key")
    assert all_ids(db) == []


def test_a_finished_job_frees_its_key(db):
    store = Store(db)
    done = enqueue(db, unique_key="k")
    finish(db, done)
    cancelled = enqueue(db, unique_key="k")
    store.cancel([cancelled])
    dead = enqueue(db, unique_key="k", max_retries=0)
    kill(db, dead)
    again = enqueue(db, unique_key="k")
    assert active_with_key(db, "k") == [(again, "pending")]
    # Failed and running jobs still hold it.
    with db.begin() as conn:
        conn.execute(sa.update(JOBS).where(JOBS.c.id == again).values(state="failed"))
    try:
        enqueue(db, unique_key="k")
    except KeyTaken as err:
        assert err.holder == again
    else:
        raise AssertionError("a failed job's key was taken")


def test_retry_refuses_a_key_another_active_job_holds(cli, db):
    old = enqueue(db, "echo old", unique_key="sync")
    finish(db, old)
    dead = enqueue(db, "echo dead", unique_key="sync", max_retries=0)
    kill(db, dead)
    holder = enqueue(db, "echo new", unique_key="sync")

    error_line(cli("retry", old), 1, f"job {old}", "unique key 'sync'", f"job {holder} (pending)")
    error_line(cli("dlq", "retry", dead), 1, f"job {dead}", f"job {holder} (pending)")
    error_line(cli("dlq", "retry", "--all"), 1, f"job {holder} (pending)")
    error_line(cli("retry", "--state", "completed"), 1, f"job {holder}")
    assert job_row(db, old).state == "completed"
    assert active_with_key(db, "sync") == [(holder, "pending")]

    # Two finished jobs of one key cannot both come back at once.
    finish(db, holder)
    error_line(cli("retry", old, holder), 1, "share unique key 'sync'")
    assert cli.ok("retry", old).stdout.startswith("retried 1 job")
    finish(db, old)
    assert cli.ok("dlq", "retry", dead).stdout.startswith("retried 1 job")
    assert active_with_key(db, "sync") == [(dead, "pending")]
    counts = Store(db).status(T0)[0]
    counts.pop("ready")
    assert counts == real_counts(db)


def test_file_loads_follow_on_conflict_all_or_nothing(cli, db, tmp_path):
    held = enqueue(db, unique_key="held")
    lines = ["echo plain", json.dumps({"command": "echo a", "unique_key": "a"}), json.dumps({"command": "echo a2", "unique_key": "a"})]
    path = tmp_path / "jobs.txt"
    path.write_text("\n".join(lines) + "\n")
    error_line(cli("enqueue", "--file", path), 1, "jobs.txt: line 3: unique key 'a'", "(line 2)")
    path.write_text("\n".join(lines[:2] + [json.dumps({"command": "echo h", "unique_key": "held"})]) + "\n")
    error_line(cli("enqueue", "--file", path), 1, "jobs.txt: line 3: unique key 'held'", f"job {held}")
    assert all_ids(db) == [held]

    # --on-conflict skip as the flag default: the duplicate and the held key are left out.
    path.write_text("\n".join(lines + [json.dumps({"command": "echo h", "unique_key": "held"})]) + "\n")
    result = cli.ok("enqueue", "--on-conflict", "skip", "--file", path)
    assert result.stdout.endswith("; skipped 2 whose unique key an active job held\n"), result.stdout
    rows = cli.json("enqueue", "--on-conflict", "skip", "--file", path)
    assert [(r["command"], r.get("skipped", False)) for r in rows] == [
        ("echo plain", False), ("echo a", True), ("echo a", True), ("true", True)]
    assert [j["command"] for j in cli.json("list")] == ["true", "echo plain", "echo a", "echo plain"]


def index_definitions(engine) -> dict:
    inspector = sa.inspect(engine)
    found = {}
    for table in inspector.get_table_names():
        for ix in inspector.get_indexes(table):
            if ix.get("duplicates_constraint"):  # PostgreSQL lists a unique constraint's index too
                continue
            options = ix.get("dialect_options", {})
            where = options.get("sqlite_where", options.get("postgresql_where"))
            found[ix["name"]] = (tuple(ix["column_names"]), bool(ix["unique"]), str(where) if where is not None else None,
                                 tuple(ix.get("column_sorting", {}).items()))
    return found


def migrate(db, action, revision: str) -> None:
    with db.engine.connect() as conn:
        action(schema.alembic_config(conn), revision)
        conn.commit()


def test_the_0007_migration_from_0005_with_data_both_ways(empty_db_url):
    db = Database(resolve_url(empty_db_url))
    try:
        migrate(db, alembic_command.upgrade, "0005")
        at_0005 = index_definitions(db.engine)
        with db.engine.connect() as conn:
            conn.exec_driver_sql("UPDATE config SET value = '3' WHERE key = '_seq'")
            columns = "id, seq, command, state, attempts, max_retries, priority, queue, run_at, cwd, created_at, updated_at"
            values = "'{0}', {1}, 'true', '{2}', 0, 3, 0, 'default', '2030-01-01 00:00:00', '/', '2030-01-01 00:00:00', '2030-01-01 00:00:00'"
            conn.exec_driver_sql(f"INSERT INTO jobs ({columns}) VALUES ({values.format('waiting', 1, 'pending')})")
            conn.exec_driver_sql(f"INSERT INTO jobs ({columns}) VALUES ({values.format('done', 2, 'completed')})")
            conn.exec_driver_sql(f"INSERT INTO dead_jobs ({columns}, dead_at) VALUES ({values.format('gone', 3, 'dead')}, '2030-01-01 00:00:00')")
            conn.commit()
        migrate(db, alembic_command.upgrade, "head")
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT id, unique_key FROM jobs ORDER BY seq").all() == [("waiting", None), ("done", None)]
            assert conn.exec_driver_sql("SELECT id, unique_key FROM dead_jobs").all() == [("gone", None)]
        # The head schema, partial indexes and all (test_migrations checks the predicates).
        from test_migrations import schema_diff

        assert schema_diff(db.engine) == []
        head = index_definitions(db.engine)
        assert head["ix_jobs_unique_key"][:2] == (("unique_key",), True)
        assert "pending" in head["ix_jobs_unique_key"][2] and "running" in head["ix_jobs_unique_key"][2]
        assert head["ix_dead_jobs_dead_at"][0] == ("dead_at",)
        assert {k: v for k, v in head.items() if k in at_0005} == at_0005  # the older indexes kept whole
        assert {ix.name for t in METADATA.tables.values() for ix in t.indexes} == set(head)
        # Keys work on the upgraded data.
        enqueue(db, unique_key="k")
        try:
            enqueue(db, unique_key="k")
        except KeyTaken:
            pass
        else:
            raise AssertionError("the unique index is missing")

        migrate(db, alembic_command.downgrade, "0005")
        with db.engine.connect() as conn:
            assert "unique_key" not in {c["name"] for c in sa.inspect(conn).get_columns("jobs")}
            assert "unique_key" not in {c["name"] for c in sa.inspect(conn).get_columns("dead_jobs")}
            assert conn.exec_driver_sql("SELECT id FROM jobs ORDER BY seq").scalars().all() == ["waiting", "done", "4"]
        assert index_definitions(db.engine) == at_0005
        migrate(db, alembic_command.upgrade, "head")
        assert schema_diff(db.engine) == []
    finally:
        db.dispose()
