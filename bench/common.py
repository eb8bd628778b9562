"""Helpers for the benchmark suite: child environment, scratch databases, timing,
a memory floor and small statistics. Standard library plus queuectl's own deps.
(The peaks of queuectl's own processes are recorded by bench/exit_peaks.py.)"""

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the source tree's queuectl, in this process too


# --- statistics ------------------------------------------------------------------------


def median(values):
    return statistics.median(values) if values else None


def p95(values):
    if not values:
        return None
    ordered = sorted(values)
    # nearest-rank: the smallest value with at least 95% of the samples at or below it
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


def mean(values):
    return statistics.fmean(values) if values else None


# --- the environment every child process gets --------------------------------------------


class Context:
    """What every measurement needs: a scratch directory, the child environment and
    the command that runs the source tree's queuectl."""

    def __init__(self, tmp: Path, quick: bool):
        self.tmp = tmp
        self.quick = quick
        self.py = sys.executable
        env = dict(os.environ)
        # Children import the source tree. Their bytecode goes to a private cache
        # (warmed before anything is timed): with PYTHONDONTWRITEBYTECODE set, every
        # `queuectl` process would otherwise recompile queuectl from source, which an
        # installed copy never does.
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        for key in ("QUEUECTL_DB", "QUEUECTL_LISTEN", "QUEUECTL_HOSTNAME", "TS_SOCKET", "TS_SLOTS", "TS_MAXFINISHED"):
            env.pop(key, None)
        self.env = env
        self.work = tmp / "cwd"  # jobs run here (enqueue records its cwd)
        self.work.mkdir(parents=True, exist_ok=True)
        self.log_dir = tmp / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self._logs = 0

    def queuectl(self, url: str, *args) -> list[str]:
        return [self.py, "-m", "queuectl", "--db", url, *map(str, args)]

    def log_file(self, name: str) -> Path:
        self._logs += 1
        return self.log_dir / f"{self._logs:03d}-{name}.log"

    def run(self, argv, *, env=None, stdin=None, check=True, name="cmd", timeout=900) -> float:
        """Run a command to its end; its wall time in seconds (from just before the spawn)."""
        log = self.log_file(name)
        with open(log, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.run(
                argv, env=env or self.env, cwd=self.work, stdin=stdin or subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
            )
            elapsed = time.perf_counter() - start
        if check and proc.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited {proc.returncode}: {' '.join(map(str, argv))}\n{tail}")
        return elapsed


# --- scratch databases ---------------------------------------------------------------------


def _migrate(url: str) -> None:
    from queuectl.store import open_database

    db = open_database(url)
    db.dispose()


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, tmp: Path):
        self.dir = tmp / "sqlite"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.template = self.dir / "template.db"
        _migrate(self.url_of(self.template))
        for suffix in ("-wal", "-shm"):  # all connections closed: the WAL is checkpointed
            Path(str(self.template) + suffix).unlink(missing_ok=True)

    @staticmethod
    def url_of(path: Path) -> str:
        return f"sqlite:///{path}"

    def fresh(self, tag: str) -> str:
        """A new database with the current schema (a copy of a migrated template)."""
        self.count += 1
        path = self.dir / f"{tag}-{self.count}.db"
        shutil.copyfile(self.template, path)
        return self.url_of(path)

    def drop(self, url: str) -> None:
        path = url[len("sqlite:///") :]
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(path + suffix).unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresBackend:
    name = "postgresql"

    def __init__(self, admin_url: str):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        self.admin_url = make_url(admin_url)
        self.admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", pool_size=1)
        self.prefix = f"qbench_{os.getpid()}"
        self.count = 0
        self.created: list[str] = []
        self.template = self._create(f"{self.prefix}_tmpl")
        _migrate(self.url_of(self.template))

    def url_of(self, name: str) -> str:
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def _create(self, name: str, template: str | None = None) -> str:
        from sqlalchemy import text

        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        self.created.append(name)
        return name

    def fresh(self, tag: str) -> str:
        self.count += 1
        return self.url_of(self._create(f"{self.prefix}_{tag}_{self.count}", template=self.template))

    def _drop_name(self, name: str) -> None:
        from sqlalchemy import text

        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if name in self.created:
            self.created.remove(name)

    def drop(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        self._drop_name(make_url(url).database)

    def close(self) -> None:
        for name in list(reversed(self.created)):
            try:
                self._drop_name(name)
            except Exception as err:  # keep dropping the others
                print(f"bench: could not drop database {name}: {err}", file=sys.stderr)
        self.admin.dispose()


def postgres_answers(url: str) -> str | None:
    """None if PostgreSQL answers at url, else the reason it does not."""
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as err:
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def job_counts(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            counts = dict(conn.execute(text("SELECT state, count(*) FROM jobs GROUP BY state")).all())
            counts["dead"] = counts.get("dead", 0) + conn.execute(text("SELECT count(*) FROM dead_jobs")).scalar_one()
    finally:
        engine.dispose()
    return counts


# --- memory ---------------------------------------------------------------------------------


def floor_rss_kb(ctx: Context, modules: str) -> int:
    """VmHWM of a bare Python process that imported `modules`."""
    code = f"import {modules}\nfor l in open('/proc/self/status'):\n    l.startswith('VmHWM:') and print(l.split()[1])"
    out = subprocess.run([ctx.py, "-c", code], env=ctx.env, capture_output=True, text=True, check=True).stdout
    return int(out.strip())


def wait_for(predicate, timeout: float, what: str):
    """predicate()'s first true value, asked every 0.1 s; RuntimeError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
