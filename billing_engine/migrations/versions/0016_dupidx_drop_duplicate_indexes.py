"""drop two indexes that a unique constraint already provides

- ix_invoices_subscription_id (subscription_id): uq_invoices_subscription_period
  (subscription_id, period_start) leads with the same column;
- ix_payment_attempts_invoice_id (invoice_id): uq_attempts_invoice_number
  (invoice_id, attempt_number) does.

Every invoice and attempt is inserted and then updated (paid, settled) by a renewal, and
each write went into both indexes of a pair; the queries use the unique ones as well.

Revision ID: 0016_dupidx
Revises: 0015_fold
"""
from alembic import op

revision = '0016_dupidx'
down_revision = '0015_fold'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_invoices_subscription_id', table_name='invoices')
    op.drop_index('ix_payment_attempts_invoice_id', table_name='payment_attempts')


def downgrade() -> None:
    op.create_index('ix_payment_attempts_invoice_id', 'payment_attempts', ['invoice_id'])
    op.create_index('ix_invoices_subscription_id', 'invoices', ['subscription_id'])
