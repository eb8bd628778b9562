"""`queuectl enqueue` stays cheap: it never imports the migration machinery, psutil or
multiprocessing once the database is migrated (measured with python -X importtime)."""

import subprocess
import sys

from conftest import env_for

FORBIDDEN = ("alembic", "psutil", "multiprocessing")


def imported_modules(stderr: str) -> list[str]:
    """Module names from `-X importtime` lines: 'import time: self | cumulative | name'."""
    names = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line.split("|")
        if len(fields) == 3 and fields[0].split(":")[1].strip().isdigit():
            names.append(fields[2].strip())
    return names


def test_enqueue_imports_neither_alembic_nor_psutil_nor_multiprocessing(db, db_url, tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "queuectl", "enqueue", "true"],
        capture_output=True, text=True, env=env_for(db_url), cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "enqueued id=1 cmd=true\n"
    modules = imported_modules(result.stderr)
    assert "queuectl.jobs" in modules and "sqlalchemy" in modules  # the parse saw the real imports
    other = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert other == []  # nothing but the timing lines on stderr
    heavy = [m for m in modules if m.split(".")[0] in FORBIDDEN]
    assert heavy == [], heavy


def test_a_usage_error_does_not_even_import_sqlalchemy(tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "queuectl", "enqueue", "--id", "123", "true"],
        capture_output=True, text=True, env=env_for(str(tmp_path / "queue.db")), cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 2
    modules = imported_modules(result.stderr)
    assert "queuectl.jobspec" in modules
    assert [m for m in modules if m.split(".")[0] in ("sqlalchemy",) + FORBIDDEN] == []
    assert not (tmp_path / "queue.db").exists()
