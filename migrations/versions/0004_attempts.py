"""attempt history: an attempts table, a run count and the size of each output

Revision ID: 0004
Revises: 0003

Every attempt of a job (completed, failed, lost with its worker, stopped, cancelled)
becomes a row of `attempts` when it ends: its worker and host, start and end, exit
code, error and output. jobs.runs counts them (the number of the next one is
runs + 1); jobs.output_size is how many characters the output had in all, so a cut
output says how much was cut, and `logs --follow` can tell what is new.

Upgrade: each finished job gets one attempt row for its last attempt, from what the
job row kept (earlier attempts were never recorded); its runs count is 1.
Downgrade: the table and both columns are dropped (the history is lost).
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'attempts',
        sa.Column('job_id', sa.String(length=128), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('worker_id', sa.String(length=64), nullable=True),
        sa.Column('host', sa.String(length=255), nullable=True),
        sa.Column('started_at', sa.DateTime(), nullable=True),
        sa.Column('finished_at', sa.DateTime(), nullable=False),
        sa.Column('exit_code', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('output', sa.Text(), nullable=True),
        sa.Column('output_size', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('job_id', 'number', name=op.f('pk_attempts')),
    )
    for table in ("jobs", "dead_jobs"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column('output_size', sa.BigInteger(), nullable=True))
            batch_op.add_column(sa.Column('runs', sa.Integer(), server_default='0', nullable=False))
        # The last attempt of every finished job, as the job row kept it (a completed
        # attempt's output stays the job's: see models.ATTEMPTS.c.output).
        op.execute(
            f"INSERT INTO attempts (job_id, number, worker_id, host, started_at, finished_at, exit_code, error, output, output_size)"
            f" SELECT j.id, 1, j.worker_id, (SELECT w.host FROM workers w WHERE w.id = j.worker_id), j.started_at, j.finished_at,"
            f" j.exit_code, j.last_error, CASE WHEN j.state = 'completed' THEN NULL ELSE j.output END, LENGTH(j.output)"
            f" FROM {table} j WHERE j.finished_at IS NOT NULL AND j.started_at IS NOT NULL"
        )
        op.execute(f"UPDATE {table} SET runs = 1, output_size = LENGTH(output) WHERE finished_at IS NOT NULL AND started_at IS NOT NULL")


def downgrade() -> None:
    for table in ("jobs", "dead_jobs"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column('runs')
            batch_op.drop_column('output_size')
    if op.get_bind().dialect.name == "sqlite":
        # The batch rebuild above recreated the jobs indexes from reflection, which
        # loses the expression `priority DESC`: put the claim index back as 0001 made it.
        op.execute("DROP INDEX ix_jobs_claim")
        op.execute("CREATE INDEX ix_jobs_claim ON jobs (priority DESC, run_at, seq) WHERE state IN ('pending', 'failed')")
    op.drop_table('attempts')
