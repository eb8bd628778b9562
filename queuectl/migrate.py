"""`queuectl db ...`: thin wrappers over alembic.command, run under the migration lock."""

from queuectl import schema
from queuectl.database import Database
from queuectl.errors import ValidationError


def run(url: str, action: str, revision: str | None = None) -> int:
    from alembic import command
    from alembic.util import CommandError

    db = Database(url)
    try:
        if action == "history":
            command.history(schema.alembic_config())
            return 0
        with db._translated(), db.dialect.migration_lock(db.engine) as conn:
            # A newer queuectl's revision: refuse (exit 1) before Alembic touches anything.
            schema.check_known(schema.current_revision(conn))
            conn.rollback()
            cfg = schema.alembic_config(conn)
            if action == "current":
                command.current(cfg)
            elif action == "upgrade":
                schema.upgrade(conn, "head")
                print(f"database is at revision {schema.current_revision(conn) or 'base (no schema)'}")
            elif action == "downgrade":
                command.downgrade(cfg, revision)
                conn.commit()
                print(f"database is at revision {schema.current_revision(conn) or 'base (no schema)'}")
        return 0
    except CommandError as err:
        raise ValidationError(str(err)) from None
    finally:
        db.dispose()
