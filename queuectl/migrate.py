"""`queuectl db ...`: thin wrappers over alembic.command, run under the migration lock."""

from queuectl import schema
from queuectl.database import Database
from queuectl.errors import ValidationError


def run(url: str, action: str, revision: str | None = None) -> str | None:
    """Run one action; returns what to tell the user (Alembic prints its own reports)."""
    from alembic import command
    from alembic.util import CommandError

    db = Database(url)
    try:
        if action == "history":
            command.history(schema.alembic_config())
            return None
        with db.translate_errors(), db.dialect.migration_lock(db.engine) as conn:
            # A newer queuectl's revision: refuse (exit 1) before Alembic touches anything.
            schema.check_known(schema.current_revision(conn))
            conn.rollback()
            cfg = schema.alembic_config(conn)
            if action == "current":
                command.current(cfg)
                return None
            if action == "upgrade":
                schema.upgrade(conn, "head")
            elif action == "downgrade":
                command.downgrade(cfg, revision)
                conn.commit()
            return f"database is at revision {schema.current_revision(conn) or 'base (no schema)'}"
    except CommandError as err:
        raise ValidationError(str(err)) from None
    finally:
        db.dispose()
