"""rate_buckets: the gateway rate limit shared by every run-cycle worker; an index on
payment_attempts replaced by a partial index of the unresolved attempts only: the status
index kept an entry for every attempt ever pending, and the run-cycle's per-batch look-up
walked all of them (dead ones included) — a cost that grew with every renewal

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
    with op.batch_alter_table('payment_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_attempts_status')
        batch_op.create_index('ix_attempts_unresolved', ['subscription_id'], unique=False,
                              postgresql_where=sa.text("status IN ('pending', 'unknown')"),
                              sqlite_where=sa.text("status IN ('pending', 'unknown')"))


def downgrade() -> None:
    with op.batch_alter_table('payment_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_attempts_unresolved')
        batch_op.create_index('ix_attempts_status', ['status'], unique=False)
    op.drop_table('rate_buckets')
