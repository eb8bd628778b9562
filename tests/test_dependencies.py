"""Job dependencies (#13): `enqueue --after` / `--after-any` block a job until the jobs
it names have ended; settled in the transaction that ends them (store/dependencies.py),
down the chain; `--file` pipelines all or nothing; `retry --with-dependents`; the 0006
migration from 0005 with data, its indexes intact both ways."""

import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command as alembic_command

from conftest import wait_until
from queuectl.store import schema, transitions
from queuectl.store.models import JOBS
from support import T0, config_value, enqueue, error_line, finish, kill, real_counts, take
from worker_support import (
    FAST,
    LONG,
    configure,
    job,
    read_lines,
    supervisors,  # noqa: F401  (fixture)
    wait_lines,
)


def timed(side, name: str, seconds: float = 0.3) -> str:
    """A command that records when it starts and ends (epoch seconds) in `side`."""
    return (f'echo "{name} start $(date +%s.%N)" >> {side}; sleep {seconds}; '
            f'echo "{name} end $(date +%s.%N)" >> {side}')


def times(side) -> dict[tuple[str, str], float]:
    return {(name, what): float(at) for name, what, at in (line.split() for line in read_lines(side))}


def states(db, *ids) -> list[str]:
    return [job(db, i)["state"] for i in ids]


