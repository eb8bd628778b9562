"""Alembic environment: run from queuectl (a connection is passed in) or from `alembic`."""

from logging.config import fileConfig

from alembic import context

from queuectl.store.models import METADATA

config = context.config
connection = config.attributes.get("connection")


def run(conn) -> None:
    # render_as_batch: ALTERs become table rebuilds on SQLite, plain ALTERs elsewhere.
    context.configure(connection=conn, target_metadata=METADATA, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    # Standalone `alembic ...`: same database setting as the CLI, same migration lock.
    if config.config_file_name:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    from queuectl.store.database import Database, resolve_url

    db = Database(resolve_url(config.get_main_option("sqlalchemy.url") or None))
    with db.dialect.migration_lock(db.engine) as conn:
        run(conn)
        conn.commit()
    db.dispose()
