"""The chaos soak (tests/soak.py): a short run in every test run, a long one with -m slow,
and a short one through PgBouncer in transaction mode (skipped without it)."""

import pytest
from pgbouncer import pgbouncer  # noqa: F401

from soak import run_soak, violations


def hit_several_slots(report: dict) -> bool:
    """Some SIGKILL or SIGSTOP of a worker process hit two or more busy slots at once."""
    return any(int(key.split()[1]) >= 2 for key in report["busy_slots_hit"])


def test_chaos_soak_short(db_url, tmp_path):
    report = run_soak(db_url, tmp_path, jobs=300, chaos_seconds=40, seed=20261127)
    assert report["kills"] and report["stalls"] and report["dlq_races"] and report["status_checks"], report
    assert hit_several_slots(report), report
    assert not violations(report), report


def test_chaos_soak_short_through_pgbouncer(pgbouncer, pg_databases, tmp_path):
    # Every command and supervisor through PgBouncer (2 server connections, a client's
    # transactions on whichever is free), the supervisors' LISTEN direct.
    direct = pg_databases.new()
    report = run_soak(pgbouncer.url(direct), tmp_path, jobs=300, chaos_seconds=40, seed=20261201, listen_db=direct)
    assert report["kills"] and report["stalls"] and report["dlq_races"] and report["status_checks"], report
    assert hit_several_slots(report), report
    assert not violations(report), report


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_chaos_soak_long(db_url, tmp_path):
    report = run_soak(db_url, tmp_path, jobs=2000, chaos_seconds=600, seed=7)
    assert not violations(report), report
