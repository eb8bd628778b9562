"""Views that scale and say what they mean (#12): status split into ready and
scheduled, figures per queue, `queue list`, list's --last/--since/--state a,b, the
terminal's width and page, control characters escaped, colour for job states."""

import fcntl
import json
import os
import random
import struct
import subprocess
import sys
import termios
from datetime import timedelta

from sqlalchemy import event, func, select

from conftest import env_for
from queuectl.cli import render
from queuectl.store import Store, counts, transitions
from queuectl.store.models import DEAD_JOBS, JOBS, WORKERS
from queuectl.timeutil import utcnow
from support import CFG, T0, enqueue, fail_once, finish, kill, seconds, take

ESC_COMMAND = "echo \x1b[2J\x1b]0;owned\x07\rhidden \x9b31m"
ESCAPED = "echo \\x1b[2J\\x1b]0;owned\\x07\\rhidden \\x9b31m"


def on_terminal(cli, *args, columns=100, env=None):
    """Run the CLI with stdout on a pseudo-terminal of `columns` columns: (stdout, stderr, code)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    if env is None:
        env = env_for(cli.db_url)
        env.pop("NO_COLOR", None)
    env = dict(env)
    env.pop("COLUMNS", None)  # the terminal's own size, as set above
    proc = subprocess.Popen([sys.executable, "-m", "queuectl", *args], stdout=slave, stderr=subprocess.PIPE, env=env, cwd=cli.cwd)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    _, err = proc.communicate(timeout=60)
    # A terminal's line discipline turns \n into \r\n.
    return b"".join(chunks).decode().replace("\r\n", "\n"), err.decode(), proc.returncode


def add_worker(db, worker_id: str, queues: str | None, state: str = "idle") -> None:
    now = utcnow()
    with db.begin() as conn:
        conn.execute(WORKERS.insert(), [dict(
            id=worker_id, role="worker", host="elsewhere.example", pid=4242, pid_started=0.0, supervisor_id="sup", supervisor_pid=1,
            job_pgid=None, processed=0, failed=0, stop_request=None, started_at=now, last_heartbeat=now, stopped_at=None,
            state=state, job_id=None, queues=queues,
        )])


# --- 1. status: ready and scheduled, per queue, unserved queues -------------------------


def test_status_flags_queues_with_ready_jobs_no_live_worker_takes(cli, db):
    for _ in range(3):
        enqueue(db, "true", now=utcnow(), queue="x")
    enqueue(db, "true", now=utcnow(), queue="y")
    enqueue(db, "true", now=utcnow() + timedelta(hours=1), queue="z")  # scheduled, not ready
    add_worker(db, "w-y", "y")
    add_worker(db, "w-gone", None, state="stopped")  # a stopped worker takes nothing
    report = cli.json("status")
    assert report["pending"] == {"ready": 4, "scheduled": 1}
    assert report["unserved"] == [{"queue": "x", "ready": 3}]
    text = cli.ok("status").stdout
    assert "queue 'x': 3 ready jobs and no live worker takes it\n" in text
    assert "queue 'y'" not in text and "queue 'z'" not in text
    add_worker(db, "w-all", None)  # no --queue: takes every queue
    assert cli.json("status")["unserved"] == []
    assert "no live worker" not in cli.ok("status").stdout


EMPTY_FIGURES = {"ready": 0, "scheduled": 0, "running": 0, "failed": 0, "dead": 0, "cancelled": 0, "oldest_ready": None,
                 "paused": False, "max_running": None}


def brute_force_per_queue(db, now):
    with db.read() as conn:
        figures = {}
        for row in conn.execute(select(JOBS.c.queue, JOBS.c.state, JOBS.c.run_at)):
            if row.state == "completed":
                continue
            entry = figures.setdefault(row.queue, dict(EMPTY_FIGURES))
            if row.state == "pending" and row.run_at <= now:
                entry["ready"] += 1
                entry["oldest_ready"] = min(filter(None, [entry["oldest_ready"], row.run_at]))
            elif row.state == "pending":
                entry["scheduled"] += 1
            elif row.state in ("running", "failed", "cancelled"):
                entry[row.state] += 1
        for queue, count in conn.execute(select(DEAD_JOBS.c.queue, func.count()).group_by(DEAD_JOBS.c.queue)):
            figures.setdefault(queue, dict(EMPTY_FIGURES))["dead"] = count
    return dict(sorted(figures.items()))


def test_per_queue_figures_match_a_brute_force_count(db):
    rng = random.Random(12)
    now = T0
    for step in range(40):
        now += seconds(10)
        action = rng.choice(["enqueue", "enqueue", "run", "run"])
        if action == "enqueue":
            enqueue(db, now=now, queue=rng.choice(["a", "b", "c"]), delay=rng.choice([0, 0, 30, 3600]), max_retries=rng.choice([0, 1]))
        else:
            with db.begin() as conn:
                job = transitions.claim(conn, "w1", None, now)
                if job is not None and rng.random() < 0.4:
                    transitions.complete(conn, job.id, "w1", exit_code=0, output="", now=now)
                elif job is not None and rng.random() < 0.7:
                    transitions.fail(conn, job.id, "w1", error="exit code 1", exit_code=1, output="", now=now, cfg=CFG)
        with db.read() as conn:
            assert counts.per_queue(conn, now) == brute_force_per_queue(db, now), f"after step {step}"
            ready = counts.job_counts(conn, now)["ready"]
        assert ready == sum(q["ready"] for q in brute_force_per_queue(db, now).values())


def test_per_queue_figures_read_only_the_live_indexes_and_the_dlq(sqlite_db):
    """Completed jobs are never read: every jobs scan goes through a partial index."""
    for n in range(5):
        finish(sqlite_db, enqueue(sqlite_db, f"echo {n}"))
    enqueue(sqlite_db, "true")
    statements = []

    def capture(conn, cursor, sql, params, *_):
        statements.append((sql, params))

    event.listen(sqlite_db.engine, "before_cursor_execute", capture)
    store = Store(sqlite_db)
    store.status(utcnow())
    store.queues(utcnow())
    event.remove(sqlite_db.engine, "before_cursor_execute", capture)
    plans = []
    with sqlite_db.engine.connect() as conn:
        for sql, params in statements:
            if "FROM jobs" in sql:
                plans.append(" / ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)))
    assert plans
    for plan in plans:
        for step in plan.split(" / "):
            if step.startswith("SCAN jobs") or step.startswith("SEARCH jobs"):
                assert any(index in step for index in ("ix_jobs_claim", "ix_jobs_running", "ix_jobs_cancelled", "ix_jobs_blocked")), plan


# --- 2. queue list ------------------------------------------------------------------------


def test_queue_list_text_and_json(cli, db):
    now = utcnow()
    enqueue(db, "true", now=now - timedelta(minutes=5))
    take(db, enqueue(db, "sleep 9", now=now))
    kill(db, enqueue(db, "exit 3", now=now, queue="batch", max_retries=0))
    fail_once(db, enqueue(db, "exit 4", now=now, queue="batch", max_retries=3), now=now)
    enqueue(db, "true", now=now, queue="batch", delay="1h")
    finish(db, enqueue(db, "true", now=now, queue="done-only"))  # only history: not listed
    cli.ok("cancel", enqueue(db, "true", now=now, queue="batch"))
    entries = cli.json("queue", "list")
    assert [dict(e, oldest_ready_age=None) for e in cli.json("queue")] == [dict(e, oldest_ready_age=None) for e in entries]
    figures = [{k: v for k, v in e.items() if not k.startswith("oldest")} for e in entries]
    assert figures == [
        {"queue": "batch", "ready": 0, "scheduled": 1, "running": 0, "failed": 1, "dead": 1, "cancelled": 1, "paused": False, "max_running": None},
        {"queue": "default", "ready": 1, "scheduled": 0, "running": 1, "failed": 0, "dead": 0, "cancelled": 0, "paused": False, "max_running": None},
    ]
    assert entries[0]["oldest_ready_age"] is None and 300 <= entries[1]["oldest_ready_age"] < 400
    lines = cli.ok("queue", "list").stdout.splitlines()
    assert lines[0].split() == ["QUEUE", "READY", "SCHEDULED", "RUNNING", "FAILED", "DEAD", "CANCELLED", "OLDEST_READY", "CONTROLS"]
    assert lines[1].split() == ["batch", "0", "1", "0", "1", "1", "1", "-", "-"]
    assert lines[2].split() == ["default", "1", "0", "1", "0", "0", "0", "5m", "-"]
    assert len(lines) == 3


def test_queue_list_of_an_empty_database(cli):
    assert cli.json("queue", "list") == []
    assert cli.ok("queue", "list").stdout == "no pending, running, failed, dead or cancelled jobs\n"


# --- 3. list: --last, --since, several states, the terminal --------------------------------


def ids(rows):
    return [row["id"] for row in rows]


def test_list_last_since_and_several_states(cli, db):
    now = utcnow()
    for n in range(1, 7):
        enqueue(db, f"echo {n}", now=now - timedelta(hours=7 - n))  # job n created (7-n) hours ago
    finish(db, "2")
    kill(db, "3")
    take(db, "4")
    assert ids(cli.json("list", "--last", "2")) == ["5", "6"]  # the newest, oldest first
    assert ids(cli.json("list", "--last", "100")) == ["1", "2", "3", "4", "5", "6"]
    lines = cli.ok("list", "--last", "3").stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["4", "5", "6"]
    assert ids(cli.json("list", "--since", "150m")) == ["5", "6"]
    since = (now - timedelta(hours=4, minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids(cli.json("list", "--since", since)) == ["3", "4", "5", "6"]
    assert ids(cli.json("list", "--state", "completed,dead")) == ["2", "3"]
    assert ids(cli.json("list", "--state", "processing,pending")) == ["1", "4", "5", "6"]
    assert ids(cli.json("list", "--state", "pending,dead", "--last", "2")) == ["5", "6"]
    assert ids(cli.json("list", "--state", "dead,pending", "--since", "5h")) == ["3", "5", "6"]
    assert ids(cli.json("list", "--state", "dead")) == ["3"]
    result = cli("list", "--since", "yesterday")
    assert result.returncode == 2 and "invalid --since 'yesterday'" in result.stderr
    result = cli("list", "--state", "pending,sleeping")
    assert result.returncode == 2 and "unknown state 'sleeping'" in result.stderr
    result = cli("list", "--last", "0")
    assert result.returncode == 2 and "--last" in result.stderr


def test_list_on_a_terminal_shows_the_newest_page_and_says_so(cli, db):
    from queuectl.jobspec import build

    Store(db).enqueue([build(f"echo {n}") for n in range(60)])
    out, err, code = on_terminal(cli, "list")
    assert code == 0
    rows = out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == [str(n) for n in range(11, 61)]
    assert err == "showing the newest 50 of 60 jobs; use --last N, a filter, or --json for more\n"
    # Piped, or with a filter or --json: everything, as before.
    assert len(cli.ok("list").stdout.splitlines()) == 61
    assert cli.ok("list").stderr == ""
    out, err, _ = on_terminal(cli, "list", "--state", "pending")
    assert len(out.splitlines()) == 61 and err == ""


def test_the_command_column_fits_the_terminal_and_is_whole_when_piped(cli, db):
    command = "echo " + "x" * 300
    enqueue(db, command)
    out, _, _ = on_terminal(cli, "list", columns=100)
    [header, row] = out.splitlines()
    assert len(row) == 100 and row.endswith("...")
    assert row.startswith("1 ")
    out, _, _ = on_terminal(cli, "list", columns=200)
    assert len(out.splitlines()[1]) == 200
    assert cli.ok("list").stdout.splitlines()[1].endswith(command)  # piped: the whole command
    assert cli.json("list")[0]["command"] == command


# --- 4. control characters ---------------------------------------------------------------


def test_render_escape():
    assert render.escape("plain text é ✓") == "plain text é ✓"
    assert render.escape("a\x1b[31mb\x07c\rd\x9be\x00") == "a\\x1b[31mb\\x07c\\rd\\x9be\\x00"
    assert render.escape("one\ntwo\tthree\x1b", keep="\n\t") == "one\ntwo\tthree\\x1b"
    assert render.escape("\u202e") == "\\u202e"  # a bidi override is not printable either


def test_control_characters_are_escaped_in_tables_and_show_but_not_in_logs_or_json(cli, db):
    job = enqueue(db, ESC_COMMAND, max_retries=0)
    kill_output = "line one\n\x1b[2Jcleared\rover\n"
    kill(db, job, error="exit code 1 \x1b]0;title\x07", output=kill_output)
    for args in (("list",), ("dlq", "list"), ("show", job)):
        out = cli.ok(*args).stdout
        assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\x9b" not in out, args
    assert ESCAPED in cli.ok("list").stdout
    show = cli.ok("show", job).stdout
    assert f"command:      {ESCAPED}\n" in show
    assert "last_error:   exit code 1 \\x1b]0;title\\x07\n" in show
    assert show.endswith("output:\nline one\n\\x1b[2Jcleared\\rover\n")
    assert "\\x1b]0;title" in cli.ok("dlq", "list").stdout
    raw = subprocess.run([sys.executable, "-m", "queuectl", "logs", job], capture_output=True, env=env_for(cli.db_url), check=True)
    assert raw.stdout == kill_output.encode()  # raw, for piping
    assert cli.json("show", job)["command"] == ESC_COMMAND
    assert json.loads(cli.ok("list", "--json").stdout)[0]["command"] == ESC_COMMAND
    enqueued = cli.ok("enqueue", "printf '\x1b[1m'").stdout
    assert enqueued == "enqueued id=2 cmd=printf '\\x1b[1m'\n"


# --- 5. colour -----------------------------------------------------------------------------


def test_render_colour_choice(monkeypatch):
    class Tty:
        def isatty(self):
            return True

    class Pipe:
        def isatty(self):
            return False

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert render.colour_wanted("auto", Tty()) and not render.colour_wanted("auto", Pipe())
    assert render.colour_wanted("always", Pipe()) and not render.colour_wanted("never", Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not render.colour_wanted("auto", Tty()) and render.colour_wanted("always", Tty())
    assert render.state_colour("dead", "dead ") == "\x1b[31mdead \x1b[0m"
    assert render.state_colour("pending", "pending") == "pending"


def test_job_states_are_coloured_on_a_terminal_only(cli, db):
    finish(db, enqueue(db, "true"))
    kill(db, enqueue(db, "exit 3", max_retries=0))
    enqueue(db, "true")
    out, _, _ = on_terminal(cli, "list")
    lines = out.splitlines()
    assert "\x1b[32mcompleted\x1b[0m" in lines[1]
    assert "\x1b[31mdead     \x1b[0m" in lines[2]  # padded inside the colour: columns stay aligned
    assert "\x1b[" not in lines[3] and "\x1b[" not in lines[0]
    assert lines[1].index(" default ") == lines[3].index(" default ") + len("\x1b[32m\x1b[0m")
    env = dict(env_for(cli.db_url), NO_COLOR="1")
    assert "\x1b[" not in on_terminal(cli, "list", env=env)[0]
    assert "\x1b[" in on_terminal(cli, "--color", "always", "list", env=env)[0]  # the flag wins
    assert "\x1b[" not in on_terminal(cli, "--color", "never", "list")[0]
    assert "\x1b[" not in on_terminal(cli, "list", "--json")[0]
    assert "\x1b[" not in cli.ok("list").stdout  # piped
    assert "\x1b[31mdead" in cli.ok("--color", "always", "list").stdout
    assert "\x1b[" not in cli.ok("--color", "always", "list", "--json").stdout
    result = cli("--color", "pink", "list")
    assert result.returncode == 2
