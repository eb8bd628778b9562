"""DLQ moves under concurrency: every dead job is moved (or purged) exactly once.

Two kinds of test. Real processes: two `queuectl dlq ...` commands started at the
same instant, many rounds, on both backends. And, on PostgreSQL (where two write
transactions can interleave; SQLite's BEGIN IMMEDIATE runs them one after the
other), the library API with two connections whose transactions are driven in a
chosen order: one is stopped right after a chosen statement until the test lets it
go on, and the test waits for what it needs (a lock wait, a finished call), never
for a length of time.
"""

import subprocess
import sys
import threading

import pytest
from sqlalchemy import event, func, select, text

from conftest import env_for, wait_until
from queuectl.cli.main import main
from queuectl.errors import NotFound
from queuectl.store import counts, dlq, open_database, transitions
from queuectl.store.models import DEAD_JOBS
from queuectl.timeutil import utcnow
from support import CFG, T0, config_value, dead_row, enqueue, error_line, finish, job_row, kill, real_counts, take

ROUNDS = 8
DEAD_PER_ROUND = 6
WAIT = 60  # seconds: a bound on every wait below, never a delay that is hoped for


# --- real processes -----------------------------------------------------------------------

# Runs the real command-line entry point once, after loading its code and waiting for
# a common start signal, so that the two commands race on the database itself.
DRIVER = r"""
import os, sys, time
import queuectl.cli.commands, queuectl.store.database, queuectl.store.dlq  # load the code before the race
from queuectl.cli.main import main

ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("never got the start signal")
    time.sleep(0.001)
sys.exit(main(sys.argv[3:]))
"""