def test_a_chain_of_three_runs_in_order_on_a_pool_of_workers(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    side = tmp_path / "times"
    cli.ok("enqueue", "--id", "first", timed(side, "first"))
    # The dependents would be claimed first if anything could claim them: priority.
    assert cli.ok("enqueue", "--id", "second", "--after", "first", "--priority", "9", timed(side, "second")).stdout.endswith("(blocked)\n")
    cli.ok("enqueue", "--id", "third", "--after", "second", "--priority", "9", timed(side, "third"))
    assert states(db, "first", "second", "third") == ["pending", "blocked", "blocked"]
    assert cli.json("status")["jobs"]["blocked"] == 2
    assert [r["id"] for r in cli.json("list", "--state", "blocked")] == ["second", "third"]

    sup = supervisors.start("--concurrency", "3", "--burst")
    assert sup.wait() == 0, sup.log()
    assert states(db, "first", "second", "third") == ["completed"] * 3
    at = times(side)
    assert at["first", "end"] <= at["second", "start"], at
    assert at["second", "end"] <= at["third", "start"], at
    shown = cli.json("show", "second")
    assert shown["dependencies"] == [{"id": "first", "kind": "after", "state": "completed"}]
    assert shown["dependents"] == [{"id": "third", "kind": "after", "state": "completed"}]
    assert "waits for:    first (completed)\nwaited by:    third (completed)\n" in cli.ok("show", "second").stdout
    assert cli.json("status")["jobs"] == real_counts(db)


def test_a_job_gaining_a_dependent_while_it_runs_settles_it_when_it_completes(cli, db, supervisors, tmp_path):
    """The dependent arrives after the claim: on PostgreSQL the one-statement
    completion's guard sends it to the transaction that settles it."""
    configure(db, **FAST)
    gate, side = tmp_path / "gate", tmp_path / "ran"
    cli.ok("enqueue", "--id", "slow", f"echo slow >> {side}; while [ ! -e {gate} ]; do sleep 0.05; done")
    sup = supervisors.start()
    wait_lines(side, 1)
    cli.ok("enqueue", "--id", "next", "--after", "slow", f"echo next >> {side}")
    gate.touch()
    wait_until(lambda: job(db, "next")["state"] == "completed", timeout=LONG, message="the dependent ran")
    assert read_lines(side) == ["slow", "next"]
    assert job(db, "slow")["has_dependents"] is True
    sup.signal(2)
    assert sup.wait() == 0, sup.log()


def test_a_dependency_that_dies_cancels_the_chain_and_after_any_runs(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    side = tmp_path / "ran"
    cli.ok("enqueue", "--id", "broken", "--max-retries", "0", "exit 3")
    cli.ok("enqueue", "--id", "child", "--after", "broken", f"echo child >> {side}")
    cli.ok("enqueue", "--id", "grandchild", "--after", "child", f"echo grandchild >> {side}")
    cli.ok("enqueue", "--id", "cleanup", "--after-any", "broken", f"echo cleanup >> {side}")
    cli.ok("enqueue", "--id", "report", "--after-any", "child", f"echo report >> {side}")
    sup = supervisors.start("--concurrency", "2", "--burst")
    assert sup.wait() == 0, sup.log()

    assert read_lines(side) == ["cleanup", "report"] or sorted(read_lines(side)) == ["cleanup", "report"]
    child, grandchild = job(db, "child"), job(db, "grandchild")
    assert (child["state"], child["last_error"]) == ("cancelled", "dependency broken ended dead")
    assert (grandchild["state"], grandchild["last_error"]) == ("cancelled", "dependency child ended cancelled")
    assert child["runs"] == 0 and child["finished_at"] is not None
    assert states(db, "broken", "cleanup", "report") == ["dead", "completed", "completed"]
    assert cli.json("status")["jobs"] == real_counts(db)
    shown = cli.json("show", "broken")
    assert [(d["id"], d["kind"], d["state"]) for d in shown["dependents"]] == [("child", "after", "cancelled"), ("cleanup", "after_any", "completed")]


def test_cancel_of_a_blocked_job_and_of_a_dependency_cascades(cli, db):
    enqueue(db, "true", id="root")
    cli.ok("enqueue", "--id", "mid", "--after", "root", "true")
    cli.ok("enqueue", "--id", "leaf", "--after", "mid", "true")
    cli.ok("enqueue", "--id", "anyway", "--after-any", "mid", "true")
    cli.ok("enqueue", "--id", "alone", "--after", "root", "true")
    assert cli.ok("cancel", "alone").stdout == "cancelled 1 job(s): alone\n"
    assert job(db, "alone")["last_error"] == "cancelled"
    assert cli.ok("cancel", "root").stdout == "cancelled 1 job(s): root\n"
    assert states(db, "root", "mid", "leaf", "anyway") == ["cancelled", "cancelled", "cancelled", "pending"]
    assert job(db, "mid")["last_error"] == "dependency root ended cancelled"
    assert job(db, "leaf")["last_error"] == "dependency mid ended cancelled"

    enqueue(db, "true", id="r2")
    cli.ok("enqueue", "--id", "b2", "--after", "r2", "true")
    assert cli.ok("cancel", "--state", "blocked").stdout == "cancelled 1 job(s): b2\n"
    assert cli.json("status")["jobs"] == real_counts(db)


def test_dependencies_that_ended_before_the_enqueue_are_settled_at_once(cli, db):
    enqueue(db, "true", id="done")
    finish(db, "done")
    enqueue(db, "true", id="died")
    kill(db, "died")
    assert cli.json("enqueue", "--after", "done", "true")["state"] == "pending"
    doomed = cli.json("enqueue", "--after", "done,died", "true")
    assert (doomed["state"], doomed["last_error"]) == ("cancelled", "dependency died ended dead")
    assert cli.ok("enqueue", "--id", "d2", "--after", "died", "true").stdout == "enqueued id=d2 cmd=true (cancelled: dependency died ended dead)\n"
    assert cli.json("enqueue", "--after-any", "died,done", "true")["state"] == "pending"
    # The dead job knows it has dependents: retried with them, it settles them.
    assert cli.json("show", "died")["has_dependents"] is True
    assert cli.json("status")["jobs"] == real_counts(db)


def test_unknown_or_invalid_ids_write_nothing(cli, db):
    enqueue(db, "true", id="known")
    before = config_value(db, "_seq")
    # The job was never written, so the error does not name the id it would have had.
    error_line(cli("enqueue", "--after", "known,nope", "true"), 1, "the job waits for 'nope'", "no job with that id")
    unnamed = Path(cli.cwd) / "unnamed.jsonl"
    unnamed.write_text('true\n{"command": "true", "after": ["nope"]}\n')
    error_line(cli("enqueue", "--file", unnamed), 1, "the job of line 2 waits for 'nope'")
    error_line(cli("enqueue", "--after-any", "nope", "true"), 1, "'nope'")
    error_line(cli("enqueue", "--id", "me", "--after", "me", "true"), 1, "cannot wait for itself")
    error_line(cli("enqueue", "--after", "", "true"), 2, "after")
    error_line(cli("enqueue", "--after", "a,,b", "true"), 2, "empty job id")
    error_line(cli("enqueue", "--after", "bad id!", "true"), 2, "invalid job id")
    error_line(cli("enqueue", '{"command": "true", "after": 5}'), 2, "after")
    error_line(cli("enqueue", '{"command": "true", "after": ["known", null]}'), 2, "after")
    assert [r["id"] for r in cli.json("list")] == ["known"]
    assert config_value(db, "_seq") == before
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM job_dependencies").scalar() == 0
        assert conn.exec_driver_sql("SELECT has_dependents FROM jobs WHERE id = 'known'").scalar() in (False, 0)


def test_a_file_is_one_pipeline_with_back_references_all_or_nothing(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    side = tmp_path / "times"
    enqueue(db, "true", id="outside")
    lines = [
        json.dumps({"id": "fetch", "command": timed(side, "fetch", 0.2), "after": ["outside"]}),
        json.dumps({"id": "left", "command": timed(side, "left", 0.2), "after": ["fetch"]}),
        json.dumps({"id": "right", "command": timed(side, "right", 0.2), "after": "fetch"}),
        json.dumps({"id": "join", "command": timed(side, "join", 0.1), "after": ["left", "right"], "priority": 5}),
        json.dumps({"id": "notify", "command": f"echo notify >> {tmp_path / 'n'}", "after_any": ["join"]}),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:3] + [json.dumps({"id": "x", "command": "true", "after": ["nope"]})] + lines[3:]) + "\n")
    error_line(cli("enqueue", "--file", bad), 1, "'nope'")
    forward = tmp_path / "forward.jsonl"
    forward.write_text("\n".join([lines[1], lines[0]]) + "\n")
    error_line(cli("enqueue", "--file", forward), 1, "'fetch'", "earlier lines")
    assert [r["id"] for r in cli.json("list")] == ["outside"]

    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(lines) + "\n")
    assert cli.ok("enqueue", "--file", good).stdout == "enqueued 5 jobs (ids fetch..notify)\n"
    assert states(db, "fetch", "left", "right", "join", "notify") == ["blocked"] * 5
    assert cli.json("show", "join")["dependencies"] == [{"id": "left", "kind": "after", "state": "blocked"},
                                                        {"id": "right", "kind": "after", "state": "blocked"}]
    finish(db, "outside")
    assert job(db, "fetch")["state"] == "pending"
    sup = supervisors.start("--concurrency", "3", "--burst")
    assert sup.wait() == 0, sup.log()
    assert states(db, "fetch", "left", "right", "join", "notify") == ["completed"] * 5
    at = times(side)
    for first, then in (("fetch", "left"), ("fetch", "right"), ("left", "join"), ("right", "join")):
        assert at[first, "end"] <= at[then, "start"], (first, then, at)


