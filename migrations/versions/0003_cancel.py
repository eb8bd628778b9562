"""cancelled jobs: a column for a cancel asked of a running job, and an index of cancelled jobs

Revision ID: 0003
Revises: 0002

`cancel` marks a waiting job cancelled at once; a running job gets
cancel_requested_at, which its worker reads at its next heartbeat. Cancelled jobs
are indexed (partial index on state = 'cancelled') so that `status` counts them
without scanning the completed history.

Downgrade: a queuectl before this revision knows no 'cancelled' state, so cancelled
jobs move to the DLQ (dead_jobs, state 'dead', dead_at = when they were cancelled),
where that version can show, retry or purge them.
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

CANCELLED = sa.text("state = 'cancelled'")
# The columns jobs and dead_jobs share at revision 0002.
SHARED = ("id, seq, command, attempts, max_retries, priority, queue, run_at, timeout, cwd, created_at,"
          " updated_at, started_at, finished_at, exit_code, last_error, output, worker_id")


def upgrade() -> None:
    for table in ("jobs", "dead_jobs"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column('cancel_requested_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.create_index('ix_jobs_cancelled', ['seq'], unique=False, sqlite_where=CANCELLED, postgresql_where=CANCELLED)


def downgrade() -> None:
    op.execute(
        f"INSERT INTO dead_jobs ({SHARED}, state, dead_at)"
        f" SELECT {SHARED}, 'dead', COALESCE(finished_at, updated_at) FROM jobs WHERE state = 'cancelled'"
    )
    op.execute("DELETE FROM jobs WHERE state = 'cancelled'")
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_index('ix_jobs_cancelled', sqlite_where=CANCELLED, postgresql_where=CANCELLED)
    for table in ("jobs", "dead_jobs"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column('cancel_requested_at')
    if op.get_bind().dialect.name == "sqlite":
        # The batch rebuild above recreated the jobs indexes from reflection, which
        # loses the expression `priority DESC`: put the claim index back as 0001 made it.
        op.execute("DROP INDEX ix_jobs_claim")
        op.execute("CREATE INDEX ix_jobs_claim ON jobs (priority DESC, run_at, seq) WHERE state IN ('pending', 'failed')")
