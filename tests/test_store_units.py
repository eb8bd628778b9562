"""The storage seam's worker-runtime operations in-process, on real databases: the
workers table through Store (registration, heartbeats, stop requests, declaring
processes dead, pruning), each dialect's statements (complete_and_claim, write_one,
check_url), and the two read-only probes of an idle worker (work_due, drained).

Store stamps workers rows with the real clock (utcnow); where a test needs a row
from another time it writes it with queuectl.store.workers and an explicit `now`."""

import os
from datetime import timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from queuectl.errors import DeclaredDead, StatementFailed, ValidationError
from queuectl.states import Role, StopMode, WorkerState
from queuectl.store import Store, transitions, workers
from queuectl.store.database import Database
from queuectl.store.dialect import PostgresDialect, SQLiteDialect, class_for
from queuectl.store.models import CONFIG, WORKERS
from queuectl.timeutil import utcnow
from support import CFG, T0, dead_row, enqueue, job_row, seconds

US = seconds(0.000001)
HOST = "host-a"
CLAIM_FIELDS = {column.name for column in transitions.CLAIM_COLUMNS}


def worker_row(db, worker_id: str):
    with db.read() as conn:
        return conn.execute(select(WORKERS).where(WORKERS.c.id == worker_id)).first()


def worker_ids(db) -> list[str]:
    with db.read() as conn:
        return sorted(conn.execute(select(WORKERS.c.id)).scalars())


def register_at(db, worker_id: str, when, *, role=Role.WORKER, host: str = HOST, **row) -> None:
    """A row registered at `when` (Store.register stamps the real time)."""
    with db.begin() as conn:
        workers.register(conn, id=worker_id, role=role, host=host, pid_started=1.0, now=when, **row)


def end_at(db, worker_id: str, state: WorkerState, when) -> None:
    """A row ended at `when` (Store's end stamps the real time)."""
    with db.begin() as conn:
        assert workers.end(conn, worker_id, state, when)


def register(store: Store, worker_id: str, *, role=Role.WORKER, host: str = HOST, **row) -> dict:
    return store.register(id=worker_id, role=role, host=host, pid_started=1.0, **row)


def a_minute_ago():
    return utcnow() - timedelta(minutes=1)


# --- the workers table ------------------------------------------------------------------------


def test_register_writes_a_live_row_and_returns_the_config(db):
    store = Store(db)
    store.set_config("max-retries", "7")
    before = utcnow()
    cfg = store.register(id="s-1", role=Role.SUPERVISOR, host=HOST, pid_started=12.5, queues=("a", "b"))
    after = utcnow()
    assert cfg["max-retries"] == 7
    assert cfg == store.config()
    row = worker_row(db, "s-1")
    assert (row.role, row.host, row.pid, row.pid_started, row.state, row.queues) == ("supervisor", HOST, os.getpid(), 12.5, "idle", "a,b")
    assert (row.processed, row.failed, row.stopped_at, row.stop_request, row.job_id, row.supervisor_id) == (0, 0, None, None, None, None)
    assert before <= row.started_at == row.last_heartbeat <= after

    register(store, "w-1", supervisor_id="s-1", supervisor_pid=4321)
    row = worker_row(db, "w-1")
    assert (row.role, row.supervisor_id, row.supervisor_pid, row.queues) == ("worker", "s-1", 4321, None)
    with pytest.raises(StatementFailed):  # ids are unique
        register(store, "w-1")


def test_heartbeat_refreshes_the_row_and_returns_the_config(db):
    store = Store(db)
    an_hour_ago = utcnow() - timedelta(hours=1)
    register_at(db, "w-1", an_hour_ago)
    store.set_config("heartbeat-interval", "3")
    before = utcnow()
    alive, cfg = store.heartbeat("w-1", state=WorkerState.BUSY.value, job_id="7", processed=2)
    assert alive is True
    assert cfg["heartbeat-interval"] == 3.0 and cfg == store.config()
    row = worker_row(db, "w-1")
    assert (row.state, row.job_id, row.processed, row.failed) == ("busy", "7", 2, 0)
    assert row.last_heartbeat >= before
    assert row.started_at == an_hour_ago

    assert store.heartbeat("w-unknown")[0] is False


