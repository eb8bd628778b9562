"""Queue controls (#13): `queue pause` / `resume` and `queue limit`, honoured by every
claim on every host; the running counter behind the limit; the 0009 migration."""

import signal

import psutil
import sqlalchemy as sa
from alembic import command as alembic_command
from sqlalchemy import select

from conftest import wait_until
from queuectl import jobspec
from queuectl.store import Store, jobs, schema, transitions
from queuectl.store.models import QUEUES
from queuectl.store.queues import recount, set_limit, set_paused
from support import T0, enqueue, error_line, finish, seconds
from worker_support import FAST, configure, job, kill_all, live_workers, read_lines, supervisors, tree, wait_workers  # noqa: F401

HOSTS = ("host-a", "host-b", "host-c")


def counters(db) -> dict[str, tuple]:
    with db.read() as conn:
        return {r.name: (bool(r.paused), r.max_running, r.running) for r in conn.execute(select(QUEUES))}


def claim(db, worker_id: str = "w-test", queues=None, now=T0):
    return Store(db).claim(worker_id, queues or (), now)


def measured_job(tmp_path, hold: str = "sleep 0.5") -> str:
    """A job that counts the jobs of its kind running with it, under a lock (flock):
    each start appends the count to `peaks`, so the largest line is the concurrency
    the jobs themselves saw."""
    count, lock, peaks = tmp_path / "count", tmp_path / "lock", tmp_path / "peaks"
    return (
        f"( flock 9; n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}; echo $n >> {peaks} ) 9>{lock}; "
        f"{hold}; "
        f"( flock 9; echo $(( $(cat {count}) - 1 )) > {count} ) 9>{lock}"
    )


def peaks(tmp_path) -> list[int]:
    return [int(line) for line in read_lines(tmp_path / "peaks")]


# --- the store: claims, slots, counters ----------------------------------------------------


def test_a_paused_queue_is_skipped_by_claims_and_work_checks(db):
    enqueue(db, id="p1", queue="p", priority=5)
    enqueue(db, id="o1", queue="o")
    with db.begin() as conn:
        assert set_paused(conn, "p", True, T0) is False
    store = Store(db)
    assert store.work_due(("p",), T0) is False and store.work_due((), T0) is True
    assert store.drained(("p",), T0), "a paused queue's jobs do not hold a burst worker"
    assert claim(db).id == "o1", "the paused queue's job, though first in order, is skipped"
    assert claim(db) is None
    with db.begin() as conn:
        assert set_paused(conn, "p", False, T0) is True
    assert counters(db) == {}, "a queue with no controls left has no row"
    assert claim(db).id == "p1"


def test_a_limited_queue_runs_at_most_its_limit_and_every_end_of_a_run_frees_a_slot(db):
    for n in range(6):
        enqueue(db, id=f"q{n}", queue="q", max_retries=1 if n == 1 else 0)
    enqueue(db, id="other", queue="o")
    with db.begin() as conn:
        set_limit(conn, "q", 2, T0)
    store = Store(db)
    first, second = claim(db, "w1"), claim(db, "w2")
    assert (first.id, second.id) == ("q0", "q1") and counters(db)["q"] == (False, 2, 2)
    assert store.work_due(("q",), T0) is False, "a full queue wakes nobody"
    assert claim(db, "w3").id == "other", "a full queue does not block the others"
    assert claim(db, "w4") is None
    # Completion (the hot path, whose claim beside it skips controlled queues).
    owned, nxt = store.complete_and_claim("q0", "w1", output="", queues=(), now=T0)
    assert owned and nxt is None and counters(db)["q"][2] == 1
    assert claim(db, "w1").id == "q2" and counters(db)["q"][2] == 2
    # A failure with a retry left, then out of retries (dead), a cancel, a release.
    for state in ("failed", "dead"):
        assert store.record("q1" if state == "failed" else "q2", "w2" if state == "failed" else "w1", stopped=False, error="exit code 1",
                            exit_code=1, output="", cfg={"backoff-base": 1, "backoff-max": 0, "backoff-jitter": 0},
                            claim_next=True, queues=(), now=T0)[0] == state
        assert counters(db)["q"][2] == 1
        assert claim(db, "w2").queue == "q" and counters(db)["q"][2] == 2
    with db.read() as conn:
        victim, cancelled = transitions.held(conn, "w2")  # both slots, the two claims just above
    assert store.record(victim, "w2", stopped=True, error=None, exit_code=None, output=None, cfg={}, claim_next=False, queues=())[0] == "pending"
    assert counters(db)["q"][2] == 1
    with db.begin() as conn:
        transitions.request_cancel(conn, [cancelled], now=T0)
    assert store.record(cancelled, "w2", stopped=False, error=None, exit_code=None, output=None, cfg={}, claim_next=False,
                        queues=(), cancelled=True)[0] == "cancelled"
    assert counters(db)["q"][2] == 0


