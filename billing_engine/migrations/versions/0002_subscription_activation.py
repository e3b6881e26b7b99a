"""subscription activation facts: activated_at, mrr_minor (+ backfill from the invoices)

``subscriptions.activated_at`` = the smallest ``paid_at`` of the subscription's paid invoices;
``subscriptions.mrr_minor`` = ``periods.monthly_amount`` of its last counted paid invoice (the
paid invoice with the latest ``period_start`` among those paid no later than ``ended_at``),
NULL when there is none. From now on ``payments._invoice_paid`` maintains both.

The backfill is two set-based statements (no per-row Python): the distinct (plan, amount)
pairs of the paid invoices are normalised in Python (the one rounding function) into a
scratch table, then one ``UPDATE ... FROM`` a ``GROUP BY subscription_id`` over the paid
invoices fills both columns. Works on SQLite (>= 3.33) and PostgreSQL.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

from billing_engine.periods import Interval, monthly_amount

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

SCRATCH = '_backfill_plan_mrr'


def upgrade() -> None:
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('mrr_minor', sa.BigInteger(), nullable=True))
        batch_op.create_index('ix_subscriptions_activated', ['activated_at', 'ended_at'], unique=False)
    _backfill()


def _backfill() -> None:
    conn = op.get_bind()
    pg = conn.dialect.name == 'postgresql'
    if pg:
        conn.exec_driver_sql("SET LOCAL work_mem = '512MB'")
        conn.exec_driver_sql("SET LOCAL jit = off")
    plans = {r.id: r for r in conn.execute(sa.text('SELECT id, interval, interval_count FROM plans'))}
    pairs = conn.execute(sa.text(
        "SELECT DISTINCT plan_id, amount_minor FROM invoices WHERE status = 'paid'")).all()
    if not pairs:
        return  # nothing paid yet
    scratch = op.create_table(
        SCRATCH,
        sa.Column('plan_id', sa.String(length=40), nullable=False),
        sa.Column('amount_minor', sa.BigInteger(), nullable=False),
        sa.Column('mrr_minor', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('plan_id', 'amount_minor'),
    )
    op.bulk_insert(scratch, [
        {'plan_id': pid, 'amount_minor': int(amount),
         'mrr_minor': monthly_amount(int(amount), Interval(plans[pid].interval), int(plans[pid].interval_count))}
        for pid, amount in pairs
    ])
    # first payment of every subscription, and the period_start of its last payment that
    # counts (paid no later than the end); then the (plan, amount) billed for that period
    conn.execute(sa.text(f"""
        UPDATE subscriptions SET activated_at = f.first_paid_at, mrr_minor = m.mrr_minor
        FROM (
            SELECT i.subscription_id,
                   MIN(i.paid_at) AS first_paid_at,
                   MAX(CASE WHEN s.ended_at IS NULL OR i.paid_at <= s.ended_at THEN i.period_start END)
                       AS last_start
            FROM invoices i JOIN subscriptions s ON s.id = i.subscription_id
            WHERE i.status = 'paid'
            GROUP BY i.subscription_id
        ) f
        LEFT JOIN invoices li ON li.subscription_id = f.subscription_id AND li.period_start = f.last_start
        LEFT JOIN {SCRATCH} m ON m.plan_id = li.plan_id AND m.amount_minor = li.amount_minor
        WHERE subscriptions.id = f.subscription_id
    """))
    op.drop_table(SCRATCH)
    if pg:
        conn.exec_driver_sql("ANALYZE subscriptions")


def downgrade() -> None:
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch "move and copy" of a table
    # other tables reference fails with SQLite's foreign keys on
    op.drop_index('ix_subscriptions_activated', table_name='subscriptions')
    op.drop_column('subscriptions', 'mrr_minor')
    op.drop_column('subscriptions', 'activated_at')