@pytest.mark.parametrize("ended_as", [WorkerState.DEAD, WorkerState.STOPPED])
def test_a_heartbeat_of_an_ended_row_returns_not_alive_and_changes_nothing(db, ended_as):
    store = Store(db)
    register(store, "w-1")
    if ended_as is WorkerState.DEAD:
        assert store.declare_dead("w-1", silent_since=None, cfg=CFG) == []
    else:
        assert store.end("w-1", WorkerState.STOPPED, cfg=CFG) == []
    ended = worker_row(db, "w-1")
    assert ended.state == ended_as.value

    alive, cfg = store.heartbeat("w-1", state=WorkerState.BUSY.value, processed=5)
    assert alive is False
    assert cfg == store.config()
    assert worker_row(db, "w-1") == ended  # neither revived nor updated


def test_supervisor_heartbeat_returns_the_stop_asked_and_the_config(db):
    store = Store(db)
    an_hour_ago = utcnow() - timedelta(hours=1)
    register_at(db, "s-1", an_hour_ago, role=Role.SUPERVISOR)
    store.set_config("heartbeat-timeout", "45")

    before = utcnow()
    request, cfg = store.supervisor_heartbeat("s-1", WorkerState.IDLE)
    assert request is None
    assert cfg["heartbeat-timeout"] == 45.0 and cfg == store.config()
    assert worker_row(db, "s-1").last_heartbeat >= before

    assert [row.id for row in store.request_stop(StopMode.GRACEFUL, lambda row: True)] == ["s-1"]
    request, _ = store.supervisor_heartbeat("s-1", WorkerState.STOPPING)
    assert request is StopMode.GRACEFUL
    assert worker_row(db, "s-1").state == "stopping"
    assert store.supervisor_heartbeat("s-1", WorkerState.STOPPING)[0] is StopMode.GRACEFUL  # asked until it ends

    store.request_stop(StopMode.NOW, lambda row: True)  # `worker stop --now` after a graceful one
    assert store.supervisor_heartbeat("s-1", WorkerState.STOPPING)[0] is StopMode.NOW


def test_a_supervisor_declared_dead_learns_it_from_its_heartbeat(db):
    """Found by this file's author: a frozen supervisor declared dead by another host
    used to go on unseen by `worker stop`."""
    store = Store(db)
    register_at(db, "s-1", utcnow() - timedelta(hours=1), role=Role.SUPERVISOR)
    assert store.declare_dead("s-1", silent_since=None, cfg=store.config()) == []
    with pytest.raises(DeclaredDead, match="declared dead"):
        store.supervisor_heartbeat("s-1", WorkerState.IDLE)
    assert worker_row(db, "s-1").state == "dead"  # not revived


def test_request_stop_flags_only_the_live_supervisors_its_predicate_chooses(db):
    store = Store(db)
    register(store, "s-a", role=Role.SUPERVISOR, host="host-a")
    register(store, "s-b", role=Role.SUPERVISOR, host="host-b")
    register(store, "s-ended", role=Role.SUPERVISOR, host="host-b")
    store.end("s-ended", WorkerState.STOPPED, cfg=CFG)
    register(store, "w-b", host="host-b", supervisor_id="s-b")

    looked_at = []
    nobody = store.request_stop(StopMode.NOW, lambda row: looked_at.append(row.id) and False)
    assert nobody == []
    assert sorted(looked_at) == ["s-a", "s-b"]  # live supervisors only: no worker, no ended row

    chosen = store.request_stop(StopMode.NOW, lambda row: row.host == "host-b")
    assert [row.id for row in chosen] == ["s-b"]
    assert {i: worker_row(db, i).stop_request for i in ("s-a", "s-b", "s-ended", "w-b")} == {"s-a": None, "s-b": "now", "s-ended": None, "w-b": None}
    assert store.supervisor_heartbeat("s-a", WorkerState.IDLE)[0] is None
    assert store.supervisor_heartbeat("s-b", WorkerState.IDLE)[0] is StopMode.NOW


