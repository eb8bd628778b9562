"""Keeping the schema at this queuectl's Alembic head, cheaply.

Opening a database costs one small query when the schema is current; Alembic is
imported only when there is something to migrate.
"""

from pathlib import Path

from sqlalchemy import exc, inspect

from queuectl.errors import DatabaseError, SchemaTooNew

# Every revision this queuectl knows, oldest first; the last is the head.
# tests/test_migrations.py checks this against migrations/versions.
REVISIONS = ("0001", "0002")
HEAD = REVISIONS[-1]


def current_revision(conn) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def ensure(db) -> None:
    with db.read() as conn:
        revision = current_revision(conn)
    if revision == HEAD:
        return
    check_known(revision)
    with db.translate_errors(), db.dialect.migration_lock(db.engine) as conn:
        # Another process may have migrated while we waited for the lock.
        revision = current_revision(conn)
        conn.rollback()
        check_known(revision)
        if revision != HEAD:
            upgrade(conn, "head")


def check_known(revision: str | None) -> None:
    if revision is not None and revision not in REVISIONS:
        raise SchemaTooNew(
            f"the database schema is at revision {revision}, newer than this queuectl knows ({HEAD}); upgrade queuectl"
        )


def migrations_dir() -> Path:
    """The migrations inside an installed package, else those of the source tree."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise DatabaseError("queuectl's migrations are missing from this installation")


def alembic_config(conn=None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(conn, revision: str = "head") -> None:
    from alembic import command

    try:
        command.upgrade(alembic_config(conn), revision)
        conn.commit()
    except exc.DBAPIError:
        conn.rollback()
        raise
