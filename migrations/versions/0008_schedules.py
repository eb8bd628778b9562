"""recurring schedules: a schedules table, and the schedule of each job

Revision ID: 0008
Revises: 0007

`schedule add` stores a cron expression, its time zone and the job spec it enqueues;
running supervisors fire its ticks (store/schedules.py). Each job a schedule enqueued
carries its name (jobs.schedule, dead_jobs.schedule), indexed with the job's state
for the overlap check of every tick.

Downgrade: the schedules and the jobs' schedule names are dropped (their jobs stay).
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

SCHEDULED = sa.text("schedule IS NOT NULL")
NOT_PAUSED = sa.text("paused_at IS NULL")


def upgrade() -> None:
    op.create_table(
        'schedules',
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('cron', sa.String(length=255), nullable=False),
        sa.Column('tz', sa.String(length=64), nullable=False),
        sa.Column('catch_up', sa.String(length=8), nullable=False),
        sa.Column('overlap', sa.String(length=8), nullable=False),
        sa.Column('spec', sa.Text(), nullable=False),
        sa.Column('next_run', sa.DateTime(), nullable=False),
        sa.Column('paused_at', sa.DateTime(), nullable=True),
        sa.Column('last_run', sa.DateTime(), nullable=True),
        sa.Column('last_job', sa.String(length=128), nullable=True),
        sa.Column('skipped', sa.Integer(), nullable=False),
        sa.Column('last_skipped', sa.DateTime(), nullable=True),
        sa.Column('missed', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_schedules')),
    )
    op.create_index('ix_schedules_due', 'schedules', ['next_run'], unique=False, sqlite_where=NOT_PAUSED, postgresql_where=NOT_PAUSED)
    for table in ("jobs", "dead_jobs"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column('schedule', sa.String(length=128), nullable=True))
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.create_index('ix_jobs_schedule', ['schedule', 'state'], unique=False, sqlite_where=SCHEDULED, postgresql_where=SCHEDULED)


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_index('ix_jobs_schedule', sqlite_where=SCHEDULED, postgresql_where=SCHEDULED)
    # ALTER TABLE ... DROP COLUMN on both backends (SQLite >= 3.35), not a batch
    # rebuild: that rebuild recreated ix_jobs_claim without its DESC.
    for table in ("jobs", "dead_jobs"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN schedule")
    op.drop_index('ix_schedules_due', table_name='schedules', sqlite_where=NOT_PAUSED, postgresql_where=NOT_PAUSED)
    op.drop_table('schedules')