def test_live_supervisors_are_the_supervisor_rows_not_ended(db):
    store = Store(db)
    register(store, "s-live", role=Role.SUPERVISOR, host="host-z")
    register(store, "s-stopped", role=Role.SUPERVISOR)
    register(store, "s-dead", role=Role.SUPERVISOR)
    register(store, "w-live")
    store.end("s-stopped", WorkerState.STOPPED, cfg=CFG)
    assert store.declare_dead("s-dead", silent_since=None, cfg=CFG) == []

    rows = store.live_supervisors()
    assert [(row.id, row.host, row.state) for row in rows] == [("s-live", "host-z", "idle")]


def test_end_ends_a_row_once_and_charges_the_jobs_it_held(db):
    store = Store(db)
    job_id = enqueue(db, max_retries=2, now=a_minute_ago())
    register(store, "w-1")
    assert store.claim("w-1", ()).id == job_id
    store.heartbeat("w-1", state=WorkerState.BUSY.value, job_id=job_id, job_pgid=999)

    before = utcnow()
    assert store.end("w-1", WorkerState.STOPPED, cfg=CFG, error="its supervisor vanished") == [(job_id, "failed")]
    row = worker_row(db, "w-1")
    assert (row.state, row.job_id, row.job_pgid) == ("stopped", None, None)
    assert row.stopped_at >= before
    job = job_row(db, job_id)
    assert (job.state, job.attempts, job.last_error, job.exit_code) == ("failed", 1, "its supervisor vanished", None)

    # An ended row stays as it ended: a second end neither changes it nor finds jobs.
    assert store.end("w-1", WorkerState.DEAD, cfg=CFG) == []
    assert worker_row(db, "w-1") == row


def test_declare_dead_recovers_the_jobs_once_and_a_later_reaper_gets_none(db):
    store = Store(db)
    retried = enqueue(db, id="retried", max_retries=1, now=a_minute_ago())
    last_try = enqueue(db, id="last-try", max_retries=0, now=a_minute_ago())
    register(store, "w-1")
    assert store.claim("w-1", ()).id == retried
    assert store.claim("w-1", ()).id == last_try
    assert sorted(store.held("w-1")) == ["last-try", "retried"]

    assert sorted(store.declare_dead("w-1", silent_since=None, cfg=CFG)) == [("last-try", "dead"), ("retried", "failed")]
    assert worker_row(db, "w-1").state == "dead"
    assert (job_row(db, retried).state, job_row(db, retried).last_error) == ("failed", transitions.WORKER_LOST)
    assert (dead_row(db, last_try).state, dead_row(db, last_try).attempts) == ("dead", 1)
    assert store.held("w-1") == []

    assert store.declare_dead("w-1", silent_since=None, cfg=CFG) is None  # another reaper got there first
    assert job_row(db, retried).attempts == 1  # charged once


def test_declare_dead_with_silent_since_spares_a_row_that_beat_after_it(db):
    store = Store(db)
    an_hour_ago = utcnow() - timedelta(hours=1)
    register_at(db, "w-remote", an_hour_ago, host="host-b")
    job_id = enqueue(db, now=a_minute_ago())
    assert store.claim("w-remote", ()).id == job_id

    # A reaper on host-a reads the row as silent...
    stale_before = utcnow() - timedelta(seconds=30)
    assert [row.id for row in store.suspects(HOST, stale_before)] == ["w-remote"]
    # ...the worker beats before the reaper's write...
    assert store.heartbeat("w-remote")[0] is True
    # ...so the write ends nothing and recovers nothing.
    assert store.declare_dead("w-remote", silent_since=stale_before, cfg=CFG) is None
    assert worker_row(db, "w-remote").state == "idle"
    assert (job_row(db, job_id).state, job_row(db, job_id).worker_id) == ("running", "w-remote")


