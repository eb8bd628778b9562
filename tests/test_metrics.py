"""Metrics (#14): the job tallies every transition writes in its own transaction, their
roll-up, the throughput and timings read back, and the Prometheus exposition of
`queuectl metrics`, on SQLite and PostgreSQL."""

import math
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, func, select

from queuectl import jobspec, metrics
from queuectl.store import Store, dlq, jobs, tallies, transitions
from queuectl.store.models import TALLIES
from support import T0, enqueue, fail_once, finish, kill, seconds, take
from worker_support import supervisors  # noqa: F401  (fixture)

OUTCOMES = ("enqueued", "completed", "failed", "timed_out", "dead", "cancelled")


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family, name: str | None = None) -> dict:
    """{frozenset of labels: value} of a family's samples named `name` (default: its own)."""
    name = name or family.name
    return {frozenset(s.labels.items()): s.value for s in family.samples if s.name == name}


def tally_rows(db) -> int:
    with db.read() as conn:
        return conn.execute(select(func.count()).select_from(TALLIES)).scalar_one()


def test_each_transition_is_tallied_in_its_own_transaction(db):
    store = Store(db)
    done = enqueue(db, queue="a", max_retries=0)
    finish(db, done)
    twice = enqueue(db, queue="a", max_retries=1)
    assert fail_once(db, twice) == "failed"
    assert fail_once(db, twice, error="timed out after 5s") == "dead"  # timed_out and dead
    doomed = enqueue(db, queue="a", max_retries=0)
    waiter = enqueue(db, queue="b", after=(doomed,))
    kill(db, doomed)  # dead; its dependent cancelled (store/dependencies.py)
    waiting = enqueue(db, queue="b")
    running = enqueue(db, queue="b")
    take(db, running)
    assert store.cancel([waiting, running]) == ([waiting], [running])
    with db.begin() as conn:
        assert transitions.finish_cancelled(conn, running, "w-test", exit_code=None, output=None, now=T0)
    assert dlq.retry(db, [twice], now=T0) == [twice]  # back to pending: not a new job

    assert jobs.get(db, waiter).state == "cancelled"
    assert store.tallies() == {
        ("a", "enqueued"): 3, ("a", "completed"): 1, ("a", "failed"): 1, ("a", "timed_out"): 1, ("a", "dead"): 2,
        ("b", "enqueued"): 3, ("b", "cancelled"): 3,
    }
    minutes = store.throughput(T0 + seconds(30), minutes=3)
    assert [m["minute"] for m in minutes] == [T0 - timedelta(minutes=2), T0 - timedelta(minutes=1), T0]
    assert minutes[0] == {"minute": T0 - timedelta(minutes=2), **dict.fromkeys(OUTCOMES, 0)}
    # Store.cancel runs on the real clock: its cancel is in the current minute.
    assert minutes[-1] == {"minute": T0, "enqueued": 6, "completed": 1, "failed": 1, "timed_out": 1, "dead": 2, "cancelled": 2}
    assert store.throughput(T0, minutes=1, queue="b")[0]["cancelled"] == 2
    assert store.throughput(T0, minutes=1, queue="b")[0]["completed"] == 0


def test_a_bulk_change_adds_one_row_per_queue_and_outcome(db):
    store = Store(db)
    jobs.enqueue(db, [jobspec.build("true", queue=("x" if n % 2 else "y")) for n in range(1000)], now=T0)
    assert tally_rows(db) == 2
    cancelled, _ = store.cancel(queue="x")
    assert len(cancelled) == 500
    assert tally_rows(db) == 3
    assert store.tallies() == {("x", "enqueued"): 500, ("y", "enqueued"): 500, ("x", "cancelled"): 500}


