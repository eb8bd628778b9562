"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 19:27:25.320222

Timestamps are naive UTC DATETIME columns (queuectl.store.models.UTCDateTime adds the
zone back in Python). The config row '_seq' is the counter behind job ids and
enqueue order; it only grows, so ids are never reused, even after a purge.
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('config',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_config'))
    )
    op.create_table('dead_jobs',
    sa.Column('dead_at', sa.DateTime(), nullable=False),
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('command', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_retries', sa.Integer(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('queue', sa.String(length=64), nullable=False),
    sa.Column('run_at', sa.DateTime(), nullable=False),
    sa.Column('timeout', sa.Float(), nullable=True),
    sa.Column('cwd', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('output', sa.Text(), nullable=True),
    sa.Column('worker_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_jobs')),
    sa.UniqueConstraint('seq', name=op.f('uq_dead_jobs_seq'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('command', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_retries', sa.Integer(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('queue', sa.String(length=64), nullable=False),
    sa.Column('run_at', sa.DateTime(), nullable=False),
    sa.Column('timeout', sa.Float(), nullable=True),
    sa.Column('cwd', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('output', sa.Text(), nullable=True),
    sa.Column('worker_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('seq', name=op.f('uq_jobs_seq'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_claim', [sa.literal_column('priority DESC'), 'run_at', 'seq'], unique=False,
                              sqlite_where=sa.text("state IN ('pending', 'failed')"), postgresql_where=sa.text("state IN ('pending', 'failed')"))
        batch_op.create_index('ix_jobs_running', ['worker_id'], unique=False,
                              sqlite_where=sa.text("state = 'running'"), postgresql_where=sa.text("state = 'running'"))

    op.create_table('workers',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('pid_started', sa.Float(), nullable=False),
    sa.Column('supervisor_id', sa.String(length=64), nullable=True),
    sa.Column('supervisor_pid', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('job_id', sa.String(length=128), nullable=True),
    sa.Column('job_pgid', sa.Integer(), nullable=True),
    sa.Column('queues', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('last_heartbeat', sa.DateTime(), nullable=False),
    sa.Column('stopped_at', sa.DateTime(), nullable=True),
    sa.Column('processed', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('stop_request', sa.String(length=16), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers'))
    )
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.create_index('ix_workers_state', ['state'], unique=False)
    op.execute("INSERT INTO config (key, value) VALUES ('_seq', '0')")



def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_index('ix_workers_state')

    op.drop_table('workers')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_running', sqlite_where=sa.text("state = 'running'"), postgresql_where=sa.text("state = 'running'"))
        batch_op.drop_index('ix_jobs_claim', sqlite_where=sa.text("state IN ('pending', 'failed')"), postgresql_where=sa.text("state IN ('pending', 'failed')"))

    op.drop_table('jobs')
    op.drop_table('dead_jobs')
    op.drop_table('config')