def test_declare_dead_with_silent_since_needs_a_heartbeat_strictly_before_it(db):
    store = Store(db)
    last_beat = utcnow() - timedelta(hours=1)
    register_at(db, "w-silent", last_beat, host="host-b")
    assert store.declare_dead("w-silent", silent_since=last_beat, cfg=CFG) is None  # beat at that very time
    assert worker_row(db, "w-silent").state == "idle"
    assert store.declare_dead("w-silent", silent_since=last_beat + US, cfg=CFG) == []
    assert worker_row(db, "w-silent").state == "dead"


def test_suspects_are_live_rows_of_this_host_or_silent_since_before(db):
    store = Store(db)
    now = utcnow()
    stale_before = now - timedelta(seconds=30)
    register_at(db, "a-fresh", now, host="host-a")
    register_at(db, "a-old", now - timedelta(hours=1), host="host-a", role=Role.SUPERVISOR)
    register_at(db, "a-ended", now, host="host-a")
    end_at(db, "a-ended", WorkerState.STOPPED, now)
    register_at(db, "b-fresh", now, host="host-b")
    register_at(db, "b-at-the-limit", stale_before, host="host-b")
    register_at(db, "b-old", now - timedelta(hours=1), host="host-b")
    register_at(db, "b-old-dead", now - timedelta(hours=1), host="host-b")
    end_at(db, "b-old-dead", WorkerState.DEAD, now)

    assert sorted(row.id for row in store.suspects("host-a", stale_before)) == ["a-fresh", "a-old", "b-old"]
    assert sorted(row.id for row in store.suspects("host-b", stale_before)) == ["a-old", "b-at-the-limit", "b-fresh", "b-old"]
    assert sorted(row.id for row in store.suspects("host-c", now - timedelta(days=1))) == []


def test_worker_stopped_gives_back_a_claimed_but_unstarted_job(db):
    store = Store(db)
    job_id = enqueue(db, max_retries=3, now=a_minute_ago())
    register(store, "w-1")
    # One failed attempt first, so that "attempts unchanged" is not just zero.
    first_try = a_minute_ago()
    assert store.claim("w-1", (), now=first_try).id == job_id
    state, _ = store.record(job_id, "w-1", stopped=False, error="exit code 1", exit_code=1, output="",
                            cfg=CFG, claim_next=False, queues=(), now=first_try)
    assert state == "failed"
    assert store.claim("w-1", ()).attempts == 1

    before = utcnow()
    store.worker_stopped("w-1", unstarted_job=job_id, processed=3, failed=1)
    job = job_row(db, job_id)
    assert (job.state, job.attempts, job.worker_id, job.started_at) == ("pending", 1, None, None)
    row = worker_row(db, "w-1")
    assert (row.state, row.processed, row.failed) == ("stopped", 3, 1)
    assert row.stopped_at >= before and row.last_heartbeat >= before
    assert store.claim("w-2", ()).id == job_id  # claimable again at once


def test_worker_stopped_leaves_alone_a_job_another_worker_took_over(db):
    store = Store(db)
    job_id = enqueue(db, max_retries=3, now=a_minute_ago())
    register(store, "w-1")
    assert store.claim("w-1", (), now=a_minute_ago()).id == job_id
    # w-1 was declared dead meanwhile (at that time); w-2 claimed the retry.
    with db.begin() as conn:
        assert transitions.recover(conn, "w-1", now=a_minute_ago(), cfg=CFG) == [(job_id, "failed")]
    assert store.claim("w-2", ()).id == job_id

    store.worker_stopped("w-1", unstarted_job=job_id, processed=0, failed=0)
    job = job_row(db, job_id)
    assert (job.state, job.worker_id, job.attempts) == ("running", "w-2", 1)


