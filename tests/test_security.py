"""Keeping the queue private: file modes of the default database, PostgreSQL passwords
kept out of output, errors, logs and process titles, and no SQL built from user text."""

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from conftest import REPO, Cli, env_for, wait_until
from fault_support import run_many
from queuectl.store import jobs as jobs_api
from support import error_line
from worker_support import LONG, Supervisor, Supervisors, alive, job, live_workers, tree, wait_workers

# --- the default database location --------------------------------------------------------


def private_env(**extra) -> dict:
    """The environment of a user who never set QUEUECTL_DB."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **extra)
    for name in ("QUEUECTL_DB", "QUEUECTL_HOSTNAME"):
        env.pop(name, None)
    return env


def run_with_umask(args, env, cwd, umask=0) -> subprocess.CompletedProcess:
    """`queuectl ARGS` under the most permissive umask: modes must not depend on it."""
    return subprocess.run([sys.executable, "-m", "queuectl", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=LONG, preexec_fn=lambda: os.umask(umask))


@pytest.mark.parametrize("via", ["XDG_DATA_HOME", "HOME"])
def test_default_database_directory_and_files_are_private(tmp_path, via):
    if via == "XDG_DATA_HOME":
        env = private_env(XDG_DATA_HOME=str(tmp_path / "xdg"))
        folder = tmp_path / "xdg" / "queuectl"
    else:
        env = private_env(HOME=str(tmp_path / "home"))
        env.pop("XDG_DATA_HOME", None)
        folder = tmp_path / "home" / ".local" / "share" / "queuectl"
    # The job lists the modes of everything beside the database while a worker holds it
    # open, so the -wal and -shm files exist then.
    probe = f"stat -c '%a %n' {folder}/*"
    for args in (["enqueue", "--id", "modes", probe], ["worker", "start", "--burst"]):
        result = run_with_umask(args, env, tmp_path)
        assert result.returncode == 0, result.stderr
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)
    db_file = folder / "queue.db"
    assert oct(db_file.stat().st_mode & 0o777) == oct(0o600)

    out = run_with_umask(["show", "--json", "modes"], env, tmp_path)
    seen = dict(reversed(line.split(" ", 1)) for line in json.loads(out.stdout)["output"].splitlines())
    assert {Path(p).name for p in seen} >= {"queue.db", "queue.db-wal", "queue.db-shm", "queue.db.lock"}, seen
    assert all(mode == "600" for mode in seen.values()), seen
    for path in folder.iterdir():  # and what is left afterwards
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))


def test_detached_worker_log_is_private(tmp_path):
    env = private_env(XDG_DATA_HOME=str(tmp_path / "xdg"))
    assert run_with_umask(["enqueue", "true"], env, tmp_path).returncode == 0
    started = run_with_umask(["worker", "start", "--detach", "--burst"], env, tmp_path)
    assert started.returncode == 0, started.stderr
    pid = int(re.search(r"pid=(\d+)", started.stdout).group(1))
    log = Path(re.search(r"log=(\S+)", started.stdout).group(1))
    try:
        wait_until(lambda: not alive(pid), timeout=LONG, message="the detached burst supervisor to exit")
    finally:
        for proc in tree(pid):
            proc.kill()
    assert log.parent == tmp_path / "xdg" / "queuectl"
    assert oct(log.stat().st_mode & 0o777) == oct(0o600)


@pytest.mark.parametrize("planted", ["symlink", "another user's file"])
def test_the_detached_log_is_never_a_planted_file(tmp_path, planted):
    """In a shared directory another user can leave <db>.worker.log: a symlink to a
    file of the victim's, or a file of their own. Neither is written to."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    db = shared / "queue.db"
    env = private_env(XDG_DATA_HOME=str(tmp_path / "xdg"))
    victim = tmp_path / "precious"
    victim.write_text("precious\n")
    log = shared / "queue.db.worker.log"
    if planted == "symlink":
        log.symlink_to(victim)
    else:
        log.write_text("")
        os.chown(log, 65534, 65534)  # root plays the other user here
    result = run_with_umask(["--db", str(db), "worker", "start", "--detach", "--burst"], env, tmp_path)
    error_line(result, 1, "worker.log")
    assert victim.read_text() == "precious\n"
    assert log.is_symlink() or log.read_text() == ""


# --- passwords ------------------------------------------------------------------------------

PASSWORD = "s3cretpw" + secrets.token_hex(4)  # unique per run: a stray process of another run cannot confuse ps checks