def test_the_roll_up_keeps_every_total_and_a_day_of_minutes(db):
    store = Store(db)
    for n in range(3):
        finish(db, enqueue(db, queue="a", now=T0 + timedelta(minutes=n)), now=T0 + timedelta(minutes=n))
    before = store.tallies()
    minutes = store.throughput(T0 + timedelta(minutes=2), minutes=3)
    assert store.roll_up_tallies(now=T0 + timedelta(minutes=30)) == 0  # nothing an hour old yet
    assert store.roll_up_tallies(now=T0 + timedelta(hours=23)) == 6  # 3 minutes x (enqueued, completed)
    assert store.tallies() == before
    assert store.throughput(T0 + timedelta(minutes=2), minutes=3) == minutes  # the archive keeps a day of minutes
    assert store.roll_up_tallies(now=T0 + timedelta(days=2)) == 0  # nothing left to fold; the archive expires
    assert store.tallies() == before
    assert tally_rows(db) == 2  # one total per (queue, outcome), at tallies.EPOCH
    assert all(m["completed"] == 0 for m in store.throughput(T0 + timedelta(minutes=2), minutes=5))
    later = T0 + timedelta(days=3)
    finish(db, enqueue(db, queue="a", now=later), now=later)
    assert store.roll_up_tallies(now=later) == 0
    assert store.prune({}, now=later + timedelta(days=2)) is not None  # `queuectl prune` rolls up too
    assert store.tallies() == {("a", "enqueued"): 4, ("a", "completed"): 4}
    assert tally_rows(db) == 2
    with db.read() as conn:
        assert set(conn.execute(select(TALLIES.c.minute)).scalars()) == {tallies.EPOCH}


def test_recent_timings_measure_runs_and_waits_of_the_window(db):
    store = Store(db)
    late = enqueue(db, queue="a", now=T0, delay=10)  # ready at T0+10s: its wait starts then
    take(db, late, now=T0 + seconds(12))
    with db.begin() as conn:
        transitions.complete(conn, late, "w-test", exit_code=0, output=None, now=T0 + seconds(15))
    old = enqueue(db, queue="a", now=T0 - timedelta(hours=1))
    finish(db, old, now=T0 - timedelta(minutes=30))  # outside a 15-minute window
    found = store.recent_timings(T0 + seconds(20))
    assert found == {"a": {"durations": [3.0], "waits": [2.0]}}
    assert store.recent_timings(T0 + seconds(20), window_seconds=3600)["a"]["durations"] == [0.0, 3.0]


def test_the_exposition_parses_and_names_no_job(db):
    store = Store(db)
    secret = "echo the-secret-command"
    done = enqueue(db, secret, queue="mail", id="job-with-a-name")
    finish(db, done)
    enqueue(db, secret, queue="mail", id="another-job")
    kill(db, enqueue(db, secret, queue="mail", max_retries=0, id="dying-job"))
    text = metrics.exposition(store, now=T0 + seconds(5)).decode()
    found = families(text)
    assert samples(found["queuectl_jobs"])[frozenset({("queue", "mail"), ("state", "pending")})] == 1
    assert samples(found["queuectl_jobs"])[frozenset({("queue", "mail"), ("state", "dead")})] == 1
    assert samples(found["queuectl_jobs_ready"]) == {frozenset({("queue", "mail")}): 1}
    assert samples(found["queuectl_queue_oldest_ready_age_seconds"]) == {frozenset({("queue", "mail")}): 5.0}
    assert samples(found["queuectl_jobs_enqueued"], "queuectl_jobs_enqueued_total") == {frozenset({("queue", "mail")}): 3}
    finished = samples(found["queuectl_jobs_finished"], "queuectl_jobs_finished_total")
    assert {dict(k)["outcome"]: v for k, v in finished.items()} == {"completed": 1, "failed": 0, "timed_out": 0, "dead": 1, "cancelled": 0}
    assert found["queuectl_job_duration_seconds"].type == "summary"
    # Quantiles of the window only: a window's _sum and _count would fall as it moves
    # on, which Prometheus reads as a counter reset.
    assert {s.name for s in found["queuectl_job_wait_seconds"].samples} == {"queuectl_job_wait_seconds"}
    assert samples(found["queuectl_job_wait_seconds"])[frozenset({("queue", "mail"), ("quantile", "0.5")})] == 0.0
    assert {"queuectl_workers", "queuectl_worker_last_heartbeat_timestamp_seconds", "queuectl_queue_paused",
            "queuectl_queue_max_running", "queuectl_schedules"} <= set(found)
    labels = {value for family in found.values() for sample in family.samples for value in sample.labels.values()}
    assert not labels & {"job-with-a-name", "another-job", "dying-job", secret}
    assert "secret" not in text and "job-with" not in text


