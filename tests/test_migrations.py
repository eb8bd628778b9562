"""The Alembic migrations: they build exactly the models' schema, form one linear chain
that queuectl.store.schema knows, and a schema newer than this queuectl is left alone."""

import re
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from conftest import REPO, env_for
from queuectl.store import schema
from queuectl.store.database import Database, resolve_url
from queuectl.store.models import METADATA
from support import all_ids, enqueue, error_line

ALEMBIC = Path(sys.executable).with_name("alembic")


def schema_diff(engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(context, METADATA)


def table_names(engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def revision(engine) -> str | None:
    with engine.connect() as conn:
        return schema.current_revision(conn)


def test_migrations_build_exactly_the_models_schema(db):
    assert revision(db.engine) == schema.HEAD
    assert schema_diff(db.engine) == []
    assert table_names(db.engine) == set(METADATA.tables) | {"alembic_version"}
    # Autogenerate does not compare partial-index predicates: check those by hand.
    inspector = sa.inspect(db.engine)
    dialect = db.engine.dialect.name
    for name, table in METADATA.tables.items():
        reflected = {ix["name"]: ix for ix in inspector.get_indexes(name) if not ix.get("duplicates_constraint")}
        assert set(reflected) == {ix.name for ix in table.indexes}, name
        for index in table.indexes:
            where = index.dialect_options[dialect].get("where")
            found = reflected[index.name].get("dialect_options", {}).get(f"{dialect}_where")
            assert (found is None) == (where is None), index.name
            if where is not None:
                expected = str(where.compile(db.engine, compile_kwargs={"literal_binds": True}))
                for state in re.findall(r"'[a-z]+'", expected):
                    assert state in str(found), (index.name, str(found), expected)


def test_the_revision_chain_is_linear_and_known_to_queuectl():
    script = ScriptDirectory.from_config(schema.alembic_config())
    newest_first = list(script.walk_revisions())
    chain = [rev.revision for rev in reversed(newest_first)]
    assert tuple(chain) == schema.REVISIONS
    assert script.get_heads() == [schema.HEAD]
    assert script.get_bases() == [chain[0]]
    assert script.get_revision(chain[0]).down_revision is None
    for older, newer in zip(chain, chain[1:]):
        assert script.get_revision(newer).down_revision == older
    for rev in newest_first:
        assert not rev.is_merge_point and not rev.is_branch_point and not rev.dependencies, rev.revision
    files = [p for p in (REPO / "migrations" / "versions").glob("*.py") if p.name != "__init__.py"]
    assert len(files) == len(chain)


def test_a_newer_schema_is_refused_and_left_alone(cli, db):
    enqueue(db, "echo keep me", id="keep")
    with db.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    tables = table_names(db.engine)

    for args in (["enqueue", "true"], ["db", "upgrade"], ["db", "current"], ["db", "downgrade", "base"],
                 ["worker", "start", "--burst"]):
        error_line(cli(*args, timeout=60), 1, "revision 9999", "newer than this queuectl", "upgrade queuectl")

    assert revision(db.engine) == "9999"
    assert table_names(db.engine) == tables
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT id, command FROM jobs").all() == [("keep", "echo keep me")]
        assert conn.exec_driver_sql("SELECT key, value FROM config ORDER BY key").all() == [("_purged", "0"), ("_seq", "1")]


def test_alembic_upgrade_head_from_the_repository_root(empty_db_url, tmp_path):
    env = env_for(empty_db_url)
    result = subprocess.run([ALEMBIC, "upgrade", "head"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    db = Database(resolve_url(empty_db_url))
    try:
        assert revision(db.engine) == schema.HEAD
        assert schema_diff(db.engine) == []
        current = subprocess.run([ALEMBIC, "current"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert current.returncode == 0 and f"{schema.HEAD} (head)" in current.stdout, current.stderr
        # queuectl takes the database as it is.
        enqueued = subprocess.run([sys.executable, "-m", "queuectl", "enqueue", "true"], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=60)
        assert (enqueued.returncode, enqueued.stdout, enqueued.stderr) == (0, "enqueued id=1 cmd=true\n", "")
    finally:
        db.dispose()


def test_db_commands(cli, db):
    assert cli.ok("db", "current").stdout == f"{schema.HEAD} (head)\n"
    assert f"<base> -> {schema.REVISIONS[0]}" in cli.ok("db", "history").stdout
    enqueue(db, "echo lost in the downgrade")

    assert cli.ok("db", "downgrade", "base").stdout == "database is at revision base (no schema)\n"
    assert table_names(db.engine) == {"alembic_version"}
    assert cli.ok("db", "upgrade").stdout == f"database is at revision {schema.HEAD}\n"
    assert schema_diff(db.engine) == []
    assert all_ids(db) == []

    error_line(cli("db", "downgrade", "no-such-revision"), 2, "no-such-revision")
    assert revision(db.engine) == schema.HEAD


def schema_snapshot(conn) -> dict:
    """What a revision built, as the server reports it: every index's own definition
    (its columns, their order and direction, its predicate) and every column."""
    inspector = sa.inspect(conn)
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").all()
    else:
        rows = conn.exec_driver_sql("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()").all()
    columns = {
        table: [(c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in inspector.get_columns(table)]
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }
    return {"indexes": dict(sorted(rows)), "columns": columns}


def test_every_downgrade_restores_exactly_what_the_upgrade_to_that_revision_built(empty_db_url):
    # A SQLite batch rebuild recreates a table's indexes from reflection, which loses an
    # expression such as `priority DESC`: 0004's downgrade once left ix_jobs_claim ascending.
    db = Database(resolve_url(empty_db_url))
    try:
        with db.engine.connect() as conn:
            cfg = schema.alembic_config(conn)
            built = {}
            for rev in schema.REVISIONS:
                alembic_command.upgrade(cfg, rev)
                conn.commit()
                built[rev] = schema_snapshot(conn)
            for rev in reversed(schema.REVISIONS[:-1]):
                alembic_command.downgrade(cfg, rev)
                conn.commit()
                assert schema_snapshot(conn) == built[rev], f"downgrade to {rev}"
    finally:
        db.dispose()