@pytest.fixture(params=["password", "sslpassword"])
def secret_url(request, pg_databases):
    """A fresh PostgreSQL database, reached with a password (trust auth ignores it) in
    the URL's userinfo, or with a secret libpq takes as a query parameter (sslpassword
    decrypts a client key; without SSL it is unused)."""
    url = make_url(pg_databases.new())
    if request.param == "password":
        url = url.set(password=PASSWORD)
    else:
        url = url.update_query_dict({request.param: PASSWORD})
    return url.render_as_string(hide_password=False)


def masked(secret_url: str) -> str:
    """How the secret's place reads once masked."""
    url = make_url(secret_url)
    return f"{url.username}:***@" if url.password else f"?{next(iter(url.query))}=***"


def assert_hidden(*texts, where=""):
    for text in texts:
        assert PASSWORD not in text, f"the password leaks in {where}: {text[:2000]!r}"


def every_process_line() -> str:
    return subprocess.run(["ps", "-eo", "pid,args", "-ww"], capture_output=True, text=True).stdout


def test_password_is_not_in_output_or_errors(secret_url, tmp_path):
    assert PASSWORD in secret_url
    cli = Cli(secret_url, tmp_path)
    cli.ok("enqueue", "--id", "one", "echo hi")
    reads = [["status"], ["status", "--json"], ["list", "--json"], ["show", "one"], ["db", "current"]]
    wrong_port = make_url(secret_url).set(port=1).render_as_string(hide_password=False)
    failing = [["--db", wrong_port, "list"], ["--db", wrong_port, "enqueue", "true"], ["--db", wrong_port, "worker", "start", "--burst"],
               ["--debug", "--db", wrong_port, "list"], ["--debug", "--db", wrong_port, "worker", "start", "--burst"]]
    commands = reads + [["--db", secret_url, "status", "--json"]] + failing
    for args, result, _ in run_many(secret_url, tmp_path, commands):
        assert_hidden(result.stdout, result.stderr, where=" ".join(a.replace(PASSWORD, "PASSWORD") for a in args))
        if wrong_port in args:
            assert result.returncode == 1, result.stderr
            if "--debug" not in args:  # --debug adds the traceback
                error_line(result, 1, "@127.0.0.1:1/", masked(secret_url))
        else:
            assert result.returncode == 0, (args, result.stderr)


def test_password_is_not_in_debug_logs_or_process_titles(secret_url, tmp_path):
    cli = Cli(secret_url, tmp_path)
    sups = Supervisors(cli, secret_url, tmp_path)
    try:
        cli.ok("enqueue", "--id", "slow", "sleep 3")
        cli.ok("enqueue", "--id", "quick", "true")
        # The URL on the supervisor's own command line, the worst case: its title must replace it.
        log_path = tmp_path / "supervisor-debug.log"
        with open(log_path, "w") as log_file:
            popen = cli.spawn("--db", secret_url, "--debug", "worker", "start", "--burst", "--concurrency", "2",
                              stdout=log_file, stderr=subprocess.STDOUT)
        sup = Supervisor(popen, log_path)
        sups.started.append(sup)  # killed, with all it started, at cleanup
        from queuectl.store import open_database

        db = open_database(secret_url)
        try:
            wait_workers(db, sup, 2)
            wait_until(lambda: job(db, "slow")["state"] == "running", timeout=LONG, message="the slow job to start")
            running_worker = job(db, "slow")["worker_id"]
            procs = tree(sup.pid)
            assert len(procs) >= 3, procs  # supervisor, 2 workers (and the job)
            titles = {}
            for proc in procs:
                try:
                    titles[proc.pid] = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    pass
            assert "queuectl supervisor" in titles[sup.pid] and masked(secret_url) in titles[sup.pid], titles
            # The worker running the slow job is alive until it ends, so its title can be read
            # now. (Counting titles instead races process creation: a job's shell between
            # vfork and exec still shows its worker's title.)
            worker_pid = next(r.pid for r in live_workers(db, sup.pid) if r.id == running_worker)
            assert "queuectl worker" in titles[worker_pid], titles
            assert_hidden(*titles.values(), where="/proc/PID/cmdline")
            assert_hidden(every_process_line(), where="ps")
            assert sup.wait() == 0
            assert job(db, "slow")["state"] == "completed"
        finally:
            db.dispose()
        log = sup.log()
        assert "DEBUG" in log or "INFO" in log, log
        assert_hidden(log, where="the --debug log of worker start")
    finally:
        sups.cleanup()


