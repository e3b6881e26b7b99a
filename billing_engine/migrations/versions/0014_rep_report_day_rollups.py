"""report day rollups: the report rollups summed per UTC day, so that a report over a
day-aligned range reads a few thousand rows instead of every subscription, invoice or
failed payment (docs/reports.md, "Rollups"). Folded from the same events watermark as
0011's rollups; nothing in the charge pipeline writes them.

- report_sub_events: every subscriber event (activation, price change, churn, ended
  unpaid) of each subscription, with its day and whether the subscription was activated
  in the same calendar day / week / month / quarter / year (bit mask ``act_same``);
- report_sub_event_days: those events counted per day and every other column (churn, MRR,
  retention);
- report_paid_days: paid invoices per day of payment, currency and plan: count, amount
  paid, discounts, paid after a failed attempt (revenue, churn's "recovered");
- report_paying_runs / report_paying_months: runs of consecutive months in which a customer
  paid (per currency and plan, and per currency), counted per month (revenue's paying and
  new customers for month-aligned ranges);
- report_customer_cohorts / report_active_runs / report_cohort_cells: each customer's cohort,
  the runs of months they were a subscriber, and per cohort the customers, the runs starting /
  ending per month and the money paid per day (cohorts, for month-aligned ranges);
- report_failed_days: report_failed_invoices summed per day of the first failure and the
  facts recovery / funnel group by.

The tables start empty; the first report (or ``billing report refresh``) rebuilds every
rollup (the 0011 watermark is reset here so that it does).

Revision ID: 0014_rep
Revises: 0013_life
"""
import sqlalchemy as sa
from alembic import op

revision = '0014_rep'
down_revision = '0013_life'
branch_labels = None
depends_on = None