def test_supervisor_heartbeat_prunes_rows_ended_more_than_a_day_ago(db):
    store = Store(db)
    now = utcnow()
    long_ago = now - timedelta(days=3)
    for worker_id in ("stopped-25h", "dead-2d", "stopped-23h", "live-silent-3d"):
        register_at(db, worker_id, long_ago)
    end_at(db, "stopped-25h", WorkerState.STOPPED, now - timedelta(hours=25))
    end_at(db, "dead-2d", WorkerState.DEAD, now - timedelta(days=2))
    end_at(db, "stopped-23h", WorkerState.STOPPED, now - timedelta(hours=23))
    register(store, "s-1", role=Role.SUPERVISOR)

    store.supervisor_heartbeat("s-1", WorkerState.IDLE)
    assert worker_ids(db) == ["live-silent-3d", "s-1", "stopped-23h"]


# --- each dialect's statements ----------------------------------------------------------------


def test_complete_and_claim_records_success_and_claims_the_next_job(db):
    store = Store(db)
    first = enqueue(db, "echo 1", now=T0)
    second = enqueue(db, "echo 2", now=T0, max_retries=5, timeout="30s")
    enqueue(db, "echo later", now=T0, delay="1h")
    assert store.claim("w-1", (), now=T0).id == first

    owned, row = db.dialect.complete_and_claim(db, first, "w-1", output="one\n", now=T0 + seconds(1), queues=None)
    assert owned is True
    assert set(row._fields) >= CLAIM_FIELDS
    assert (row.id, row.command, row.state, row.worker_id, row.attempts, row.max_retries, row.timeout) == (second, "echo 2", "running", "w-1", 0, 5, 30.0)
    assert row.started_at == row.updated_at == T0 + seconds(1)
    done = job_row(db, first)
    assert (done.state, done.exit_code, done.output, done.last_error, done.finished_at) == ("completed", 0, "one\n", None, T0 + seconds(1))
    claimed = job_row(db, second)
    assert (claimed.state, claimed.worker_id, claimed.output, claimed.exit_code, claimed.finished_at) == ("running", "w-1", None, None, None)

    # Nothing due (the delayed job is an hour away): success, and no next job.
    assert db.dialect.complete_and_claim(db, second, "w-1", output=None, now=T0 + seconds(2), queues=None) == (True, None)
    assert (job_row(db, second).state, job_row(db, second).output) == ("completed", None)


def test_complete_and_claim_when_another_worker_took_the_job_over(db):
    store = Store(db)
    job_id = enqueue(db, "echo 1", now=T0, max_retries=3)
    following = enqueue(db, "echo 2", now=T0, delay="10s")
    assert store.claim("w-1", (), now=T0).id == job_id
    # w-1 stalled: declared dead (a retry at T0 + 1s), and w-2 claimed the retry.
    with db.begin() as conn:
        assert transitions.recover(conn, "w-1", now=T0, cfg=CFG) == [(job_id, "failed")]
    assert store.claim("w-2", (), now=T0 + seconds(1)).id == job_id

    owned, row = db.dialect.complete_and_claim(db, job_id, "w-1", output="late\n", now=T0 + seconds(10), queues=None)
    assert owned is False
    assert (row.id, row.worker_id) == (following, "w-1")  # the claim does not depend on the outcome
    job = job_row(db, job_id)
    assert (job.state, job.worker_id, job.output, job.attempts) == ("running", "w-2", None, 1)  # w-2's, untouched


def test_complete_and_claim_claims_only_from_the_given_queues(db):
    store = Store(db)
    in_a = enqueue(db, now=T0, queue="a")
    in_b = enqueue(db, now=T0, queue="b", priority=-1)
    enqueue(db, now=T0, queue="c", priority=9)
    assert store.claim("w-1", ("a",), now=T0).id == in_a

    owned, row = db.dialect.complete_and_claim(db, in_a, "w-1", output=None, now=T0, queues=("a", "b"))
    assert (owned, row.id) == (True, in_b)
    assert db.dialect.complete_and_claim(db, in_b, "w-1", output=None, now=T0, queues=("a",)) == (True, None)