def race(db_url, tmp_path, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Run each command in its own process, all started at the same moment."""
    go = tmp_path / "go"
    go.unlink(missing_ok=True)
    readies = [tmp_path / f"ready.{i}" for i in range(len(commands))]
    for ready in readies:
        ready.unlink(missing_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(ready), str(go), *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(db_url), cwd=tmp_path,
        )
        for ready, argv in zip(readies, commands)
    ]
    wait_until(lambda: all(r.exists() for r in readies) or any(p.poll() is not None for p in procs),
               timeout=WAIT, message="the processes to load their code")
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=WAIT * 2)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def make_dead(db, count: int) -> list[str]:
    ids = [enqueue(db, "exit 3", now=utcnow(), max_retries=0) for _ in range(count)]
    for job_id in ids:
        kill(db, job_id, now=utcnow())
    return ids


def reported(result: subprocess.CompletedProcess, verb: str) -> list[str]:
    """The ids a successful `dlq retry/purge` printed (it prints them up to 20)."""
    assert result.returncode == 0 and result.stderr == "", result
    head, _, ids = result.stdout.strip().partition(": ")
    count = int(head.split()[1])
    assert head == f"{verb} {count} job(s)", result.stdout
    listed = ids.split() if ids else []
    assert len(listed) == count, result.stdout
    return listed


def dead_count(db) -> int:
    with db.read() as conn:
        return conn.execute(select(func.count()).select_from(DEAD_JOBS)).scalar_one()


def test_two_retry_all_at_once_move_every_dead_job_exactly_once(db, db_url, tmp_path):
    for round_ in range(ROUNDS):
        ids = make_dead(db, DEAD_PER_ROUND)
        a, b = race(db_url, tmp_path, ["dlq", "retry", "--all"], ["dlq", "retry", "--all"])
        moved = reported(a, "retried") + reported(b, "retried")
        assert sorted(moved, key=int) == ids, f"round {round_}: {a.stdout!r} {b.stdout!r}"
        assert dead_count(db) == 0
        for job_id in ids:
            job = job_row(db, job_id)
            assert (job.state, job.attempts, job.worker_id) == ("pending", 0, None), job


def test_two_retry_of_the_same_id_at_once_one_wins_the_other_says_so(db, db_url, tmp_path):
    for round_ in range(ROUNDS):
        (job_id,) = make_dead(db, 1)
        results = race(db_url, tmp_path, ["dlq", "retry", job_id], ["dlq", "retry", job_id])
        won = [r for r in results if r.returncode == 0]
        lost = [r for r in results if r.returncode != 0]
        assert len(won) == 1 and len(lost) == 1, f"round {round_}: {results}"
        assert reported(won[0], "retried") == [job_id]
        error_line(lost[0], 1, f"no dead job with id {job_id!r}", "pending")
        assert dead_row(db, job_id) is None
        assert (job_row(db, job_id).state, job_row(db, job_id).attempts) == ("pending", 0)


def test_two_purge_all_at_once_count_each_purged_job_once(db, db_url, tmp_path, cli):
    for round_ in range(ROUNDS):
        done = enqueue(db, "true", now=utcnow())
        finish(db, done, now=utcnow())
        ids = make_dead(db, DEAD_PER_ROUND)
        a, b = race(db_url, tmp_path, ["dlq", "purge", "--all"], ["dlq", "purge", "--all"])
        purged = reported(a, "purged") + reported(b, "purged")
        assert sorted(purged, key=int) == ids, f"round {round_}: {a.stdout!r} {b.stdout!r}"
        assert cli.json("status")["jobs"] == real_counts(db), f"round {round_}"
    assert int(config_value(db, "_purged")) == ROUNDS * DEAD_PER_ROUND


def test_an_unexpected_database_error_is_one_line_without_its_sql(sqlite_url, monkeypatch, capsys):
    """Whatever a database raises that no one foresaw: its driver's first line, never the statement."""
    from sqlalchemy import exc

    def broken(db, ids, now=None, with_dependents=False):
        cause = Exception('duplicate key value violates unique constraint "pk_jobs"\nDETAIL:  Key (id)=(7) already exists.')
        raise exc.IntegrityError("INSERT INTO jobs (id, seq, command) SELECT dead_jobs.id FROM dead_jobs", {"id_1": "7"}, cause)

    monkeypatch.setattr(dlq, "retry", broken)
    assert main(["--db", sqlite_url, "dlq", "retry", "--all"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("queuectl: error: ") and "pk_jobs" in err, err
    for leak in ("INSERT", "SELECT", "[SQL", "DETAIL", "id_1", "sqlalche.me"):
        assert leak not in err, err


# --- two transactions in a chosen order (PostgreSQL) ----------------------------------------


@pytest.fixture
def pg(pg_databases):
    """Three handles on one fresh PostgreSQL database: the test's own, and one per contender."""
    url = pg_databases.new()
    handles = [open_database(url) for _ in range(3)]
    yield handles
    for handle in handles:
        handle.dispose()


class Call(threading.Thread):
    """A library call in its own thread; its result or its exception."""

    def __init__(self, fn, *args, **kw):
        super().__init__(daemon=True)
        self.fn, self.args, self.kw = fn, args, kw
        self.result = self.error = None

    def run(self):
        try:
            self.result = self.fn(*self.args, **self.kw)
        except BaseException as err:  # reported by outcome()
            self.error = err

    def outcome(self):
        self.join(WAIT)
        assert not self.is_alive(), f"{self.fn.__name__} did not finish"
        if self.error is not None:
            raise self.error
        return self.result


class Pause:
    """Holds a Database's transaction right after its first statement that `matches`
    (still open, its locks held) until release()."""

    def __init__(self, db, matches):
        self.matches = matches
        self.fired = False
        self.reached = threading.Event()
        self.go = threading.Event()
        event.listen(db.engine, "after_cursor_execute", self._after)

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        if not self.fired and self.matches(" ".join(statement.split())):
            self.fired = True
            self.reached.set()
            if not self.go.wait(WAIT):
                raise AssertionError("the paused transaction was never released")

    def release(self):
        self.go.set()


def reads_dlq(sql: str) -> bool:
    return sql.startswith("SELECT") and " FROM dead_jobs" in sql


def inserts_job(sql: str) -> bool:
    return sql.startswith("INSERT INTO jobs")


def lock_waiters(db) -> int:
    """Sessions of this database waiting for a lock another transaction holds."""
    with db.read() as conn:
        return conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
        ).scalar_one()


def blocked_or_done(db, call: Call, pause: Pause | None = None):
    """Wait until `call` is waiting for a lock, has stopped at its pause, or is over."""
    wait_until(
        lambda: not call.is_alive() or lock_waiters(db) > 0 or (pause is not None and pause.reached.is_set()),
        timeout=WAIT, message=f"{call.fn.__name__} to block or finish",
    )


ACTIONS = {"retry": dlq.retry, "purge": dlq.purge}


@pytest.mark.parametrize("first, second", [("retry", "retry"), ("purge", "purge"), ("retry", "purge"), ("purge", "retry")])
def test_a_move_stalled_after_its_read_never_touches_what_another_moved(pg, first, second):
    """The loser of the race finds the job gone and does nothing to it: in particular it
    does not reset a job that the winner retried and a worker has since claimed."""
    db, one, two = pg
    job_id = enqueue(db, "exit 3", max_retries=0)
    kill(db, job_id)

    pause_one, pause_two = Pause(one, reads_dlq), Pause(two, reads_dlq)
    a = Call(ACTIONS[first], one, None)
    a.start()
    assert pause_one.reached.wait(WAIT), "the first call never read the DLQ"
    b = Call(ACTIONS[second], two, None)
    b.start()
    blocked_or_done(db, b, pause_two)

    pause_one.release()
    first_moved = a.outcome()
    # The second call reads the DLQ once the first has committed (if it was waiting for
    # its locks) or has read it already; either way it is stopped before its writes now.
    wait_until(lambda: pause_two.reached.is_set() or not b.is_alive(), timeout=WAIT, message="the second call's read")
    claimed = None
    if job_row(db, job_id) is not None:  # retried: a worker takes it meanwhile
        with db.begin() as conn:
            claimed = transitions.claim(conn, "w-runs-it", None, T0)
        assert claimed is not None and claimed.id == job_id
    pause_two.release()
    second_moved = b.outcome()

    assert sorted(first_moved + second_moved) == [job_id], (first_moved, second_moved)
    assert dead_row(db, job_id) is None
    if claimed is not None:
        job = job_row(db, job_id)
        assert (job.state, job.worker_id, job.attempts) == ("running", "w-runs-it", 0), job
    purged = (len(first_moved) if first == "purge" else 0) + (len(second_moved) if second == "purge" else 0)
    assert int(config_value(db, "_purged")) == purged
    with db.read() as conn:
        assert counts.job_counts(conn) == real_counts(db)


def test_a_retry_stalled_after_its_insert_makes_the_other_retry_nothing_not_fail(pg):
    db, one, two = pg
    ids = [enqueue(db, "exit 3", max_retries=0) for _ in range(3)]
    for job_id in ids:
        kill(db, job_id)

    pause = Pause(one, inserts_job)
    a = Call(dlq.retry, one, None)
    a.start()
    assert pause.reached.wait(WAIT), "the first retry never inserted"
    b = Call(dlq.retry, two, None)
    b.start()
    blocked_or_done(db, b)
    pause.release()
    moved = a.outcome() + b.outcome()
    assert sorted(moved, key=int) == ids
    assert dead_count(db) == 0
    assert [job_row(db, i).state for i in ids] == ["pending"] * 3


def test_a_retry_of_named_ids_some_taken_by_another_moves_nothing_and_names_one(pg):
    """All or nothing: `dlq retry 1 2` that finds 2 retried by someone else moves neither."""
    db, one, two = pg
    x, y = (enqueue(db, "exit 3", max_retries=0) for _ in range(2))
    kill(db, x)
    kill(db, y)

    pause = Pause(one, reads_dlq)
    a = Call(dlq.retry, one, [y])
    a.start()
    assert pause.reached.wait(WAIT)
    b = Call(dlq.retry, two, [x, y])
    b.start()
    blocked_or_done(db, b)
    pause.release()
    assert a.outcome() == [y]
    with pytest.raises(NotFound, match=f"no dead job with id '{y}'"):
        b.outcome()
    assert dead_row(db, x) is not None and job_row(db, x) is None
    assert job_row(db, y).state == "pending"


def test_a_job_goes_into_the_dlq_once_when_its_worker_and_a_reaper_both_fail_it(pg):
    """The other direction: transitions.fail moves a job into the DLQ only while its
    owner holds it; the second of two racing failures finds nothing to move."""
    db, one, two = pg
    job_id = enqueue(db, "exit 3", max_retries=0)
    take(db, job_id, worker_id="w1")

    def fail(handle):
        with handle.begin() as conn:
            return transitions.fail(conn, job_id, "w1", error="exit code 3", exit_code=3, output="x", now=T0, cfg=CFG)

    pause = Pause(one, lambda sql: sql.startswith("SELECT") and " FROM jobs" in sql)
    a = Call(fail, one)
    a.start()
    assert pause.reached.wait(WAIT)
    b = Call(fail, two)
    b.start()
    blocked_or_done(db, b)
    pause.release()
    assert sorted([str(a.outcome()), str(b.outcome())]) == ["None", "dead"]
    assert job_row(db, job_id) is None
    assert dead_row(db, job_id).attempts == 1
    assert dead_count(db) == 1