def test_detached_worker_gets_the_url_from_the_environment_not_argv(secret_url, tmp_path):
    env = env_for(secret_url, XDG_DATA_HOME=str(tmp_path / "xdg"))
    env.pop("QUEUECTL_DB")
    cli = Cli(secret_url, tmp_path)
    cli.ok("enqueue", "--id", "slow", "sleep 2", env=env | {"QUEUECTL_DB": secret_url})
    started = cli.ok("--db", secret_url, "worker", "start", "--detach", "--burst", env=env)
    assert_hidden(started.stdout, started.stderr, where="the output of --detach")
    pid = int(re.search(r"pid=(\d+)", started.stdout).group(1))
    log = Path(re.search(r"log=(\S+)", started.stdout).group(1))
    try:
        seen = []
        while alive(pid):  # from its first moments (before it sets its title) to its exit
            for proc in tree(pid):
                try:
                    seen.append(" ".join(proc.cmdline()))
                except psutil.Error:
                    pass
            time.sleep(0.05)
        assert seen and any("worker start" in s or "queuectl supervisor" in s for s in seen), seen
        assert_hidden(*seen, where="the argv of the detached supervisor and its children")
    finally:
        for proc in tree(pid):
            proc.kill()
    assert_hidden(log.read_text(), where="the detached worker's log")
    from queuectl.store import open_database

    db = open_database(secret_url)
    try:
        assert job(db, "slow")["state"] == "completed"
    finally:
        db.dispose()


def test_password_in_the_query_string_is_masked(tmp_path):
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://postgres@127.0.0.1:1/none?password={PASSWORD}"
    result = Cli(url, tmp_path)("list")
    assert result.returncode == 1
    assert_hidden(result.stderr, where="the error for a ?password= URL")


def test_password_parsed_as_a_port_is_not_echoed(tmp_path):
    url = f"postgresql+psycopg://postgres:{PASSWORD}/queue"
    result = Cli(url, tmp_path)("list")
    assert "Traceback" not in result.stderr
    assert_hidden(result.stderr, where="the error for a malformed URL")


# Every connection parameter libpq holds secret: those it marks "*" (password-like) and
# the SCRAM keys, which authenticate as well as the password they are derived from.
SECRET_PARAMETERS = ["password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"]


def test_every_secret_query_parameter_is_masked_in_errors(tmp_path):
    """Through real commands that fail to connect (port 1), and URLs that do not parse:
    the error names the database with every secret masked, whatever the key's case or
    percent-encoding."""
    pytest.importorskip("psycopg")
    queries = [f"{key}={PASSWORD}" for key in SECRET_PARAMETERS]
    queries += [f"SSLPassword={PASSWORD}", f"ssl%70assword={PASSWORD}", f"sslmode=disable&sslpassword={PASSWORD}&sslpassword=x{PASSWORD}"]
    urls = [f"postgresql+psycopg://postgres@127.0.0.1:1/none?{query}" for query in queries]
    urls += [f"postgresql+psycopg://postgres@127.0.0.1:notaport/none?{query}" for query in queries]  # unparsable
    commands = [["--db", url, "list"] for url in urls] + [["--db", urls[1], "worker", "start", "--burst"]]
    for args, result, _ in run_many(urls[0], tmp_path, commands):
        url = args[1]
        assert_hidden(result.stdout, result.stderr, where=f"the error for {url.replace(PASSWORD, 'SECRET')}")
        assert result.returncode in (1, 2), result
        line = error_line(result, result.returncode, "127.0.0.1")
        assert "=***" in line and "unexpected error" not in line, line


def test_the_masked_parameters_cover_what_libpq_holds_secret():
    psycopg = pytest.importorskip("psycopg")
    from queuectl.store.database import safe_url

    secret = {opt.keyword.decode() for opt in psycopg.pq.Conninfo.get_defaults() if opt.dispchar == b"*"}
    assert "password" in secret and "sslpassword" in secret, secret
    for key in sorted(secret | set(SECRET_PARAMETERS)):
        shown = safe_url(f"postgresql+psycopg://u@h/db?sslmode=require&{key}={PASSWORD}&application_name=x")
        assert PASSWORD not in shown and f"{key}=***" in shown, (key, shown)
        assert "sslmode=require" in shown and "application_name=x" in shown, shown  # the rest is kept


# --- secrets a job needs ----------------------------------------------------------------

OTHER_UID = 65534  # "nobody"


