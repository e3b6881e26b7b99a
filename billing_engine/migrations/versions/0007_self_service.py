"""Self-service: gapless invoice numbers (``invoices.number``, one counter row per prefix
in ``invoice_number_series``) and ``card_updates`` (a card update started from the
customer's self-service page, with the consent given there).

Revision ID: 0007_self_service
Revises: 0006_webhooks
"""
import sqlalchemy as sa
from alembic import op

revision = '0007_self_service'
down_revision = '0006_webhooks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('number', sa.String(length=60), nullable=True))
        batch_op.create_unique_constraint('uq_invoices_number', ['number'])
    op.create_table(
        'invoice_number_series',
        sa.Column('prefix', sa.String(length=40), nullable=False),
        sa.Column('last_value', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('prefix'),
    )
    op.create_table(
        'card_updates',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('customer_id', sa.String(length=40), nullable=False),
        sa.Column('subscription_id', sa.String(length=40), nullable=False),
        sa.Column('gateway', sa.String(length=20), nullable=False),
        sa.Column('gateway_session_id', sa.String(length=255), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('ip_address', sa.String(length=64), nullable=False),
        sa.Column('user_agent', sa.String(length=1000), nullable=False),
        sa.Column('terms_version', sa.String(length=50), nullable=False),
        sa.Column('terms_text', sa.Text(), nullable=False),
        sa.Column('amount_minor', sa.BigInteger(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('interval', sa.String(length=10), nullable=False),
        sa.Column('interval_count', sa.Integer(), nullable=False),
        sa.Column('payment_method_id', sa.String(length=40), nullable=True),
        sa.Column('message', sa.String(length=500), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id']),
        sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id']),
        sa.ForeignKeyConstraint(['payment_method_id'], ['payment_methods.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('gateway_session_id'),
    )
    op.create_index('ix_card_updates_customer_id', 'card_updates', ['customer_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_card_updates_customer_id', table_name='card_updates')
    op.drop_table('card_updates')
    op.drop_table('invoice_number_series')
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.drop_constraint('uq_invoices_number', type_='unique')
        batch_op.drop_column('number')