def test_recovery_of_a_dead_worker_frees_its_slot_and_recount_repairs_drift(db):
    enqueue(db, id="a", queue="q", max_retries=0)
    enqueue(db, id="b", queue="q")
    with db.begin() as conn:
        set_limit(conn, "q", 1, T0)
    store = Store(db)
    assert claim(db, "w-lost").id == "a" and claim(db, "w2") is None
    with db.begin() as conn:
        assert transitions.recover(conn, "w-lost", now=T0, cfg={"backoff-base": 1, "backoff-max": 0, "backoff-jitter": 0}) == [("a", "dead")]
    assert counters(db)["q"] == (False, 1, 0)
    assert claim(db, "w2").id == "b"
    with db.begin() as conn:  # drift, as if a claim had been missed
        conn.execute(sa.update(QUEUES).values(running=7))
    store.recount_queues()
    assert counters(db)["q"] == (False, 1, 1)
    finish(db, "b")  # (support.finish: the store's complete)
    with db.begin() as conn:
        recount(conn)
    assert counters(db)["q"] == (False, 1, 0)


def test_the_hot_path_claims_only_uncontrolled_queues_beside_an_end(db):
    enqueue(db, id="done-me", queue="o")
    enqueue(db, id="limited", queue="q", priority=9)
    enqueue(db, id="plain", queue="o")
    store = Store(db)
    assert claim(db, "w1", queues=("o",)).id == "done-me"
    with db.begin() as conn:
        set_limit(conn, "q", 5, T0)
    owned, nxt = store.complete_and_claim("done-me", "w1", output="", queues=(), now=T0 + seconds(1))
    assert owned and nxt.id == "plain", "the limited queue's job waits for a claim of its own"
    assert claim(db, "w1").id == "limited" and counters(db)["q"] == (False, 5, 1)


# --- the commands --------------------------------------------------------------------------


def test_queue_commands_and_bad_input(cli, db):
    assert cli.ok("queue", "pause", "media").stdout == "queue media is now paused: no worker claims its jobs (running ones finish)\n"
    assert "was already paused" in cli.ok("queue", "pause", "media").stdout
    assert cli.ok("queue", "limit", "media", "3").stdout == "queue media: at most 3 running jobs at once, across all hosts\n"
    assert cli.json("enqueue", "--queue", "media", "true")["queue"] == "media", "enqueue works on a paused queue"
    entry = cli.json("queue", "list")[0]
    assert (entry["queue"], entry["ready"], entry["paused"], entry["max_running"]) == ("media", 1, True, 3)
    lines = cli.ok("queue", "list").stdout.splitlines()
    assert lines[0].split()[-1] == "CONTROLS" and lines[1].split()[-1] == "PAUSED,limit=3"
    assert "PAUSED,limit=3" in cli.ok("status").stdout
    assert cli.json("status")["unserved"] == [], "a paused queue is not reported as unserved"
    assert cli.ok("queue", "resume", "media").stdout == "queue media resumed\n"
    assert cli.ok("queue", "resume", "media").stdout == "queue media was not paused\n"
    assert cli.ok("queue", "limit", "media", "none").stdout == "queue media: no limit\n"
    assert counters(db) == {}
    assert cli.ok("queue", "list").stdout.splitlines()[1].split()[-1] == "-"
    for bad in ("0", "-1", "x", "1.5", "", "1000001"):
        error_line(cli("queue", "limit", "media", bad), 2, "invalid limit")
    for action in (("pause",), ("resume",), ("limit",)):
        error_line(cli("queue", *action, "bad name", *(["2"] if action == ("limit",) else [])), 2, "invalid queue name")
    assert counters(db) == {}, "refused input wrote nothing"


