"""job dependencies: a table of who waits for whom, a has_dependents flag, an index of blocked jobs

Revision ID: 0006
Revises: 0005

`enqueue --after` / `--after-any` (store/dependencies.py). job_dependencies holds one
row per (job, job it waits for), indexed by the latter, which is how the transition
that ends a job finds its dependents. jobs.has_dependents (and dead_jobs', since a
job moves between them whole) tells that transition whether to look at all. Blocked
jobs are indexed (partial index on state = 'blocked') so that `status` counts them
without scanning the history; they stay out of ix_jobs_claim.

The columns are added and dropped with ALTER TABLE (no table rebuild on SQLite:
a batch rebuild recreated ix_jobs_claim without its DESC); tests/test_dependencies.py
checks that every index, DESC and partial predicates included, is as it was both ways.

Downgrade: a queuectl before this revision knows no 'blocked' state, and would run
those jobs without waiting for what they wait for: they become cancelled instead
(last_error says why), where that version can see and retry them.
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

BLOCKED = sa.text("state = 'blocked'")
DROPPED = "cancelled: its dependencies were dropped by a schema downgrade"


def upgrade() -> None:
    for table in ("jobs", "dead_jobs"):
        op.add_column(table, sa.Column('has_dependents', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        'job_dependencies',
        sa.Column('job_id', sa.String(length=128), nullable=False),
        sa.Column('depends_on', sa.String(length=128), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint('job_id', 'depends_on', name=op.f('pk_job_dependencies')),
    )
    op.create_index('ix_job_dependencies_depends_on', 'job_dependencies', ['depends_on'], unique=False)
    op.create_index('ix_jobs_blocked', 'jobs', ['seq'], unique=False, sqlite_where=BLOCKED, postgresql_where=BLOCKED)


def downgrade() -> None:
    op.execute(
        sa.text("UPDATE jobs SET state = 'cancelled', finished_at = updated_at, last_error = :why WHERE state = 'blocked'")
        .bindparams(why=DROPPED)
    )
    op.drop_index('ix_jobs_blocked', table_name='jobs', sqlite_where=BLOCKED, postgresql_where=BLOCKED)
    op.drop_index('ix_job_dependencies_depends_on', table_name='job_dependencies')
    op.drop_table('job_dependencies')
    # ALTER TABLE ... DROP COLUMN on both backends (SQLite >= 3.35), not a batch
    # rebuild: that rebuild recreated ix_jobs_claim without its DESC.
    for table in ("jobs", "dead_jobs"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN has_dependents")
