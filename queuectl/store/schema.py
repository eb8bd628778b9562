"""The schema's revisions: kept at this queuectl's Alembic head, cheaply, and the
`queuectl db ...` commands (thin wrappers over alembic.command).

Opening a database costs one small query when the schema is current; Alembic is
imported only when there is something to migrate.
"""

import os
import re
from pathlib import Path

from sqlalchemy import exc, inspect

from queuectl.errors import DatabaseError, SchemaTooNew, ValidationError


def migrations_dir() -> Path:
    """The migrations inside an installed package, else those of the source tree."""
    package = Path(__file__).resolve().parent.parent  # queuectl/
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise DatabaseError("queuectl's migrations are missing from this installation")


def _known_revisions() -> tuple[str, ...]:
    """Every revision this queuectl has, oldest first: a migration file NNNN_what.py is
    revision NNNN (tests/test_migrations.py checks that against Alembic's own chain)."""
    names = os.listdir(migrations_dir() / "versions")
    return tuple(sorted(name[:4] for name in names if re.fullmatch(r"\d{4}_\w+\.py", name)))


REVISIONS = _known_revisions()
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
        db.dialect.end_look(conn)
        check_known(revision)
        if revision != HEAD:
            upgrade(conn, "head")


def check_known(revision: str | None) -> None:
    if revision is not None and revision not in REVISIONS:
        raise SchemaTooNew(
            f"the database schema is at revision {revision}, newer than this queuectl knows ({HEAD}); upgrade queuectl"
        )


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


def command(url: str, action: str, revision: str | None = None) -> str | None:
    """`queuectl db ACTION`, run under the migration lock; what to tell the user
    (Alembic prints its own reports)."""
    from alembic import command as alembic_command
    from alembic.util import CommandError

    from queuectl.store.database import Database

    db = Database(url)
    try:
        if action == "history":
            alembic_command.history(alembic_config())
            return None
        with db.translate_errors(), db.dialect.migration_lock(db.engine) as conn:
            # A newer queuectl's revision: refuse (exit 1) before Alembic touches anything.
            check_known(current_revision(conn))
            db.dialect.end_look(conn)
            cfg = alembic_config(conn)
            if action == "current":
                alembic_command.current(cfg)
                return None
            if action == "upgrade":
                upgrade(conn, "head")
            elif action == "downgrade":
                assert revision is not None  # the parser requires REV
                alembic_command.downgrade(cfg, revision)
                conn.commit()
            return f"database is at revision {current_revision(conn) or 'base (no schema)'}"
    except CommandError as err:
        raise ValidationError(str(err)) from None
    finally:
        db.dispose()
