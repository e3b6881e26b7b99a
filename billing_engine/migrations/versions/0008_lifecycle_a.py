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
Revises: 0005_rate_buckets
"""
import sqlalchemy as sa
from alembic import op

revision = '0008_lifecycle_a'
down_revision = '0005_rate_buckets'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('metadata_json', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('default_payment_method_id', sa.String(length=40), nullable=True))
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('metadata_json', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('guarantee_days', sa.Integer(), nullable=True))
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('metadata_json', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('reactivated_from', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('scheduled_plan_id', sa.String(length=40), nullable=True))
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=20), server_default='period', nullable=False))
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('guarantee', sa.Boolean(), server_default=sa.text('false'), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.drop_column('guarantee')
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.drop_column('kind')
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_column('scheduled_plan_id')
        batch_op.drop_column('reactivated_from')
        batch_op.drop_column('metadata_json')
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_column('guarantee_days')
        batch_op.drop_column('metadata_json')
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_column('default_payment_method_id')
        batch_op.drop_column('metadata_json')