def as_another_user(*argv) -> subprocess.CompletedProcess:
    """Run argv as another local user (as root: nobody; otherwise as this user, who sees
    at least as much)."""
    kw = {"user": OTHER_UID, "group": OTHER_UID} if os.getuid() == 0 else {}
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=LONG, **kw)


def test_a_command_is_public_in_ps_but_a_sourced_env_file_or_the_workers_environment_is_not(sqlite_url, tmp_path):
    """What README "Security" says: while a job runs, its command is visible to every
    local user through `ps`; a secret the command reads from a private environment file
    it sources, or from the worker's environment, is not (a process's environment is
    readable only by its user), and the job still gets it."""
    in_command, in_file, in_worker_env = (f"tok{n}-{secrets.token_hex(8)}" for n in range(3))
    env_file = tmp_path / "deploy.env"
    env_file.write_text(f"API_TOKEN={in_file}\n")
    env_file.chmod(0o600)

    def job_command(name: str, setup: str, variable: str) -> str:
        # printf is a shell builtin and sha256sum reads stdin: the value is in no argv.
        return (f"{setup}: > {name}.started; while [ ! -e {name}.go ]; do sleep 0.05; done; "
                f"printf '%s' \"${variable}\" | sha256sum")

    cli = Cli(sqlite_url, tmp_path)
    cli.ok("enqueue", "--id", "in-command", job_command("in-command", f"API_TOKEN={in_command}; ", "API_TOKEN"))
    cli.ok("enqueue", "--id", "sourced", job_command("sourced", f"set -a; . {env_file}; set +a; ", "API_TOKEN"))
    cli.ok("enqueue", "--id", "inherited", job_command("inherited", "", "WORKER_TOKEN"))
    sups = Supervisors(cli, sqlite_url, tmp_path)
    try:
        sup = sups.start("--burst", "--concurrency", "3", env=sups.env(WORKER_TOKEN=in_worker_env))
        names = ("in-command", "sourced", "inherited")
        wait_until(lambda: all((tmp_path / f"{n}.started").exists() for n in names), timeout=LONG, message="the three jobs to run")

        seen = as_another_user("ps", "-eo", "pid,args", "-ww").stdout
        assert in_command in seen, seen  # the hazard the README warns of
        assert in_file not in seen and in_worker_env not in seen, seen

        def holder():
            # The shell's own /proc environ is what it was started with: the exported
            # variable shows in its children, the short-lived `sleep`s of its loop.
            for proc in psutil.process_iter():
                try:
                    environ = proc.environ()
                except psutil.Error:
                    continue
                if environ.get("QUEUECTL_JOB_ID") == "sourced" and environ.get("API_TOKEN") == in_file:
                    return proc
            return None

        wait_until(holder, timeout=LONG, interval=0.01, message="a process of the sourced job holding API_TOKEN")
        if os.getuid() == 0:  # and another user cannot read a job's environment
            def environ(p):
                try:
                    return p.environ()
                except psutil.Error:  # a `sleep` of a job's loop, gone meanwhile
                    return {}

            # The inherited job's shell: it lives until the test lets it finish.
            shell = next(p for p in psutil.Process(sup.pid).children(recursive=True)
                         if environ(p).get("QUEUECTL_JOB_ID") == "inherited" and environ(p).get("WORKER_TOKEN") == in_worker_env)
            peek = as_another_user("cat", f"/proc/{shell.pid}/environ")
            assert shell.is_running() and peek.returncode != 0 and in_worker_env not in peek.stdout, peek

        for name in names:
            (tmp_path / f"{name}.go").touch()
        assert sup.wait() == 0, sup.log()
    finally:
        sups.cleanup()
    for name, secret in (("in-command", in_command), ("sourced", in_file), ("inherited", in_worker_env)):
        shown = cli.json("show", name)
        assert (shown["state"], shown["output"]) == ("completed", hashlib.sha256(secret.encode()).hexdigest() + "  -\n"), shown
    # The command is also stored and shown; what the job read from elsewhere is not.
    assert in_command in cli.ok("list").stdout
    stored = json.dumps(cli.json("list"))
    assert in_file not in stored and in_worker_env not in stored


# --- no SQL from strings ----------------------------------------------------------------------