_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def _event_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('plan_id', sa.String(length=40), nullable=False),
        sa.Column('cancellation_kind', sa.String(length=20), nullable=True),
        sa.Column('reason_group', sa.String(length=20), nullable=True),
        sa.Column('mrr_minor', sa.BigInteger(), nullable=True),
        sa.Column('inv_plan_id', sa.String(length=40), nullable=True),
        sa.Column('amount_minor', sa.BigInteger(), nullable=True),
        sa.Column('prev_plan_id', sa.String(length=40), nullable=True),
        sa.Column('prev_amount', sa.BigInteger(), nullable=True),
        sa.Column('act_same', sa.Integer(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        'report_sub_events',
        sa.Column('subscription_id', sa.String(length=40), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('day', sa.DateTime(timezone=True), nullable=False),
        *_event_columns(),
        sa.PrimaryKeyConstraint('subscription_id', 'seq'),
    )
    op.create_index('ix_report_sub_events_day', 'report_sub_events', ['day'], unique=False)
    op.create_table(
        'report_sub_event_days',
        sa.Column('id', _BIGINT_ID, nullable=False),
        sa.Column('day', sa.DateTime(timezone=True), nullable=False),
        *_event_columns(),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_report_sub_event_days_day', 'report_sub_event_days', ['day'], unique=False)
    op.create_table(
        'report_paid_days',
        sa.Column('day', sa.DateTime(timezone=True), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('plan_id', sa.String(length=40), nullable=False),
        sa.Column('invoices_paid', sa.BigInteger(), nullable=False),
        sa.Column('gross_minor', sa.BigInteger(), nullable=False),
        sa.Column('discounts_minor', sa.BigInteger(), nullable=False),
        sa.Column('recovered_invoices', sa.BigInteger(), nullable=False),
        sa.Column('recovered_minor', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'currency', 'plan_id'),
    )
    op.create_table(
        'report_failed_days',
        sa.Column('id', _BIGINT_ID, nullable=False),
        sa.Column('day', sa.DateTime(timezone=True), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('plan_id', sa.String(length=40), nullable=False),
        sa.Column('decline_code', sa.String(length=80), nullable=True),
        sa.Column('decline_kind', sa.String(length=10), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('method', sa.String(length=30), nullable=True),
        sa.Column('paid_day', sa.DateTime(timezone=True), nullable=True),
        sa.Column('closed_day', sa.DateTime(timezone=True), nullable=True),
        sa.Column('cancellation_kind', sa.String(length=20), nullable=True),
        sa.Column('reason_group', sa.String(length=20), nullable=True),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.Column('amount_minor', sa.BigInteger(), nullable=False),
        sa.Column('paid_minor', sa.BigInteger(), nullable=False),
        sa.Column('seconds', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_report_failed_days_day', 'report_failed_days', ['day'], unique=False)
    op.create_table(
        'report_paying_runs',
        sa.Column('customer_id', sa.String(length=40), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('plan_id', sa.String(length=40), nullable=False),
        sa.Column('first_month', sa.Integer(), nullable=False),
        sa.Column('last_month', sa.Integer(), nullable=False),
        sa.Column('is_new', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('customer_id', 'currency', 'plan_id', 'first_month'),
    )
    op.create_index('ix_report_paying_runs_first_month', 'report_paying_runs', ['first_month'], unique=False)
    op.create_index('ix_report_paying_runs_last_month', 'report_paying_runs', ['last_month'], unique=False)
    op.create_table(
        'report_paying_months',
        sa.Column('month', sa.Integer(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('plan_id', sa.String(length=40), nullable=False),
        sa.Column('starts', sa.BigInteger(), nullable=False),
        sa.Column('ends', sa.BigInteger(), nullable=False),
        sa.Column('new', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('month', 'currency', 'plan_id'),
    )
    op.create_table(
        'report_customer_cohorts',
        sa.Column('customer_id', sa.String(length=40), nullable=False),
        sa.Column('cohort_month', sa.Integer(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('plan_id', sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint('customer_id'),
    )
    op.create_index('ix_report_customer_cohorts_cohort_month', 'report_customer_cohorts', ['cohort_month'],
                    unique=False)
    op.create_table(
        'report_active_runs',
        sa.Column('customer_id', sa.String(length=40), nullable=False),
        sa.Column('first_month', sa.Integer(), nullable=False),
        sa.Column('last_month', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('customer_id', 'first_month'),
    )
    op.create_index('ix_report_active_runs_first_month', 'report_active_runs', ['first_month'], unique=False)
    op.create_index('ix_report_active_runs_last_month', 'report_active_runs', ['last_month'], unique=False)
    op.create_table(
        'report_cohort_cells',
        sa.Column('id', _BIGINT_ID, nullable=False),
        sa.Column('cohort_month', sa.Integer(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('plan_id', sa.String(length=40), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('month', sa.Integer(), nullable=False),
        sa.Column('day', sa.DateTime(timezone=True), nullable=True),
        sa.Column('value', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_report_cohort_cells_cohort_month', 'report_cohort_cells', ['cohort_month'], unique=False)
    op.create_index('ix_report_cohort_cells_month', 'report_cohort_cells', ['month'], unique=False)
    op.create_index('ix_report_cohort_cells_day', 'report_cohort_cells', ['day'], unique=False)
    # the new rollups start empty: make the next refresh rebuild every rollup
    op.execute("DELETE FROM report_rollup_state")


def downgrade() -> None:
    op.drop_table('report_cohort_cells')
    op.drop_table('report_active_runs')
    op.drop_table('report_customer_cohorts')
    op.drop_table('report_paying_months')
    op.drop_index('ix_report_paying_runs_last_month', table_name='report_paying_runs')
    op.drop_index('ix_report_paying_runs_first_month', table_name='report_paying_runs')
    op.drop_table('report_paying_runs')
    op.drop_index('ix_report_failed_days_day', table_name='report_failed_days')
    op.drop_table('report_failed_days')
    op.drop_table('report_paid_days')
    op.drop_index('ix_report_sub_event_days_day', table_name='report_sub_event_days')
    op.drop_table('report_sub_event_days')
    op.drop_index('ix_report_sub_events_day', table_name='report_sub_events')
    op.drop_table('report_sub_events')
