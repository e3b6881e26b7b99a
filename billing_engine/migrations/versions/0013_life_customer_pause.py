"""life: ``plans.customer_can_pause`` -- the customer may pause and resume a
subscription of this plan from the self-service page (default false: the merchant
opts in per plan; admins may always pause).

Revision ID: 0013_life
Revises: 0012_imports
"""
import sqlalchemy as sa
from alembic import op

revision = '0013_life'
down_revision = '0012_imports'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('plans', sa.Column('customer_can_pause', sa.Boolean(), nullable=False,
                                     server_default=sa.text('false')))


def downgrade() -> None:
    # plain DROP COLUMN (SQLite >= 3.35 too): a batch copy of plans would trip the foreign keys
    op.drop_column('plans', 'customer_can_pause')
