"""a counter of jobs purged from the DLQ

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 22:45:00

`status` derives the number of completed jobs from counters instead of counting
the history: every job ever enqueued took a number from '_seq', and a job leaves
the database only when it is purged from the DLQ, which now counts in '_purged'.
On an existing database the jobs purged so far are exactly those missing from
both tables.
"""

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO config (key, value) SELECT '_purged', CAST("
        "CAST((SELECT value FROM config WHERE key = '_seq') AS BIGINT)"
        " - (SELECT count(*) FROM jobs) - (SELECT count(*) FROM dead_jobs) AS TEXT)"
    )


def downgrade() -> None:
    op.execute("DELETE FROM config WHERE key = '_purged'")
