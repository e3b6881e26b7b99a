"""report fold state: what the incremental fold needs to re-do only what changed
(docs/reports.md, "Rollups").

- report_failed_invoices.cancellation_kind / reason_group: the facts of the invoice's
  subscription that report_failed_days groups by, kept on the row (filled here from the
  subscriptions) so that a fold sees when they change and re-sums only those days;
- report_rollup_state.folded_to / folded_count: the highest event id folded in and how many
  events after the watermark were visible then -- a refresh inside the lag folds only the
  events after ``folded_to`` as long as that count is unchanged (any event committed late
  below it changes the count, and the whole lag window is folded again).

Revision ID: 0015_fold
Revises: 0014_rep
"""
import sqlalchemy as sa
from alembic import op

revision = '0015_fold'
down_revision = '0014_rep'
branch_labels = None
depends_on = None

_REASON_GROUP = ("CASE WHEN s.cancellation_reason = 'payment_failed' THEN 'payment_failed'"
                 " WHEN substr(s.cancellation_reason, 1, 13) = 'hard_decline:' THEN 'hard_decline'"
                 " WHEN s.cancellation_reason = 'dispute' THEN 'dispute'"
                 " WHEN s.cancellation_reason = 'card_expired' THEN 'card_expired' ELSE 'other' END")


def upgrade() -> None:
    with op.batch_alter_table('report_failed_invoices') as b:
        b.add_column(sa.Column('cancellation_kind', sa.String(length=20), nullable=True))
        b.add_column(sa.Column('reason_group', sa.String(length=20), nullable=True))
    op.execute("UPDATE report_failed_invoices SET"
               " cancellation_kind = (SELECT s.cancellation_kind FROM subscriptions s"
               "                      WHERE s.id = report_failed_invoices.subscription_id),"
               f" reason_group = (SELECT {_REASON_GROUP} FROM subscriptions s"
               "                 WHERE s.id = report_failed_invoices.subscription_id)")
    with op.batch_alter_table('report_rollup_state') as b:
        b.add_column(sa.Column('folded_to', sa.BigInteger(), nullable=True))
        b.add_column(sa.Column('folded_count', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('report_rollup_state') as b:
        b.drop_column('folded_count')
        b.drop_column('folded_to')
    with op.batch_alter_table('report_failed_invoices') as b:
        b.drop_column('reason_group')
        b.drop_column('cancellation_kind')