def test_write_one_commits_its_statement(db):
    job_id = enqueue(db, now=T0)
    other = Database(db.url)  # a second engine: its own connections
    try:
        with db.write_one() as conn:
            assert transitions.claim(conn, "w-1", None, T0).id == job_id
            # PostgreSQL autocommits the statement; SQLite commits when the block ends.
            seen_inside = job_row(other, job_id).state
        assert seen_inside == ("running" if db.dialect.name == "postgresql" else "pending")
        row = job_row(other, job_id)
        assert (row.state, row.worker_id) == ("running", "w-1")

        with pytest.raises(StatementFailed), db.write_one() as conn:
            conn.execute(insert(CONFIG).values(key="_seq", value="0"))  # a duplicate key
        assert Store(db).job(job_id)["state"] == "running"  # the database is still usable
    finally:
        other.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?cache=shared&uri=true"])
def test_check_url_refuses_an_in_memory_sqlite_database(url):
    with pytest.raises(ValidationError, match="in-memory"):
        class_for(make_url(url)).check_url(make_url(url))


def test_check_url_accepts_a_database_a_command_can_use(db, tmp_path):
    db.dialect.check_url(make_url(db.url))  # the one under test, on either backend
    SQLiteDialect.check_url(make_url(f"sqlite:///{tmp_path}/queue.db"))
    PostgresDialect.check_url(make_url("postgresql+psycopg://user@db.example/queue"))


# --- the idle worker's probes: work_due and drained --------------------------------------------


def test_an_empty_queue_has_no_work_due_and_is_drained(db):
    store = Store(db)
    for queues in ((), ("a",), ("a", "b")):
        assert store.work_due(queues, T0) is False
        assert store.drained(queues, T0) is True


def test_a_job_delayed_into_the_future_is_not_due_yet(db):
    store = Store(db)
    enqueue(db, now=T0, queue="a", delay="60s")
    assert store.work_due((), T0) is False
    assert store.work_due(("a",), T0 + seconds(60) - US) is False
    assert store.work_due(("a",), T0 + seconds(60)) is True
    assert store.work_due((), T0 + seconds(60)) is True
    # Burst mode ends with only scheduled jobs left; once one is due it waits for it.
    assert store.drained((), T0) is True
    assert store.drained((), T0 + seconds(60)) is False


def test_work_due_and_drained_look_only_in_the_given_queues(db):
    store = Store(db)
    enqueue(db, now=T0, queue="a")
    assert [store.work_due(q, T0) for q in ((), ("a",), ("b",), ("b", "a"))] == [True, True, False, True]
    assert [store.drained(q, T0) for q in ((), ("a",), ("b",), ("b", "a"))] == [False, False, True, False]


def test_a_failed_job_awaiting_its_retry_keeps_its_queue_not_drained(db):
    store = Store(db)
    job_id = enqueue(db, now=T0, queue="a", max_retries=1)
    assert store.claim("w-1", (), now=T0).id == job_id
    state, _ = store.record(job_id, "w-1", stopped=False, error="exit code 1", exit_code=1, output=None,
                            cfg=CFG, claim_next=False, queues=(), now=T0)
    assert state == "failed"  # its retry at T0 + 1s

    assert store.work_due((), T0) is False
    assert [store.drained(q, T0) for q in ((), ("a",), ("b",))] == [False, False, True]
    assert store.work_due(("a",), T0 + seconds(1)) is True


def test_a_running_job_keeps_its_queue_not_drained(db):
    store = Store(db)
    job_id = enqueue(db, now=T0, queue="a")
    assert store.claim("w-1", (), now=T0).id == job_id

    assert store.work_due((), T0) is False
    assert [store.drained(q, T0) for q in ((), ("a",), ("b",))] == [False, False, True]
    assert db.dialect.complete_and_claim(db, job_id, "w-1", output=None, now=T0, queues=None) == (True, None)
    assert store.drained((), T0) is True
