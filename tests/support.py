"""Helpers shared by the CLI and state-machine tests (not fixtures: plain functions)."""

import subprocess
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from queuectl import jobspec
from queuectl.store import jobs, transitions
from queuectl.store.models import CONFIG, DEAD_JOBS, JOBS

# A fixed, controllable clock for the library API (far from the real time).
T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
CFG = {"backoff-base": 2.0, "backoff-max": 3600.0, "backoff-jitter": 0.0}


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def error_line(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """Assert a queuectl error: exit `code`, no traceback, nothing on stdout, ONE stderr line."""
    detail = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert result.returncode == code, detail
    assert "Traceback" not in result.stderr, detail
    lines = result.stderr.splitlines()
    assert len(lines) == 1, detail
    assert lines[0].startswith("queuectl: error: "), detail
    assert result.stdout == "", detail
    for fragment in fragments:
        assert fragment in lines[0], detail
    return lines[0]


def usage_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Assert an argparse usage error: exit 2, a usage line, an `error:` line, no traceback."""
    detail = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert result.returncode == 2, detail
    assert "Traceback" not in result.stderr, detail
    assert result.stderr.startswith("usage: queuectl"), detail
    last = result.stderr.splitlines()[-1]
    assert last.startswith("queuectl") and ": error: " in last, detail
    for fragment in fragments:
        assert fragment in last, detail
    return last


def enqueue(db, command: str = "true", now: datetime = T0, **fields) -> str:
    """Enqueue one job through the library; returns its id."""
    return jobs.enqueue(db, [jobspec.build(command, **fields)], now=now)[0]["id"]


def job_row(db, job_id: str):
    with db.read() as conn:
        return conn.execute(select(JOBS).where(JOBS.c.id == job_id)).first()


def dead_row(db, job_id: str):
    with db.read() as conn:
        return conn.execute(select(DEAD_JOBS).where(DEAD_JOBS.c.id == job_id)).first()


def take(db, job_id: str, worker_id: str = "w-test", now: datetime = T0) -> None:
    """Put one given job in the running state for worker_id (as a claim of that job would)."""
    with db.begin() as conn:
        changed = conn.execute(
            update(JOBS)
            .where(JOBS.c.id == job_id)
            .values(state="running", worker_id=worker_id, started_at=now, updated_at=now)
        ).rowcount
    assert changed == 1, job_id


def finish(db, job_id: str, *, exit_code: int = 0, output: str | None = None, now: datetime = T0) -> None:
    take(db, job_id, now=now)
    with db.begin() as conn:
        assert transitions.complete(conn, job_id, "w-test", exit_code=exit_code, output=output, now=now)


def fail_once(db, job_id: str, *, now: datetime = T0, error: str = "exit code 3", exit_code: int | None = 3, output: str | None = None, cfg: dict = CFG) -> str:
    take(db, job_id, now=now)
    with db.begin() as conn:
        state = transitions.fail(conn, job_id, "w-test", error=error, exit_code=exit_code, output=output, now=now, cfg=cfg)
    assert state in ("failed", "dead"), state
    return state


def kill(db, job_id: str, *, now: datetime = T0, error: str = "exit code 3", exit_code: int | None = 3, output: str | None = "boom\n") -> None:
    """Fail a job until it is in the dead-letter queue."""
    for _ in range(1002):
        if fail_once(db, job_id, now=now, error=error, exit_code=exit_code, output=output) == "dead":
            return
    raise AssertionError(f"job {job_id} never died")


def config_value(db, key: str) -> str | None:
    with db.read() as conn:
        return conn.execute(select(CONFIG.c.value).where(CONFIG.c.key == key)).scalar()


def all_ids(db) -> list[str]:
    return [row.id for row in jobs.listing(db)]


def real_counts(db) -> dict[str, int]:
    """The brute-force truth: a GROUP BY over the whole jobs table, and the DLQ."""
    with db.read() as conn:
        counts = {state: 0 for state in ("pending", "running", "completed", "failed", "dead", "cancelled", "blocked")}
        counts.update(dict(conn.execute(select(JOBS.c.state, func.count()).group_by(JOBS.c.state)).all()))
        counts["dead"] += conn.execute(select(func.count()).select_from(DEAD_JOBS)).scalar_one()
    return counts
