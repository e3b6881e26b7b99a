"""report rollups: small tables the finance reports read instead of scanning every invoice
and payment attempt, refreshed incrementally from a watermark over the append-only events
table (docs/reports.md, "Rollups"). Nothing in the charge pipeline writes them.

- report_rollup_state: per rollup, the last event id folded in and when;
- report_off_price: subscriptions with a paid invoice billed at another plan, amount or
  currency than their plan's (a price or plan change) -- the per-invoice path of the MRR
  timelines; every other subscription is read off its own row;
- report_customer_first_paid: each customer's first payment ever (revenue: new customers);
- report_failed_invoices: one row per invoice with a failed payment: first failure,
  decline code, status, payment and what recovered it (recovery / funnel reports).

Revision ID: 0011_report_rollups
Revises: 0010_trust
"""
import sqlalchemy as sa
from alembic import op

revision = '0011_report_rollups'
down_revision = '0010_trust'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'report_rollup_state',
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('last_event_id', sa.BigInteger(), nullable=False),
        sa.Column('refreshed_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'report_off_price',
        sa.Column('subscription_id', sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint('subscription_id'),
    )
    op.create_table(
        'report_customer_first_paid',
        sa.Column('customer_id', sa.String(length=40), nullable=False),
        sa.Column('first_paid_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('customer_id'),
    )
    op.create_table(
        'report_failed_invoices',
        sa.Column('invoice_id', sa.String(length=40), nullable=False),
        sa.Column('subscription_id', sa.String(length=40), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('plan_id', sa.String(length=40), nullable=False),
        sa.Column('amount_minor', sa.BigInteger(), nullable=False),
        sa.Column('first_failed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('decline_code', sa.String(length=80), nullable=True),
        sa.Column('decline_kind', sa.String(length=10), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('paid_minor', sa.BigInteger(), nullable=False),
        sa.Column('method', sa.String(length=30), nullable=True),
        sa.Column('seconds', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('invoice_id'),
    )
    with op.batch_alter_table('report_failed_invoices', schema=None) as batch_op:
        batch_op.create_index('ix_report_failed_invoices_first_failed_at', ['first_failed_at'], unique=False)
        batch_op.create_index('ix_report_failed_invoices_subscription_id', ['subscription_id'], unique=False)


def downgrade() -> None:
    op.drop_table('report_failed_invoices')
    op.drop_table('report_customer_first_paid')
    op.drop_table('report_off_price')
    op.drop_table('report_rollup_state')