# --- real workers ------------------------------------------------------------------------


def test_pause_stops_claims_on_every_host_and_resume_restarts_them(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    gate = tmp_path / "gate"
    cli.ok("queue", "pause", "p")
    started = [supervisors.start("-c", "2", hostname=host) for host in HOSTS[:2]]
    for sup in started:
        wait_workers(db, sup, 2)
    # Enqueued while paused, first in claim order: only the other queue's jobs run.
    paused_ids = [cli.json("enqueue", "--queue", "p", "--priority", "9", "true")["id"] for _ in range(4)]
    other_ids = [cli.json("enqueue", "--queue", "o", "true")["id"] for _ in range(4)]
    wait_until(lambda: all(job(db, i)["state"] == "completed" for i in other_ids), timeout=60, message="the other queue's jobs")
    assert {job(db, i)["state"] for i in paused_ids} == {"pending"}
    # A job running when its queue is paused finishes.
    cli.ok("queue", "resume", "p")
    running = cli.json("enqueue", "--queue", "p", "--priority", "10", f"while [ ! -e {gate} ]; do sleep 0.05; done")["id"]
    wait_until(lambda: job(db, running)["state"] == "running", timeout=60, message="the gated job running")
    cli.ok("queue", "pause", "p")
    # Whatever the others claimed before the pause landed runs to its end; after that, nothing more.
    gate.touch()
    wait_until(lambda: job(db, running)["state"] == "completed", timeout=60, message="the running job finishing")
    claimed_before = {i for i in paused_ids if job(db, i)["state"] != "pending"}
    wait_until(lambda: all(job(db, i)["state"] == "completed" for i in claimed_before), timeout=60, message="jobs claimed before the pause")
    late = cli.json("enqueue", "--queue", "o", "true")["id"]
    wait_until(lambda: job(db, late)["state"] == "completed", timeout=60, message="a later job of the other queue")
    assert {i for i in paused_ids if job(db, i)["state"] != "pending"} == claimed_before, "no claim from the paused queue"
    cli.ok("queue", "resume", "p")
    wait_until(lambda: all(job(db, i)["state"] == "completed" for i in paused_ids), timeout=60, message="the queue resumed")
    hosts_seen = {r.host for r in live_workers(db)}
    assert hosts_seen == set(HOSTS[:2])
    for sup in started:
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0, sup.log()


def test_three_hosts_three_workers_each_never_run_more_than_the_limit(cli, db, supervisors, tmp_path):
    """The issue's test: 3 supervisors x 3 workers on one queue limited to 2; the jobs
    measure their own concurrency (exactly 2), and another queue keeps flowing."""
    configure(db, **FAST)
    cli.ok("queue", "limit", "narrow", "2")
    limited = [jobspec.build(measured_job(tmp_path), queue="narrow", priority=5) for _ in range(14)]
    others = [jobspec.build("true", queue="wide") for _ in range(30)]
    sups = [supervisors.start("-c", "3", hostname=host) for host in HOSTS]
    for sup in sups:
        wait_workers(db, sup, 3)
    limited_ids = [r["id"] for r in jobs.enqueue(db, limited)]
    other_ids = [r["id"] for r in jobs.enqueue(db, others)]
    wait_until(lambda: all(job(db, i)["state"] == "completed" for i in limited_ids + other_ids), timeout=120, interval=0.2,
               message="every job completing")
    for sup in sups:
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0, sup.log()
    assert {job(db, i)["state"] for i in limited_ids + other_ids} == {"completed"}
    assert max(peaks(tmp_path)) == 2 and len(peaks(tmp_path)) == len(limited_ids), peaks(tmp_path)
    # The other queue was not held up behind the limited one: it was done before it.
    last_other = max(job(db, i)["finished_at"] for i in other_ids)
    assert last_other < max(job(db, i)["finished_at"] for i in limited_ids)
    assert counters(db)["narrow"] == (False, 2, 0)
    with db.read() as conn:
        hosts = set(conn.execute(sa.text("SELECT DISTINCT w.host FROM jobs j JOIN workers w ON w.id = j.worker_id")).scalars())
    assert len(hosts) >= 2, f"several hosts took part: {hosts}"


def test_the_limit_survives_a_sigkilled_worker(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    cli.ok("queue", "limit", "one", "1")
    sup = supervisors.start("-c", "2", hostname="host-a")
    wait_workers(db, sup, 2)
    first = cli.json("enqueue", "--queue", "one", "--max-retries", "0", "sleep 60")["id"]
    wait_until(lambda: job(db, first)["state"] == "running", timeout=60, message="the first job running")
    second = cli.json("enqueue", "--queue", "one", "true")["id"]
    probe = cli.json("enqueue", "--queue", "free", "true")["id"]
    wait_until(lambda: job(db, probe)["state"] == "completed", timeout=60, message="a job of another queue")
    assert job(db, second)["state"] == "pending", "the limit of 1 holds the second job back"
    victim = next(r for r in live_workers(db, sup.pid) if r.job_id == first)
    kill_all([psutil.Process(victim.pid)])
    done = wait_until(lambda: job(db, second)["state"] == "completed" and job(db, second), timeout=60, message="the slot given back")
    lost = job(db, first)
    assert lost["state"] == "dead" and lost["last_error"] == "worker lost"
    assert done["started_at"] >= lost["finished_at"], "the second job started only once the first one's slot was freed"
    assert counters(db)["one"] == (False, 1, 0)
    kill_all(tree(sup.pid)[1:])
    sup.signal(signal.SIGTERM)
    sup.wait()


def test_limit_none_clears_the_limit(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    cli.ok("queue", "limit", "q", "1")
    cli.ok("queue", "limit", "q", "none")
    count = tmp_path / "count"
    # Each job waits until all three run at once (or gives up after 30 s, and fails).
    barrier = f"i=0; while [ \"$(cat {count} 2>/dev/null)\" != 3 ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; [ $i -lt 600 ]"
    ids = [r["id"] for r in jobs.enqueue(db, [jobspec.build(measured_job(tmp_path, barrier), queue="q", max_retries=0) for _ in range(3)])]
    sup = supervisors.start("--burst", "-c", "3")
    assert sup.wait() == 0, sup.log()
    assert {job(db, i)["state"] for i in ids} == {"completed"}
    assert max(peaks(tmp_path)) == 3


# --- the migration -------------------------------------------------------------------------


def test_the_0009_migration_from_0008_with_data_both_ways(db):
    enqueue(db, "true", id="kept", queue="q")
    with db.begin() as conn:
        set_limit(conn, "q", 2, T0)
    with db.engine.connect() as conn:
        cfg = schema.alembic_config(conn)
        alembic_command.downgrade(cfg, "0008")
        conn.commit()
        assert "queues" not in sa.inspect(conn).get_table_names()
        assert conn.exec_driver_sql("SELECT id, queue, state FROM jobs").all() == [("kept", "q", "pending")]
        alembic_command.upgrade(cfg, "head")
        conn.commit()
        assert conn.exec_driver_sql("SELECT count(*) FROM queues").scalar() == 0, "no queue has controls after the upgrade"
        assert conn.exec_driver_sql("SELECT id, queue, state FROM jobs").all() == [("kept", "q", "pending")]
    # The new table works as the models declare it (defaults included).
    with db.begin() as conn:
        conn.execute(sa.insert(QUEUES).values(name="r", updated_at=T0))
        set_paused(conn, "q", True, T0)
    assert counters(db) == {"q": (True, None, 0), "r": (False, None, 0)}
    assert claim(db) is None
