"""trust: reminded_at (a charge waits for its reminder), plans.receipts, customers.locale

``subscriptions.reminded_at`` is when the reminder for ``reminded_period_index`` was queued
(a renewal is charged only once it is at least the plan's reminder lead old); backfilled
from the reminder notifications already queued. ``plans.receipts`` (each | off | monthly)
and ``customers.locale`` (None: the default from settings); an index on
``subscriptions.created_at`` (yearly summaries on sign-up anniversaries).

Revision ID: 0010_trust
Revises: 0009_lifecycle_b
"""
import sqlalchemy as sa
from alembic import op

revision = '0010_trust'
down_revision = '0009_lifecycle_b'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reminded_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_subscriptions_created', ['created_at'], unique=False)
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('receipts', sa.String(length=10), nullable=False, server_default='each'))
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('locale', sa.String(length=20), nullable=True))
    # one set-based statement: the queued reminder of the period already reminded
    op.execute(sa.text(
        "UPDATE subscriptions SET reminded_at = (SELECT MIN(n.created_at) FROM notifications n "
        "WHERE n.dedupe_key = 'reminder:' || subscriptions.id || ':' || CAST(subscriptions.reminded_period_index AS TEXT)) "
        "WHERE reminded_period_index IS NOT NULL"))


def downgrade() -> None:
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch copy of these tables
    # would drop tables other rows still reference
    op.drop_column('customers', 'locale')
    op.drop_column('plans', 'receipts')
    op.drop_index('ix_subscriptions_created', table_name='subscriptions')
    op.drop_column('subscriptions', 'reminded_at')
