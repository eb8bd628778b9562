"""Recurring schedules (#13): next ticks and DST (queuectl/cron.py), catch-up and
overlap with a fixed clock (worker/scheduler.py over store/schedules.py, on each
backend), the CLI, and real supervisors on several hosts firing each tick once."""

import collections
import json
import signal
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command as alembic_command

from conftest import wait_until
from queuectl import cron, jobspec
from queuectl.errors import DuplicateSchedule, NotFound, ValidationError
from queuectl.store import Store, schema
from queuectl.store.models import SCHEDULES
from queuectl.worker.scheduler import GRACE, Scheduler, plan
from support import error_line, finish, take
from worker_support import FAST, configure, supervisors  # noqa: F401

# A fixed clock: 12:00:30 UTC, half a minute after a tick of `* * * * *`.
T0 = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
HOSTS = ("host-a", "host-b", "host-c")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- next ticks (cron.py) --------------------------------------------------------------


def ticks(expr: str, tz: str, start: datetime, count: int) -> list[datetime]:
    found, at = [], start
    for _ in range(count):
        at = cron.next_tick(expr, tz, at)
        found.append(at)
    return found


def test_next_tick_in_utc_and_the_aliases():
    assert ticks("*/15 * * * *", "UTC", utc(2030, 1, 1, 12, 7), 3) == [utc(2030, 1, 1, 12, 15), utc(2030, 1, 1, 12, 30), utc(2030, 1, 1, 12, 45)]
    # Strictly after: a start on a tick gives the next one.
    assert cron.next_tick("0 * * * *", "UTC", utc(2030, 1, 1, 12)) == utc(2030, 1, 1, 13)
    start = utc(2030, 1, 15, 12, 0, 30)
    assert cron.next_tick("@hourly", "UTC", start) == utc(2030, 1, 15, 13)
    assert cron.next_tick("@daily", "UTC", start) == cron.next_tick("@midnight", "UTC", start) == utc(2030, 1, 16)
    assert cron.next_tick("@weekly", "UTC", start) == utc(2030, 1, 20)  # a Sunday
    assert cron.next_tick("@monthly", "UTC", start) == utc(2030, 2, 1)
    assert cron.next_tick("@yearly", "UTC", start) == cron.next_tick("@annually", "UTC", start) == utc(2031, 1, 1)
    # In a zone: 09:00 in New York is 14:00 UTC in winter.
    assert cron.next_tick("0 9 * * *", "America/New_York", utc(2030, 1, 15)) == utc(2030, 1, 15, 14)


def test_spring_forward_a_fixed_time_in_the_skipped_hour_runs_once_when_clocks_jump():
    # Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 never exists.
    daily = ticks("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 12), 3)
    assert daily == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    # Every hour at :30: at each wall-clock :30 that exists (02:30 does not), so still one run an hour.
    hourly = ticks("30 * * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 45), 3)
    assert hourly == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 30)]


