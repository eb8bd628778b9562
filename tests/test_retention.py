"""Retention: `prune` and running supervisors delete finished jobs past their age, in
bounded batches, with their attempt history; `status` counts stay exact; one pruner
at a time."""

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from conftest import wait_until
from queuectl import jobspec
from queuectl.store import Store, jobs, retention
from queuectl.store.models import ATTEMPTS, DEAD_JOBS, JOBS
from queuectl.timeutil import utcnow
from support import T0, all_ids, enqueue, error_line, finish, kill, real_counts, seconds
from worker_support import FAST, configure, supervisors  # noqa: F401

DAY = 86400


def exact_counts(db, now=T0) -> bool:
    counts = Store(db).status(now)[0]
    counts.pop("ready")
    assert counts == real_counts(db)
    return True


def attempt_owners(db) -> set[str]:
    with db.read() as conn:
        return set(conn.execute(select(ATTEMPTS.c.job_id)).scalars())


def history(db, now=T0) -> dict[str, str]:
    """A job of each kind, ended 10 days and 1 day before `now`: {id: "old" or "new"}."""
    made = {}
    for age, label in ((10 * DAY, "old"), (DAY, "new")):
        when = now - seconds(age)
        done = enqueue(db, now=when, id=f"{label}-completed")
        finish(db, done, now=when)
        cancelled = enqueue(db, now=when, id=f"{label}-cancelled")
        with db.begin() as conn:
            conn.execute(sa.update(JOBS).where(JOBS.c.id == cancelled).values(state="cancelled", finished_at=when))
        dead = enqueue(db, now=when, id=f"{label}-dead", max_retries=0)
        kill(db, dead, now=when)
        made.update({done: label, cancelled: label, dead: label})
    enqueue(db, id="waiting")
    return made


def test_prune_deletes_by_age_with_history_and_keeps_counts_exact(db):
    history(db)
    store = Store(db)
    assert exact_counts(db)
    # The defaults: 7 days for completed and cancelled; dead jobs kept.
    assert store.prune({}, now=T0) == {"completed": 1, "cancelled": 1, "dead": 0}
    assert sorted(all_ids(db)) == sorted(["new-completed", "new-cancelled", "old-dead", "new-dead", "waiting"])
    assert "old-completed" not in attempt_owners(db)
    assert exact_counts(db)
    assert store.prune({"dead": 5 * DAY}, now=T0) == {"completed": 0, "cancelled": 0, "dead": 1}
    assert "old-dead" not in attempt_owners(db) and "new-dead" in attempt_owners(db)
    assert store.prune({"completed": 0, "cancelled": None, "dead": None}, now=T0) == {"completed": 1, "cancelled": 0, "dead": 0}
    assert sorted(all_ids(db)) == ["new-cancelled", "new-dead", "waiting"]
    assert exact_counts(db)


def test_batches_are_bounded(db, monkeypatch):
    when = T0 - seconds(30 * DAY)
    ids = [enqueue(db, now=when) for _ in range(25)]
    with db.begin() as conn:
        conn.execute(sa.update(JOBS).values(state="completed", finished_at=when))
    cut = retention.cutoffs({"completed": 0}, T0)
    sizes = []
    while True:
        with db.begin() as conn:
            pruned = retention.prune_batch(conn, db.dialect, cut, limit=10)
        sizes.append(pruned["completed"])
        if pruned["completed"] < 10:
            break
    assert sizes == [10, 10, 5]
    assert all_ids(db) == [] and len(ids) == 25
    assert exact_counts(db)
    # Store.prune goes batch after batch until none is left.
    monkeypatch.setattr(retention, "BATCH", 4)
    for _ in range(9):
        enqueue(db, now=when, id=None)
    with db.begin() as conn:
        conn.execute(sa.update(JOBS).values(state="completed", finished_at=when))
    assert Store(db).prune({"completed": DAY}, now=T0)["completed"] == 9
    assert exact_counts(db)


def test_oldest_go_first_within_a_batch(db):
    for n in range(5):
        job = enqueue(db, id=f"j{n}")
        finish(db, job, now=T0 - seconds((10 - n) * DAY))
    with db.begin() as conn:
        pruned = retention.prune_batch(conn, db.dialect, retention.cutoffs({"completed": 0}, T0), limit=2)
    assert pruned["completed"] == 2
    assert all_ids(db) == ["j2", "j3", "j4"]


def test_prune_command_and_config_keys(cli, db):
    history(db, now=utcnow())
    assert cli.ok("config", "get", "retain-dead").stdout == "never\n"
    assert cli.ok("config", "get", "retain-completed").stdout == "604800.0\n"
    assert cli.ok("config", "set", "retain-dead", "30d").stdout == "retain-dead = 2592000.0\n"
    assert cli.ok("config", "set", "retain-dead", "Never").stdout == "retain-dead = never\n"
    assert cli.json("config", "list")["retain-dead"] is None
    error_line(cli("config", "set", "retain-completed", "soon"), 2, "retain-completed", "or never")
    error_line(cli("config", "set", "prune-interval", "never"), 2, "prune-interval")
    error_line(cli("prune", "--dead-older-than", "5 days"), 2, "--dead-older-than", "or never")

    result = cli.ok("prune", "--cancelled-older-than", "never")
    assert result.stdout == "pruned 1 job(s): 1 completed, 0 cancelled, 0 dead\n"
    assert cli.json("prune", "--dead-older-than", "2d", "--completed-older-than", "12h") == {"completed": 1, "cancelled": 1, "dead": 1}
    assert sorted(all_ids(db)) == ["new-cancelled", "new-dead", "waiting"]
    assert exact_counts(db)


def test_one_pruner_at_a_time(db):
    if db.dialect.name != "postgresql":
        pytest.skip("SQLite's write lock serialises pruners (BEGIN IMMEDIATE)")
    first = db.engine.connect()
    try:
        first.begin()
        assert db.dialect.prune_lock(first, wait=False)
        with db.begin() as conn:
            assert retention.prune_batch(conn, db.dialect, retention.cutoffs({"completed": 0}, T0)) is None
        first.rollback()
        with db.begin() as conn:  # released with its transaction
            assert retention.prune_batch(conn, db.dialect, retention.cutoffs({"completed": 0}, T0)) is not None
    finally:
        first.close()


def test_running_supervisors_prune(db, supervisors):
    configure(db, **FAST, prune_interval=0.3, retain_completed=1, retain_dead=1, retain_cancelled="never")
    ids = [row["id"] for row in jobs.enqueue(db, [jobspec.build("true") for _ in range(5)])]
    dead = jobs.enqueue(db, [jobspec.build("exit 3", max_retries=0)])[0]["id"]
    cancelled = jobs.enqueue(db, [jobspec.build("true", delay=3600)])[0]["id"]
    Store(db).cancel([cancelled])
    hosts = ("host-a", "host-b") if db.dialect.name == "postgresql" else ("host-a",)
    for host in hosts:
        supervisors.start("--concurrency", "2", hostname=host)

    def pruned():
        return all_ids(db) == [cancelled]

    wait_until(pruned, timeout=90, message=f"jobs {ids + [dead]} pruned")
    assert attempt_owners(db) == set()
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(DEAD_JOBS)).scalar() == 0
    counts = Store(db).status(T0)[0]
    assert (counts["completed"], counts["dead"], counts["cancelled"]) == (0, 0, 1)
    assert exact_counts(db)
