"""webhooks: outgoing webhook endpoints and their delivery outbox; updated_at on customers
and invoices (subscriptions had it), indexed with subscriptions.updated_at for the
"changed since" filters of the lists

``webhook_endpoints`` holds each merchant URL, its Standard Webhooks secret (and the
previous one during a rotation's grace period) and its cursor over ``events``;
``webhook_deliveries`` one row per (endpoint, event) to POST, with its retries. Existing
customers and invoices get ``updated_at = created_at``.

Revision ID: 0006_webhooks
Revises: 0005_rate_buckets
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_webhooks'
down_revision = '0005_rate_buckets'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'webhook_endpoints',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('url', sa.String(length=2000), nullable=False),
        sa.Column('description', sa.String(length=200), nullable=False),
        sa.Column('event_types', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('secret', sa.String(length=100), nullable=False),
        sa.Column('previous_secret', sa.String(length=100), nullable=True),
        sa.Column('previous_secret_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('cursor_event_id', sa.BigInteger(), nullable=False),
        sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True),
        sa.Column('disabled_reason', sa.String(length=500), nullable=True),
        sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('dedupe_key', sa.String(length=200), nullable=False),
        sa.Column('endpoint_id', sa.String(length=40), nullable=False),
        sa.Column('event_id', sa.BigInteger(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.String(length=1000), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('dedupe_key'),
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_deliveries_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_webhook_deliveries_endpoint_event', ['endpoint_id', 'event_id'], unique=False)
    for table in ('customers', 'invoices'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
        op.execute(f"UPDATE {table} SET updated_at = created_at")
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('updated_at', existing_type=sa.DateTime(timezone=True), nullable=False)
            batch_op.create_index(f'ix_{table}_updated_at', ['updated_at'], unique=False)
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.create_index('ix_subscriptions_updated', ['updated_at'], unique=False)


def downgrade() -> None:
    # plain DROP INDEX / DROP COLUMN (SQLite >= 3.35 too): a batch copy of invoices or
    # customers trips the foreign keys that point at them
    op.drop_index('ix_subscriptions_updated', table_name='subscriptions')
    for table in ('invoices', 'customers'):
        op.drop_index(f'ix_{table}_updated_at', table_name=table)
        op.drop_column(table, 'updated_at')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_endpoints')