def test_retry_with_dependents_blocks_the_cancelled_chain_again(cli, db):
    enqueue(db, "true", id="a", max_retries=0)
    cli.ok("enqueue", "--id", "b", "--after", "a", "true")
    cli.ok("enqueue", "--id", "c", "--after", "b", "true")
    cli.ok("enqueue", "--id", "by-hand", "--after", "a", "true")
    cli.ok("cancel", "by-hand")
    kill(db, "a")
    assert states(db, "b", "c") == ["cancelled", "cancelled"]

    # A plain retry leaves the dependents cancelled; retrying one of them alone is refused.
    assert cli.ok("dlq", "retry", "a").stdout == "retried 1 job(s): a\n"
    assert states(db, "a", "b", "c") == ["pending", "cancelled", "cancelled"]
    kill(db, "a")
    error_line(cli("retry", "b"), 1, "'b' would be cancelled again", "dependency a ended dead", "--with-dependents")
    assert states(db, "b", "c") == ["cancelled", "cancelled"]

    assert cli.ok("dlq", "retry", "--with-dependents", "a").stdout == "retried 1 job(s): a\n"
    assert states(db, "a", "b", "c", "by-hand") == ["pending", "blocked", "blocked", "cancelled"]
    assert job(db, "b")["last_error"] is None
    finish(db, "a")
    assert states(db, "b", "c") == ["pending", "blocked"]

    # retry --with-dependents of a cancelled job; a retried dependent waits again.
    enqueue(db, "true", id="x")
    cli.ok("enqueue", "--id", "y", "--after", "x", "true")
    cli.ok("cancel", "x")
    assert cli.ok("retry", "--with-dependents", "x").stdout == "retried 1 job(s): x\n"
    assert states(db, "x", "y") == ["pending", "blocked"]
    finish(db, "x")
    finish(db, "y")
    assert cli.ok("retry", "y").stdout == "retried 1 job(s): y\n"
    assert job(db, "y")["state"] == "pending"  # its dependency had completed
    assert cli.json("status")["jobs"] == real_counts(db)


