"""unique jobs (a unique_key column and a partial unique index of the active jobs' keys)
and retention (an index of dead jobs by when they died)

Revision ID: 0007
Revises: 0006

`enqueue --unique-key`: jobs and dead_jobs gain unique_key (a dead job keeps its key,
so that `dlq retry` can check it is free). ix_jobs_unique_key is unique over the
keys of active jobs only (pending, failed, blocked, running): a second active job with a key
cannot be written, and a finished job frees it. Existing jobs have no key.

`prune` and the supervisors' retention take the oldest dead jobs first, in bounded
batches: ix_dead_jobs_dead_at. (Completed and cancelled jobs are read along
ix_jobs_finished, from 0005.)

Downgrade: the keys are dropped with their column and index.
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

ACTIVE = sa.text("state IN ('pending', 'failed', 'blocked', 'running')")


def upgrade() -> None:
    for table in ("jobs", "dead_jobs"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column('unique_key', sa.String(length=255), nullable=True))
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.create_index('ix_jobs_unique_key', ['unique_key'], unique=True, sqlite_where=ACTIVE, postgresql_where=ACTIVE)
    with op.batch_alter_table('dead_jobs') as batch_op:
        batch_op.create_index('ix_dead_jobs_dead_at', ['dead_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dead_jobs') as batch_op:
        batch_op.drop_index('ix_dead_jobs_dead_at')
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_index('ix_jobs_unique_key', sqlite_where=ACTIVE, postgresql_where=ACTIVE)
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), not a batch rebuild of jobs, which
    # recreated ix_jobs_claim without its DESC (tests/test_dependencies.py compares).
    for table in ("jobs", "dead_jobs"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN unique_key")