def test_fall_back_a_fixed_time_in_the_repeated_hour_runs_once_an_hourly_one_twice():
    # Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 comes twice.
    daily = ticks("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 3)
    assert daily == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]
    hourly = ticks("30 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 45), 4)
    assert hourly == [utc(2026, 10, 25, 0, 0) + timedelta(minutes=30 + 60 * i) for i in range(4)]
    # Starting inside the repeated hour (its second pass) never goes back to a tick passed.
    assert cron.next_tick("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 26, 1, 30)


@pytest.mark.parametrize("expr, fragment", [
    ("61 * * * *", "Bad minute"), ("* * *", "5 fields"), ("* * * * * *", "5 fields"), ("@often", "unknown alias"),
    ("0 0 31 2 *", "Bad day-of-month"), ("a b c d e", "Bad minute"), ("", "5 fields"),
])
def test_invalid_expressions_are_refused(expr, fragment):
    with pytest.raises(ValidationError, match=fragment):
        cron.check(expr, "UTC", T0)


def test_unknown_zones_are_refused():
    for name in ("Mars/Olympus", "../../etc/passwd", ""):
        with pytest.raises(ValidationError, match="unknown time zone"):
            cron.check("* * * * *", name, T0)


def test_a_machine_without_a_time_zone_database_is_told_so(monkeypatch):
    import zoneinfo

    def missing(name):
        raise zoneinfo.ZoneInfoNotFoundError(name)

    monkeypatch.setattr(cron, "ZoneInfo", missing)
    monkeypatch.setattr(cron, "available_timezones", set)
    with pytest.raises(ValidationError, match="no time zone database.*tzdata"):
        cron.check("* * * * *", "Europe/Berlin", T0)


# --- catch-up (worker/scheduler.plan) ------------------------------------------------


def due_row(catch_up: str, next_run: datetime, expr: str = "* * * * *"):
    return collections.namedtuple("Due", "name cron tz catch_up next_run")("s", expr, "UTC", catch_up, next_run)


def test_plan_on_time_late_and_missed_ticks():
    tick = utc(2030, 1, 1, 12)
    # On time (within GRACE, no later tick passed): enqueued, whatever catch-up says.
    for catch_up in ("one", "none"):
        assert plan(due_row(catch_up, tick), T0) == (utc(2030, 1, 1, 12, 1), True, 0)
    # Three hours without a supervisor: one run for all of them, or none.
    after_outage = tick + timedelta(hours=3, seconds=5)
    assert plan(due_row("one", tick), after_outage) == (utc(2030, 1, 1, 15, 1), True, 180)
    assert plan(due_row("none", tick), after_outage) == (utc(2030, 1, 1, 15, 1), False, 181)
    # A daily tick seen late but before the next one: late by more than GRACE.
    daily = due_row("none", tick, "0 12 * * *")
    assert plan(daily, tick + GRACE - timedelta(seconds=1))[1:] == (True, 0)
    assert plan(daily, tick + GRACE + timedelta(seconds=1))[1:] == (False, 1)


# --- firing with a fixed clock (both backends) ---------------------------------------


@pytest.fixture
def store(db):
    return Store(db)


def add(store, name="s", expr="* * * * *", *, now=T0, command="true", catch_up="one", overlap="skip", tz="UTC", **options):
    expr, next_run = cron.check(expr, tz, now)
    spec = jobspec.build(command, **options)
    return store.add_schedule(name, cron=expr, tz=tz, catch_up=catch_up, overlap=overlap, spec=spec, next_run=next_run)


def jobs_of(store, name="s") -> list[dict]:
    return store.list_jobs(schedule=name)


def test_a_due_tick_is_fired_once_and_its_job_carries_the_schedule(store):
    add(store, queue="reports", priority=5, max_retries=1, timeout="30s")
    scheduler = Scheduler(store)
    assert scheduler.run_once(now=T0) == []  # next_run is 12:01
    at = utc(2030, 1, 1, 12, 1, 0, 300000)
    (fired,) = scheduler.run_once(now=at)
    assert fired[:2] == ("s", "fired")
    assert Scheduler(store).run_once(now=at) == []  # a second supervisor: nothing left
    (job,) = jobs_of(store)
    assert (job["id"], job["schedule"], job["queue"], job["priority"], job["max_retries"], job["timeout"]) == (fired[2], "s", "reports", 5, 1, 30.0)
    shown = store.schedule("s")
    assert (shown["next_run"], shown["last_job"], shown["last_job_state"]) == ("2030-01-01T12:02:00.000Z", job["id"], "pending")


def test_a_broken_schedule_is_logged_and_the_others_still_fire(store, db, caplog):
    add(store, "a-broken")
    add(store, "b-fine")
    with db.begin() as conn:
        conn.execute(sa.update(SCHEDULES).where(SCHEDULES.c.name == "a-broken").values(spec="{not json"))
    scheduler = Scheduler(store)
    at = utc(2030, 1, 1, 12, 1, 5)
    assert [(name, what) for name, what, _ in scheduler.run_once(now=at)] == [("b-fine", "fired")]
    assert "schedule a-broken could not be fired" in caplog.text
    assert jobs_of(store, "a-broken") == []


def test_the_guarded_advance_lets_one_of_two_readers_of_a_tick_fire_it(store):
    add(store)
    at = utc(2030, 1, 1, 12, 1, 5)
    (row,) = store.due_schedules(at, 10)
    # Two supervisors read the same due tick; the first to write fires it.
    first = store.fire_schedule("s", tick=row.next_run, next_run=utc(2030, 1, 1, 12, 2), run=True, missed=0, now=at)
    second = store.fire_schedule("s", tick=row.next_run, next_run=utc(2030, 1, 1, 12, 2), run=True, missed=0, now=at)
    assert first[0] == "fired" and second is None
    assert len(jobs_of(store)) == 1


def test_catch_up_one_and_none_after_an_outage(store):
    add(store, "one", catch_up="one", overlap="allow")
    add(store, "none", catch_up="none", overlap="allow")
    later = T0 + timedelta(hours=2)
    fired = sorted(Scheduler(store).run_once(now=later))
    assert [(name, what) for name, what, _ in fired] == [("none", "missed"), ("one", "fired")]
    assert len(jobs_of(store, "one")) == 1 and jobs_of(store, "none") == []
    one, none = store.schedule("one"), store.schedule("none")
    assert one["missed"] == 119 and none["missed"] == 120  # 12:01 .. 14:00
    assert one["next_run"] == none["next_run"] == "2030-01-01T14:01:00.000Z"


def test_overlap_skip_waits_for_the_active_job_overlap_allow_does_not(store, db):
    add(store, "skip", overlap="skip")
    add(store, "allow", overlap="allow")
    scheduler = Scheduler(store)
    tick = utc(2030, 1, 1, 12, 1, 1)
    assert len(scheduler.run_once(now=tick)) == 2
    (skip_job,) = jobs_of(store, "skip")
    take(db, skip_job["id"], now=tick)  # running
    tick += timedelta(minutes=1)
    outcomes = {name: (what, job) for name, what, job in scheduler.run_once(now=tick)}
    assert outcomes["skip"] == ("skipped", skip_job["id"])
    assert outcomes["allow"][0] == "fired"
    shown = store.schedule("skip")
    assert shown["skipped"] == 1 and shown["last_skipped"] == "2030-01-01T12:02:01.000Z"
    finish(db, skip_job["id"], now=tick)
    tick += timedelta(minutes=1)
    outcomes = {name: what for name, what, _ in scheduler.run_once(now=tick)}
    assert outcomes == {"skip": "fired", "allow": "fired"}
    assert len(jobs_of(store, "skip")) == 2 and len(jobs_of(store, "allow")) == 3


def test_pause_resume_run_now_replace_and_remove(store):
    add(store)
    assert store.pause_schedule("s") and not store.pause_schedule("s")
    assert Scheduler(store).run_once(now=T0 + timedelta(hours=1)) == []  # paused: not due
    assert store.schedule("s")["paused"] and store.schedule("s")["next_run"] is None
    job_id = store.run_schedule("s", now=T0)  # run now works while paused
    assert [j["id"] for j in jobs_of(store)] == [job_id]
    resumed_at = T0 + timedelta(hours=1)
    assert store.resume_schedule("s", now=resumed_at) and not store.resume_schedule("s", now=resumed_at)
    # The ticks of the pause are not run: the next one is after the resume.
    assert store.schedule("s")["next_run"] == "2030-01-01T13:01:00.000Z"
    with pytest.raises(DuplicateSchedule):
        add(store)
    add_again = store.add_schedule("s", cron="@hourly", tz="UTC", catch_up="none", overlap="allow",
                                   spec=jobspec.build("echo new"), next_run=utc(2030, 1, 1, 13), replace=True)
    shown = store.schedule("s")
    assert add_again and (shown["cron"], shown["command"], shown["last_job"]) == ("@hourly", "echo new", job_id)
    store.remove_schedule("s")
    with pytest.raises(NotFound):
        store.schedule("s")
    # Its jobs stay, with its name.
    assert [(j["id"], j["schedule"]) for j in jobs_of(store)] == [(job_id, "s")]
    for action in (store.remove_schedule, store.pause_schedule, store.resume_schedule, store.run_schedule):
        with pytest.raises(NotFound):
            action("s")


def test_the_tick_reads_due_schedules_along_the_index_and_overlap_probes_its_own(store, db):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's")
    from queuectl.states import ACTIVE
    from queuectl.store import schedules
    from queuectl.store.models import JOBS
    from queuectl.store.transitions import state_in

    due = sa.select(SCHEDULES.c.name).where(SCHEDULES.c.paused_at.is_(None), SCHEDULES.c.next_run <= T0).order_by(SCHEDULES.c.next_run)
    overlap = sa.select(JOBS.c.id).where(JOBS.c.schedule == "s", state_in(*ACTIVE)).limit(1)
    with db.read() as conn:
        for query, index in ((due, "ix_schedules_due"), (overlap, "ix_jobs_schedule")):
            compiled = query.compile(db.engine, compile_kwargs={"literal_binds": True})
            plan_text = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
            assert index in plan_text, plan_text
        assert schedules.due(conn, T0, 10) == []


def test_1000_schedules_cost_the_tick_one_short_query(store, db):
    import time

    with db.begin() as conn:
        conn.execute(sa.insert(SCHEDULES), [
            dict(name=f"s{i}", cron="0 3 * * *", tz="UTC", catch_up="one", overlap="skip", spec='{"command": "true", "max_retries": null,'
                 ' "priority": 0, "timeout": null, "queue": "default", "cwd": "/"}', next_run=T0 + timedelta(hours=1 + i % 20),
                 skipped=0, missed=0, created_at=T0)
            for i in range(1000)
        ])
    scheduler = Scheduler(store)
    scheduler.run_once(now=T0)  # warm
    began = time.perf_counter()
    for _ in range(20):
        assert scheduler.run_once(now=T0) == []
    took = (time.perf_counter() - began) / 20
    print(f"tick with 1,000 schedules, none due: {took * 1000:.2f} ms")
    assert took < 0.05, took


# --- the CLI (real processes, both backends) -----------------------------------------


def test_schedule_commands(cli, tmp_path):
    added = cli.ok("schedule", "add", "nightly", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--queue", "q", "--", "echo", "hi there")
    assert added.stdout.startswith("added schedule nightly: 30 2 * * * (Europe/Berlin), next run ")
    # Options after NAME or before it; the command keeps its own options.
    cli.ok("schedule", "add", "--cron", "@hourly", "hourly", "--overlap", "allow", "ls", "-la")
    error_line(cli("schedule", "add", "hourly", "--cron", "@daily", "true"), 1, "already exists", "--replace")
    cli.ok("schedule", "add", "hourly", "--replace", "--cron", "@daily", "ls", "-la")
    listed = {s["name"]: s for s in cli.json("schedule", "list")}
    assert set(listed) == {"hourly", "nightly"}
    assert (listed["nightly"]["cron"], listed["nightly"]["tz"], listed["nightly"]["command"], listed["nightly"]["queue"]) == (
        "30 2 * * *", "Europe/Berlin", "echo 'hi there'", "q")
    assert (listed["hourly"]["cron"], listed["hourly"]["command"], listed["hourly"]["overlap"]) == ("@daily", "ls -la", "skip")
    table = cli.ok("schedule", "list").stdout
    assert table.splitlines()[0].split()[:4] == ["NAME", "CRON", "ZONE", "NEXT_RUN"]

    run = cli.json("schedule", "run", "nightly")
    assert (run["schedule"], run["command"], run["queue"], run["state"]) == ("nightly", "echo 'hi there'", "q", "pending")
    cli.ok("enqueue", "true")
    assert [j["id"] for j in cli.json("list", "--schedule", "nightly")] == [run["id"]]
    assert "SCHEDULE" in cli.ok("list").stdout
    assert cli.json("show", run["id"])["schedule"] == "nightly"
    shown = cli.json("schedule", "show", "nightly")
    assert (shown["last_job"], shown["last_job_state"], shown["skipped"], shown["missed"]) == (run["id"], "pending", 0, 0)
    assert [j["id"] for j in shown["jobs"]] == [run["id"]]
    text = cli.ok("schedule", "show", "nightly").stdout
    assert "skipped:" in text and "missed:" in text and run["id"] in text

    assert cli.ok("schedule", "pause", "nightly").stdout == "paused schedule nightly\n"
    assert cli.json("schedule", "show", "nightly")["paused"] is True
    assert cli.ok("schedule", "resume", "nightly").stdout.startswith("resumed schedule nightly, next run ")
    assert cli.ok("schedule", "remove", "nightly").stdout == "removed schedule nightly (its jobs stay)\n"
    assert cli.json("show", run["id"])["schedule"] == "nightly"
    for action in ("show", "remove", "pause", "resume", "run"):
        error_line(cli("schedule", action, "nightly"), 1, "no schedule named 'nightly'")


@pytest.mark.parametrize("args, fragments", [
    (["--cron", "61 * * * *", "true"], ["invalid cron expression", "Bad minute"]),
    (["--cron", "* * *", "true"], ["5 fields"]),
    (["--cron", "@sometimes", "true"], ["unknown alias"]),
    (["--cron", "* * * * *", "--tz", "Mars/Olympus", "true"], ["unknown time zone 'Mars/Olympus'"]),
    (["true"], ["--cron"]),
    (["--cron", "* * * * *"], ["command is empty"]),
    (["--cron", "* * * * *", "--priority", "x", "true"], ["priority"]),
])
def test_bad_schedules_are_refused_with_one_line_and_nothing_written(scli, args, fragments):
    error_line(scli("schedule", "add", "s", *args), 2, *fragments)
    assert scli.json("schedule", "list") == []


def test_bad_schedule_names_are_refused(scli):
    error_line(scli("schedule", "add", "bad name!", "--cron", "* * * * *", "true"), 2, "invalid schedule name")
    error_line(scli("schedule", "show", "x" * 129), 2, "invalid schedule name")
    error_line(scli("list", "--schedule", "a/b"), 2, "invalid schedule name")


# --- supervisors firing ticks (real processes, both backends) ------------------------


def force_due(db, names: list[str], tick: datetime) -> None:
    """Make the schedules' next tick `tick` (in the past), all in one transaction."""
    with db.begin() as conn:
        conn.execute(sa.update(SCHEDULES).where(SCHEDULES.c.name.in_(names)).values(next_run=tick))


def next_runs(db, names: list[str]) -> dict:
    with db.read() as conn:
        return dict(conn.execute(sa.select(SCHEDULES.c.name, SCHEDULES.c.next_run).where(SCHEDULES.c.name.in_(names))).all())


def test_three_supervisors_on_three_hosts_fire_each_tick_exactly_once(cli, db, supervisors):
    configure(db, **FAST)
    store = Store(db)
    names = [f"yearly-{i}" for i in range(5)]
    for name in names:
        # Never due by itself during the test: only the ticks forced below fire.
        add(store, name, "0 0 1 1 *", now=datetime.now(UTC), overlap="allow", command="true")
    sups = [supervisors.start("--concurrency", "1", hostname=host) for host in HOSTS]
    rounds = 8
    for round_ in range(rounds):
        tick = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=round_ + 1)
        force_due(db, names, tick)
        wait_until(lambda: all(run > datetime.now(UTC) for run in next_runs(db, names).values()), timeout=60,
                   message=f"round {round_}: every forced tick fired")
    per_schedule = collections.Counter(job["schedule"] for job in store.list_jobs())
    assert per_schedule == {name: rounds for name in names}, per_schedule
    logs = "".join(sup.log() for sup in sups)
    assert logs.count("enqueued job") == rounds * len(names), logs
    for sup in sups:
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0, sup.log()


def test_supervisors_sigkilled_while_firing_lose_no_tick_and_fire_none_twice(cli, db, supervisors):
    import random

    from worker_support import kill_all, tree

    configure(db, **FAST)
    store = Store(db)
    names = [f"yearly-{i}" for i in range(10)]
    for name in names:
        add(store, name, "0 0 1 1 *", now=datetime.now(UTC), overlap="allow", command="true")
    sups = {host: supervisors.start("--concurrency", "1", hostname=host) for host in HOSTS}
    rng = random.Random(13)
    rounds = 6
    for round_ in range(rounds):
        tick = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=round_ + 1)
        force_due(db, names, tick)
        # Kill a host's supervisor and worker as the ticks fall due: a tick it was
        # firing is rolled back with it, and another supervisor fires it.
        host = rng.choice(HOSTS)
        victims = tree(sups[host].pid)
        kill_all(victims)
        sups[host].wait()
        wait_until(lambda: all(run > datetime.now(UTC) for run in next_runs(db, names).values()), timeout=60,
                   message=f"round {round_}: every forced tick fired")
        sups[host] = supervisors.start("--concurrency", "1", hostname=host)
    per_schedule = collections.Counter(job["schedule"] for job in store.list_jobs())
    assert per_schedule == {name: rounds for name in names}, per_schedule


def test_a_supervisor_fires_catch_up_and_skips_overlapping_ticks(cli, db, supervisors, tmp_path):
    configure(db, **FAST)
    store = Store(db)
    now = datetime.now(UTC)
    flag = tmp_path / "release"
    add(store, "one", "0 0 1 1 *", now=now, catch_up="one", overlap="allow", command="true")
    add(store, "none", "0 0 1 1 *", now=now, catch_up="none", overlap="allow", command="true")
    add(store, "slow", "0 0 1 1 *", now=now, overlap="skip", command=f"while [ ! -e {flag} ]; do sleep 0.05; done")
    store.pause_schedule("slow")
    outage = now - timedelta(days=3)
    force_due(db, ["one", "none"], outage)
    sup = supervisors.start("--concurrency", "2", hostname="host-a")
    wait_until(lambda: store.schedule("none")["missed"] == 1 and store.schedule("one")["last_job"], timeout=60, message="catch-up")
    assert len(jobs_of(store, "one")) == 1 and jobs_of(store, "none") == []

    # A slow job running: its schedule's next tick is skipped, counted in `schedule show`.
    store.resume_schedule("slow")
    slow_id = store.run_schedule("slow")
    wait_until(lambda: store.job(slow_id)["state"] == "running", timeout=60, message="the slow job running")
    force_due(db, ["slow"], datetime.now(UTC) - timedelta(seconds=1))
    wait_until(lambda: store.schedule("slow")["skipped"] == 1, timeout=60, message="the tick skipped")
    assert [j["id"] for j in jobs_of(store, "slow")] == [slow_id]
    shown = json.loads(cli.ok("schedule", "show", "slow", "--json").stdout)
    assert shown["skipped"] == 1 and shown["last_skipped"] and shown["last_job_state"] == "running"
    flag.touch()
    wait_until(lambda: store.job(slow_id)["state"] == "completed", timeout=60, message="the slow job done")
    force_due(db, ["slow"], datetime.now(UTC) - timedelta(seconds=1))
    wait_until(lambda: len(jobs_of(store, "slow")) == 2, timeout=60, message="the next tick fired")
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0, sup.log()


# --- the migration ---------------------------------------------------------------------


def test_the_0008_migration_from_0007_with_data_both_ways(db):
    from test_migrations import test_migrations_build_exactly_the_models_schema

    from support import enqueue

    enqueue(db, "true", id="kept")
    with db.engine.connect() as conn:
        cfg = schema.alembic_config(conn)
        alembic_command.downgrade(cfg, "0007")
        conn.commit()
        assert "schedules" not in sa.inspect(conn).get_table_names()
        assert "schedule" not in {c["name"] for c in sa.inspect(conn).get_columns("jobs")}
        alembic_command.upgrade(cfg, "head")
        conn.commit()
        assert conn.exec_driver_sql("SELECT id, schedule FROM jobs").all() == [("kept", None)]
    store = Store(db)
    add(store, "s", now=T0)
    scheduled = store.run_schedule("s", now=T0)
    with db.engine.connect() as conn:
        cfg = schema.alembic_config(conn)
        alembic_command.downgrade(cfg, "0007")
        conn.commit()
        assert conn.exec_driver_sql("SELECT id FROM jobs ORDER BY seq").all() == [("kept",), (scheduled,)]
        alembic_command.upgrade(cfg, "head")
        conn.commit()
    # Every index as the models declare it, partial predicates included, after both ways.
    test_migrations_build_exactly_the_models_schema(db)
