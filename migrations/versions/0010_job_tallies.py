"""job tallies: counters of enqueued and ended jobs, per queue and minute

Revision ID: 0010
Revises: 0009

The counters of `queuectl metrics` (queuectl_jobs_enqueued_total,
queuectl_jobs_finished_total) and of its throughput per minute, written in the
transaction of each transition (store/tallies.py). It starts empty: counting begins
with this revision (the jobs already in the database are not counted back).
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

LIVE = sa.text("shard >= 0")


def upgrade() -> None:
    op.create_table(
        'job_tallies',
        sa.Column('minute', sa.DateTime(), nullable=False),
        sa.Column('queue', sa.String(length=64), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('shard', sa.Integer(), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('minute', 'queue', 'outcome', 'shard', name=op.f('pk_job_tallies')),
    )
    op.create_index('ix_job_tallies_live', 'job_tallies', ['queue', 'outcome'], unique=False, sqlite_where=LIVE,
                    postgresql_where=LIVE)


def downgrade() -> None:
    op.drop_index('ix_job_tallies_live', table_name='job_tallies', sqlite_where=LIVE, postgresql_where=LIVE)
    op.drop_table('job_tallies')