INJECTIONS = [
    "'; DROP TABLE jobs; --",
    '"; DROP TABLE config; --',
    "x' OR '1'='1",
    "echo '); DELETE FROM jobs WHERE ('1'='1",
    "Robert'); DROP TABLE dead_jobs;--",
    "\\'; SELECT pg_sleep(5); --",
    "1; UPDATE config SET value='0' WHERE key='_seq'",
    "%s %(x)s ? :name $1 ?1 @p",
    "/* */ UNION SELECT * FROM workers --",
]
# Ids and queues are limited to A-Z a-z 0-9 . _ : - ; these are as SQL-like as that allows.
SQL_IDS = ["x--", "DROP.TABLE.jobs--", "1:OR:1-1", "a:b", "--", "0x1", "1e5", "_seq", "-1"]
SQL_QUEUES = ["jobs--", "OR-1-1", "x:y.z", "--", "default--"]


def test_sql_fragments_round_trip_verbatim(cli, db, db_url, tmp_path):
    odd_dir = tmp_path / "it's \"q\"; DROP TABLE jobs; --"
    odd_dir.mkdir()
    specs = [
        {"id": job_id, "command": command, "queue": queue, "cwd": str(odd_dir)}
        for job_id, command, queue in zip(SQL_IDS, INJECTIONS, SQL_QUEUES * 2)
    ]
    lines = [json.dumps(spec) for spec in specs] + INJECTIONS  # named jobs, then the same commands with auto ids
    cli.ok("enqueue", "--file", "-", input="\n".join(lines) + "\n")
    cli.ok("enqueue", "--queue", "jobs--", "--cwd", odd_dir, *INJECTIONS[:3])  # words, joined with shell quoting
    single = cli.ok("enqueue", "--id", "direct", INJECTIONS[0])
    assert single.stdout == f"enqueued id=direct cmd={INJECTIONS[0]}\n"

    listed = cli.json("list")
    assert len(listed) == len(specs) + len(INJECTIONS) + 2
    by_id = {j["id"]: j for j in listed}
    for spec in specs:
        assert {k: by_id[spec["id"]][k] for k in spec} == spec
        assert {k: jobs_api.to_dict(jobs_api.get(db, spec["id"]))[k] for k in spec} == spec
    assert [j["command"] for j in listed[len(specs): len(specs) + len(INJECTIONS)]] == INJECTIONS
    joined = listed[len(specs) + len(INJECTIONS)]
    assert subprocess.run(["sh", "-c", 'printf "%s|" "$@"', "sh", *INJECTIONS[:3]], capture_output=True, text=True).stdout == \
        subprocess.run(["sh", "-c", "f() { printf '%s|' \"$@\"; }; f " + joined["command"]], capture_output=True, text=True).stdout
    in_queue = {s["id"] for s in specs if s["queue"] == "jobs--"} | {joined["id"]}
    assert {j["id"] for j in cli.json("list", "--queue", "jobs--")} == in_queue
    shown = cli.json("show", "DROP.TABLE.jobs--")
    assert (shown["command"], shown["queue"], shown["cwd"]) == (INJECTIONS[1], "OR-1-1", str(odd_dir))

    # SQL where things are only looked up or set: refused as input (exit 2), nothing run.
    refused = [
        (["list", "--state", "pending' OR '1'='1"], "unknown state"),
        (["list", "--queue", "x' OR '1'='1"], "invalid queue name"),
        (["show", "x' OR '1'='1"], "invalid job id"),
        (["dlq", "retry", "1 OR 1=1"], "invalid job id"),
        (["dlq", "purge", "'; DROP TABLE dead_jobs; --"], "invalid job id"),
        (["config", "set", "max-retries", "1; DROP TABLE config"], "invalid value"),
        (["config", "get", "max-retries'; DROP TABLE config; --"], "unknown config key"),
    ]
    for (_args, fragment), (_, result, _) in zip(refused, run_many(db_url, tmp_path, [a for a, _ in refused])):
        error_line(result, 2, fragment)

    tables = set(inspect(db.engine).get_table_names())
    assert {"jobs", "dead_jobs", "config", "workers", "alembic_version"} <= tables
    assert [j.id for j in jobs_api.listing(db)] == [j["id"] for j in listed]
    counts = cli.json("status")["jobs"]
    assert counts["pending"] == len(listed)
    cli.ok("enqueue", "--id", "after", "true")
    assert jobs_api.get(db, "after").state == "pending"


def test_sqlite_path_with_quotes(tmp_path):
    path = tmp_path / "it's; DROP TABLE jobs; --.db"
    cli = Cli(str(path), tmp_path)
    cli.ok("enqueue", "--id", "quoted", "true")
    assert [j["id"] for j in cli.json("list")] == ["quoted"]
    assert path.exists()
