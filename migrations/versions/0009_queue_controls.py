"""queue controls: pause and a limit of running jobs per queue

Revision ID: 0009
Revises: 0008

A table of the queues someone paused or limited (`queue pause`, `queue limit`),
with the number of their jobs running now, which the claim takes and every end of a
run gives back (store/queues.py). It starts empty: queues without a row are
unaffected, and no job row changes.
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'queues',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('paused', sa.Boolean(), server_default='0', nullable=False),
        sa.Column('max_running', sa.Integer(), nullable=True),
        sa.Column('running', sa.Integer(), server_default='0', nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_queues')),
    )


def downgrade() -> None:
    op.drop_table('queues')
