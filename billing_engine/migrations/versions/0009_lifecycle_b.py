"""lifecycle pricing: price changes with notice, pause / resume, coupons

* ``price_changes``: a plan's new price, announced with a notice period (pricing.py);
* ``coupons`` / ``coupon_redemptions``: discounts and where they apply (coupons.py);
  ``invoices.discount_minor`` / ``redemption_id``: the discount of each invoice (gross =
  amount_minor + discount_minor); ``plans.max_discount_percent``: the per-plan cap;
* ``subscription_pauses`` and ``subscriptions.paused_at`` / ``resumes_at`` /
  ``pause_at_period_end`` / ``anchor_period_index`` (pauses.py; status ``paused``).

Revision ID: 0009_lifecycle_b
Revises: 0008_lifecycle_a
"""
import sqlalchemy as sa
from alembic import op

revision = '0009_lifecycle_b'
down_revision = '0008_lifecycle_a'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'price_changes',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('plan_id', sa.String(length=40), nullable=False),
        sa.Column('old_amount_minor', sa.BigInteger(), nullable=False),
        sa.Column('amount_minor', sa.BigInteger(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('notice_days', sa.Integer(), nullable=False),
        sa.Column('announced_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('effective_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('subscribers_notified', sa.Integer(), nullable=False),
        sa.Column('actor', sa.String(length=80), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('amount_minor >= 0', name='ck_price_changes_amount_nonneg'),
        sa.ForeignKeyConstraint(['plan_id'], ['plans.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_price_changes_plan_id', 'price_changes', ['plan_id'], unique=False)
    op.create_table(
        'coupons',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('code', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('percent_off', sa.Integer(), nullable=True),
        sa.Column('amount_off_minor', sa.BigInteger(), nullable=True),
        sa.Column('currency', sa.String(length=3), nullable=True),
        sa.Column('duration', sa.String(length=10), nullable=False),
        sa.Column('duration_periods', sa.Integer(), nullable=True),
        sa.Column('plan_codes', sa.String(length=2000), nullable=True),
        sa.Column('max_redemptions', sa.Integer(), nullable=True),
        sa.Column('redeem_by', sa.DateTime(timezone=True), nullable=True),
        sa.Column('once_per_customer', sa.Boolean(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('times_redeemed', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('percent','amount')", name='ck_coupons_kind'),
        sa.CheckConstraint("duration IN ('once','repeating','forever')", name='ck_coupons_duration'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('code'),
    )
    op.create_table(
        'coupon_redemptions',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('coupon_id', sa.String(length=40), nullable=False),
        sa.Column('subscription_id', sa.String(length=40), nullable=False),
        sa.Column('customer_id', sa.String(length=40), nullable=False),
        sa.Column('redeemed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('actor', sa.String(length=80), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['coupon_id'], ['coupons.id']),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id']),
        sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_coupon_redemptions_coupon_id', 'coupon_redemptions', ['coupon_id'], unique=False)
    op.create_index('ix_coupon_redemptions_subscription_id', 'coupon_redemptions', ['subscription_id'], unique=False)
    op.create_index('ix_coupon_redemptions_customer_id', 'coupon_redemptions', ['customer_id'], unique=False)
    op.create_table(
        'subscription_pauses',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('subscription_id', sa.String(length=40), nullable=False),
        sa.Column('plan_id', sa.String(length=40), nullable=False),
        sa.Column('paused_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('resumes_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('resumed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('actor', sa.String(length=80), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['plan_id'], ['plans.id']),
        sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_subscription_pauses_subscription_id', 'subscription_pauses', ['subscription_id'], unique=False)
    op.create_index('ix_subscription_pauses_period', 'subscription_pauses', ['paused_at', 'resumed_at'], unique=False)
    # plain ADD COLUMN (no batch copy: other tables reference these)
    op.add_column('plans', sa.Column('max_discount_percent', sa.Integer(), nullable=True))
    op.add_column('invoices', sa.Column('discount_minor', sa.BigInteger(), nullable=False, server_default='0'))
    op.add_column('invoices', sa.Column('redemption_id', sa.String(length=40), nullable=True))
    op.create_index('ix_invoices_redemption_id', 'invoices', ['redemption_id'], unique=False)
    op.add_column('subscriptions', sa.Column('anchor_period_index', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('subscriptions', sa.Column('paused_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('subscriptions', sa.Column('resumes_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('subscriptions', sa.Column('pause_at_period_end', sa.Boolean(), nullable=False,
                                             server_default=sa.text('false')))
    op.create_index('ix_subscriptions_resume', 'subscriptions', ['status', 'resumes_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_subscriptions_resume', table_name='subscriptions')
    for col in ('pause_at_period_end', 'resumes_at', 'paused_at', 'anchor_period_index'):
        op.drop_column('subscriptions', col)
    op.drop_index('ix_invoices_redemption_id', table_name='invoices')
    op.drop_column('invoices', 'redemption_id')
    op.drop_column('invoices', 'discount_minor')
    op.drop_column('plans', 'max_discount_percent')
    op.drop_table('subscription_pauses')
    op.drop_table('coupon_redemptions')
    op.drop_table('coupons')
    op.drop_table('price_changes')
