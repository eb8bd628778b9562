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
            cfg = schema.alembic_config(conn)
            if action == "current":
                command.current(cfg)
            elif action == "upgrade":
                schema.upgrade(conn, "head")
                print(f"database is at revision {schema.current_revision(conn)}")
            elif action == "downgrade":
                command.downgrade(cfg, revision)
                conn.commit()
                print(f"database is at revision {schema.current_revision(conn)}")
        return 0
    except CommandError as err:
        raise ValidationError(str(err)) from None
    finally:
        db.dispose()