def test_a_scrape_costs_the_same_statements_whatever_the_queues_and_workers(db):
    store = Store(db)
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    enqueue(db, queue="q0")
    statements.clear()
    metrics.exposition(store)
    few = len(statements)
    for n in range(1, 20):
        enqueue(db, queue=f"q{n}")
    store.pause_queue("q3", True)
    store.limit_queue("q4", 2)
    for n in range(5):
        store.register(id=f"w-{n}", role="worker", host=f"host{n % 2}", pid_started=0.0)
    statements.clear()
    text = metrics.exposition(store).decode()
    assert len(statements) == few, statements
    found = families(text)
    assert samples(found["queuectl_queue_paused"])[frozenset({("queue", "q3")})] == 1
    assert samples(found["queuectl_queue_max_running"]) == {frozenset({("queue", "q4")}): 2}
    assert samples(found["queuectl_workers"])[frozenset({("host", "host0"), ("state", "idle")})] == 3
    assert len(samples(found["queuectl_worker_last_heartbeat_timestamp_seconds"])) == 5


def test_a_real_worker_run_is_tallied_and_queuectl_metrics_prints_it(cli, db, supervisors):
    cli.ok("enqueue", "--queue", "real", "true")
    cli.ok("enqueue", "--queue", "real", "--max-retries", "0", "exit 3")
    cli.ok("enqueue", "--queue", "real", "--max-retries", "0", "--timeout", "0.2", "sleep 30")
    sup = supervisors.start("--burst", "--concurrency", "2")
    assert sup.wait() == 0, sup.log()
    result = cli.ok("metrics")
    assert result.stderr == ""
    found = families(result.stdout)
    finished = samples(found["queuectl_jobs_finished"], "queuectl_jobs_finished_total")
    assert {dict(k)["outcome"]: v for k, v in finished.items()} == {"completed": 1, "failed": 0, "timed_out": 1, "dead": 2, "cancelled": 0}
    assert samples(found["queuectl_jobs_enqueued"], "queuectl_jobs_enqueued_total") == {frozenset({("queue", "real")}): 3}
    assert sum(samples(found["queuectl_workers"]).values()) == 2
    durations = samples(found["queuectl_job_duration_seconds"])
    assert set(durations) == {frozenset({("queue", "real"), ("quantile", q)}) for q in ("0.5", "0.9", "0.99")}
    assert all(0 <= value < 10 for value in durations.values())


def test_a_quiet_queue_keeps_its_timing_series_as_nan(db):
    # Jobs completed an hour ago: outside the window. The queue's quantiles stay, NaN
    # (a summary without observations), rather than vanishing from the scrape.
    store = Store(db)
    finish(db, enqueue(db, queue="quiet", now=T0 - timedelta(hours=1)), now=T0 - timedelta(hours=1))
    found = families(metrics.exposition(store, now=T0).decode())
    for name in ("queuectl_job_duration_seconds", "queuectl_job_wait_seconds"):
        values = samples(found[name])
        assert set(values) == {frozenset({("queue", "quiet"), ("quantile", q)}) for q in ("0.5", "0.9", "0.99")}
        assert all(math.isnan(v) for v in values.values())


def test_the_tallies_migrate_down_and_up_around_existing_jobs(cli, db):
    cli.ok("enqueue", "--id", "kept", "--queue", "old", "true")
    cli.ok("db", "downgrade", "0009")
    cli.ok("db", "upgrade")
    found = families(cli.ok("metrics").stdout)  # counting starts again at the upgrade
    assert samples(found["queuectl_jobs"])[frozenset({("queue", "old"), ("state", "pending")})] == 1
    assert samples(found["queuectl_jobs_enqueued"], "queuectl_jobs_enqueued_total") == {}
    assert cli.json("show", "kept")["state"] == "pending"