def test_deleting_a_job_forgets_what_it_waited_for(cli, db):
    enqueue(db, "true", id="dep")
    cli.ok("enqueue", "--id", "w", "--after", "dep", "true")
    finish(db, "dep")
    finish(db, "w")
    cli.ok("delete", "dep")
    assert cli.json("show", "w")["dependencies"] == [{"id": "dep", "kind": "after", "state": None}]
    assert "waits for:    dep (deleted)" in cli.ok("show", "w").stdout
    cli.ok("delete", "w")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM job_dependencies").scalar() == 0


def test_two_dependencies_ending_at_once_unblock_their_job(db):
    """Each transaction sees the other's dependency still running; the dependent's row
    lock makes the later one see the earlier one's commit (store/dependencies.py)."""
    if db.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    for job_id in ("a", "b"):
        enqueue(db, "true", id=job_id)
    enqueue(db, "true", id="both", after=("a", "b"))
    take(db, "a")
    with db.begin() as conn:  # another worker's id: take() uses w-test
        conn.execute(sa.update(JOBS).where(JOBS.c.id == "b").values(state="running", worker_id="w-other", started_at=T0))
    first = db.engine.connect()
    first.begin()
    assert transitions.complete(first, "a", "w-test", exit_code=0, output=None, now=T0)
    done = threading.Event()

    def second():
        with db.begin() as conn:
            assert transitions.complete(conn, "b", "w-other", exit_code=0, output=None, now=T0)
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not done.wait(0.5)  # waits for the dependent's lock
    first.commit()
    first.close()
    thread.join(30)
    assert done.is_set()
    assert job(db, "both")["state"] == "pending"


def test_the_claim_index_leaves_blocked_jobs_out(db):
    from queuectl.store.models import METADATA

    claim = next(ix for ix in METADATA.tables["jobs"].indexes if ix.name == "ix_jobs_claim")
    where = str(claim.dialect_options[db.engine.dialect.name]["where"].compile(db.engine, compile_kwargs={"literal_binds": True}))
    assert "blocked" not in where and "pending" in where


def _indexes(conn) -> dict[str, str]:
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").all()
    else:
        rows = conn.exec_driver_sql("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()").all()
    return dict(rows)


def test_the_0006_migration_from_0005_with_data_both_ways(db):
    with db.engine.connect() as conn:
        head = _indexes(conn)
    assert "DESC" in head["ix_jobs_claim"]
    enqueue(db, "true", id="dep")
    enqueue(db, "true", id="waiting", after=("dep",))
    enqueue(db, "true", id="free")
    with db.engine.connect() as conn:
        cfg = schema.alembic_config(conn)
        alembic_command.downgrade(cfg, "0006")
        conn.commit()
        at_0006 = _indexes(conn)
        assert "DESC" in at_0006["ix_jobs_claim"]
        alembic_command.downgrade(cfg, "0005")
        conn.commit()
        assert "job_dependencies" not in sa.inspect(conn).get_table_names()
        assert "has_dependents" not in {c["name"] for c in sa.inspect(conn).get_columns("jobs")}
        assert "has_dependents" not in {c["name"] for c in sa.inspect(conn).get_columns("dead_jobs")}
        rows = conn.exec_driver_sql("SELECT id, state, last_error FROM jobs ORDER BY seq").all()
        assert rows == [("dep", "pending", None), ("waiting", "cancelled", "cancelled: its dependencies were dropped by a schema downgrade"),
                        ("free", "pending", None)]
        new = ("ix_jobs_blocked", "ix_job_dependencies_depends_on", "pk_job_dependencies", "job_dependencies_pkey")
        assert _indexes(conn) == {name: sql for name, sql in at_0006.items() if name not in new}
        conn.exec_driver_sql("UPDATE jobs SET state = 'completed' WHERE id = 'free'")
        conn.commit()
        alembic_command.upgrade(cfg, "0006")
        conn.commit()
        assert _indexes(conn) == at_0006
        rows = conn.exec_driver_sql("SELECT id, state, has_dependents FROM jobs ORDER BY seq").all()
        assert [(i, s, bool(h)) for i, s, h in rows] == [("dep", "pending", False), ("waiting", "cancelled", False), ("free", "completed", False)]
        alembic_command.upgrade(cfg, "head")
        conn.commit()
        assert _indexes(conn) == head
    # The upgraded database works: a new dependency on an old job.
    enqueue(db, "true", id="later", after=("dep",))
    finish(db, "dep")
    assert job(db, "later")["state"] == "pending"
