"""an index of completed and cancelled jobs by when they finished

Revision ID: 0005
Revises: 0004

`status --watch` shows the last few jobs to finish. Completed and cancelled jobs
stay in the jobs table, which holds the whole history; this partial index lets
that read walk back from the newest finish instead of sorting every job. Dead
jobs are in the DLQ (dead_jobs), which `status` already reads whole.
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

SETTLED = sa.text("state IN ('completed', 'cancelled')")


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.create_index('ix_jobs_finished', ['finished_at'], unique=False, sqlite_where=SETTLED, postgresql_where=SETTLED)


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_index('ix_jobs_finished', sqlite_where=SETTLED, postgresql_where=SETTLED)
