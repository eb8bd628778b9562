"""`queuectl enqueue` stays cheap: it never imports the migration machinery, psutil,
multiprocessing or the other database's SQLAlchemy dialect once the database is migrated
(measured with python -X importtime), and its quick exit (os._exit, see cli/main.py)
loses no output and no exit code."""

import json
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
    assert "queuectl.store.jobs" in modules and "sqlalchemy" in modules  # the parse saw the real imports
    other = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert other == []  # nothing but the timing lines on stderr
    heavy = [m for m in modules if m.split(".")[0] in FORBIDDEN]
    assert heavy == [], heavy
    # models.PartialIndex: the partial indexes no longer pull in every dialect.
    other = "sqlite" if db_url.startswith("postgresql") else "postgresql"
    assert not [m for m in modules if m.startswith(f"sqlalchemy.dialects.{other}")]


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


def test_output_and_exit_codes_survive_the_quick_exit(db, db_url, tmp_path):
    env = env_for(db_url)
    env.pop("PYTHONUNBUFFERED", None)  # stdout to a file is then block-buffered: the flush matters
    out = tmp_path / "out.json"
    for args, code in ((["enqueue", "--json", "--id", "kept", "echo x"], 0), (["show", "nope"], 1), (["enqueue", "--id", "1", "x"], 2)):
        with open(out, "w") as stream:
            result = subprocess.run([sys.executable, "-m", "queuectl", *args], stdout=stream, stderr=subprocess.PIPE,
                                    text=True, env=env, cwd=tmp_path, timeout=60)
        assert result.returncode == code, result.stderr
        if code == 0:
            assert result.stderr == "" and json.loads(out.read_text())["id"] == "kept"
        else:
            assert out.read_text() == "" and result.stderr.startswith("queuectl: error: ") and result.stderr.count("\n") == 1
