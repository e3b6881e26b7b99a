"""lifecycle (first charge, plan changes, reactivation, edits, money-back guarantee)

- ``customers.metadata_json``, ``plans.metadata_json``, ``subscriptions.metadata_json``:
  merchant key-value pairs (JSON object; limits in ``billing_engine/metadata.py``);
- ``customers.default_payment_method_id``: the card new subscriptions use by default;
- ``plans.guarantee_days``: money-back guarantee window (days after the first payment);
- ``subscriptions.reactivated_from``: the earlier, canceled subscription taken up again;
- ``subscriptions.scheduled_plan_id``: a plan change that takes effect at period end;
- ``invoices.kind``: ``period`` (default, every existing invoice) or ``proration``;
- ``refunds.guarantee``: granted under the plan's money-back guarantee.

Only added columns (nullable, or with a server default): no rewrite of existing rows.

Revision ID: 0008_lifecycle_a
Revises: 0007_self_service
"""
import sqlalchemy as sa
from alembic import op

revision = '0008_lifecycle_a'
down_revision = '0007_self_service'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ALTER TABLE ... ADD COLUMN on both databases (no table rewrite)
    op.add_column('customers', sa.Column('metadata_json', sa.Text(), nullable=True))
    op.add_column('customers', sa.Column('default_payment_method_id', sa.String(length=40), nullable=True))
    op.add_column('plans', sa.Column('metadata_json', sa.Text(), nullable=True))
    op.add_column('plans', sa.Column('guarantee_days', sa.Integer(), nullable=True))
    op.add_column('subscriptions', sa.Column('metadata_json', sa.Text(), nullable=True))
    op.add_column('subscriptions', sa.Column('reactivated_from', sa.String(length=40), nullable=True))
    op.add_column('subscriptions', sa.Column('scheduled_plan_id', sa.String(length=40), nullable=True))
    op.add_column('invoices', sa.Column('kind', sa.String(length=20), server_default='period', nullable=False))
    op.add_column('refunds', sa.Column('guarantee', sa.Boolean(), server_default=sa.text('false'), nullable=False))


def downgrade() -> None:
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch "move and copy" of a table
    # other tables reference fails with SQLite's foreign keys on
    op.drop_column('refunds', 'guarantee')
    op.drop_column('invoices', 'kind')
    op.drop_column('subscriptions', 'scheduled_plan_id')
    op.drop_column('subscriptions', 'reactivated_from')
    op.drop_column('subscriptions', 'metadata_json')
    op.drop_column('plans', 'guarantee_days')
    op.drop_column('plans', 'metadata_json')
    op.drop_column('customers', 'default_payment_method_id')
    op.drop_column('customers', 'metadata_json')
