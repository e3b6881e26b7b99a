"""rate_buckets: the gateway rate limit shared by every run-cycle worker

One row per limited account (``gateway/rate_limit.py: SharedTokenBucket``): the tokens
left and the wall-clock second they were counted at. Workers take tokens with one
``UPDATE ... RETURNING`` per small chunk, so all of them together stay under the
account's limit (Stripe's is per account, not per process).

Revision ID: 0005_rate_buckets
Revises: 0004_append_only
"""
import sqlalchemy as sa
from alembic import op

revision = '0005_rate_buckets'
down_revision = '0004_append_only'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'rate_buckets',
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('tokens', sa.Float(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('rate_buckets')
