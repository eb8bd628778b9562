"""The worker's hot path on the driver's cursor (store/prepared.py, Database.begin_driver):
the same rows as SQLAlchemy's, the general path for jobs with more to settle, errors
translated and survived, and no connection carried across a fork."""

import os
import sqlite3

import pytest
from sqlalchemy import select

from queuectl.errors import DatabaseError
from queuectl.store import Store, transitions
from queuectl.store import queues as controls
from queuectl.store.database import Database
from queuectl.store.models import QUEUES
from support import T0, enqueue, job_row, seconds


def test_a_prepared_claim_gives_what_sqlalchemy_gives(db):
    """Every claimed column, processed as SQLAlchemy would: aware datetimes, a float
    timeout, a bool, NULLs; compared with the same statement run through Core."""
    for n in range(2):
        enqueue(db, f"echo {n}", now=T0, timeout="2.5s", max_retries=4, priority=3, unique_key=f"k{n}")
    statement = transitions.claim_statement(None, after_ending=True)
    with db.begin() as conn:
        through_core = conn.execute(statement, {"now": T0, "claimer": "w-1"}).first()
    with db.begin_driver() as driver:
        prepared = driver.first(statement, {"now": T0 + seconds(1), "claimer": "w-1"})
    assert prepared._fields == through_core._fields
    core = through_core._asdict()
    mine = prepared._asdict()
    # The two claims differ in their job and in the time they claimed at, nothing else.
    assert (core.pop("id"), core.pop("command"), core.pop("unique_key")) != (mine.pop("id"), mine.pop("command"), mine.pop("unique_key"))
    assert (core.pop("started_at"), core.pop("updated_at")) == (T0, T0)
    assert (mine.pop("started_at"), mine.pop("updated_at")) == (T0 + seconds(1), T0 + seconds(1))
    assert mine == core
    assert (prepared.timeout, prepared.has_dependents, prepared.finished_at, prepared.run_at.tzinfo) == (2.5, False, None, T0.tzinfo)


def test_a_job_of_a_limited_queue_takes_the_general_path_and_frees_its_slot(db):
    """The hot path completes only jobs with nothing more to settle; a job holding a
    queue's slot is completed by the general path, which gives the slot back."""
    store = Store(db)
    with db.begin() as conn:
        controls.set_limit(conn, "limited", 1, T0)
    job_id = enqueue(db, now=T0, queue="limited")
    following = enqueue(db, now=T0)
    assert store.claim("w-1", (), now=T0).id == job_id

    owned, row = db.dialect.complete_and_claim(db, job_id, "w-1", output="done\n", now=T0 + seconds(1), queues=None)
    assert (owned, row.id) == (True, following)
    assert (job_row(db, job_id).state, job_row(db, job_id).output) == ("completed", "done\n")
    with db.read() as conn:
        assert conn.execute(select(QUEUES.c.running).where(QUEUES.c.name == "limited")).scalar() == 0


def test_a_locked_database_fails_the_hot_path_with_one_line_and_the_next_try_succeeds(tmp_path, monkeypatch):
    """A writer that takes no flock (the sqlite3 shell) holds the database: the hot
    path's BEGIN IMMEDIATE times out as a DatabaseError (what the worker rides out),
    nothing is half-written, and once the holder is gone the same call succeeds."""
    monkeypatch.setenv("QUEUECTL_BUSY_TIMEOUT", "0.2")
    path = tmp_path / "queue.db"
    db = Store.open("sqlite:///" + str(path)).db
    try:
        job_id = enqueue(db, now=T0)
        assert Store(db).claim("w-1", (), now=T0).id == job_id
        outsider = sqlite3.connect(path, isolation_level=None)
        outsider.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseError, match="database is locked"):
            db.dialect.complete_and_claim(db, job_id, "w-1", output=None, now=T0 + seconds(1), queues=None)
        outsider.execute("ROLLBACK")
        outsider.close()
        assert job_row(db, job_id).state == "running"
        assert db.dialect.complete_and_claim(db, job_id, "w-1", output=None, now=T0 + seconds(2), queues=None) == (True, None)
        assert job_row(db, job_id).state == "completed"
    finally:
        db.dispose()


def test_a_forked_child_opens_its_own_hot_connection(tmp_path):
    """SQLite forbids using a connection across fork: the child drops the parent's."""
    db = Database("sqlite:///" + str(tmp_path / "queue.db"))
    try:
        Store.open(db.url).close()  # the schema
        job_id = enqueue(db, now=T0)
        assert Store(db).claim("w-1", (), now=T0).id == job_id
        with db.begin_driver():
            pass
        parent_connection = db.dialect._hot
        assert parent_connection is not None
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code only
            code = 0 if db.dialect._hot is None else 1
            try:
                if db.dialect.complete_and_claim(db, job_id, "w-1", output=None, now=T0, queues=None) != (True, None):
                    code = 2
                if db.dialect._hot is parent_connection:
                    code = 3
            except BaseException:
                code = 4
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert job_row(db, job_id).state == "completed"
    finally:
        db.dispose()


def test_a_postgresql_connection_killed_under_the_hot_path_is_dropped_and_replaced(db):
    """The server ends the worker's connection between two jobs: the hot path fails
    once as a DatabaseError (ridden out by the worker), the broken connection is not
    given back to the pool, and the next call connects afresh and succeeds."""
    if db.dialect.name != "postgresql":
        pytest.skip("a server connection to kill")
    job_id = enqueue(db, now=T0)
    assert Store(db).claim("w-1", (), now=T0).id == job_id
    worker_db = Database(db.url, durable=False, one_connection=True)  # a worker's: no pre-ping to hide the loss
    try:
        _kill_and_recover(db, worker_db, job_id)
    finally:
        worker_db.dispose()


def _kill_and_recover(db, worker_db, job_id):
    with worker_db.begin_driver() as driver:
        driver.execute_sql("SELECT pg_backend_pid()", None)
        victim = driver.cursor.fetchone()[0]
    killer = Database(db.url)  # its own connections
    try:
        with killer.begin() as conn:
            assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(victim)})").scalar() is True
    finally:
        killer.dispose()
    with pytest.raises(DatabaseError):
        worker_db.dialect.complete_and_claim(worker_db, job_id, "w-1", output=None, now=T0 + seconds(1), queues=None)
    assert job_row(db, job_id).state == "running"
    assert worker_db.dialect.complete_and_claim(worker_db, job_id, "w-1", output=None, now=T0 + seconds(2), queues=None) == (True, None)
    assert job_row(db, job_id).state == "completed"
