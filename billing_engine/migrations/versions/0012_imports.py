"""imports: external ids on imported objects, a per-subscription cut-over instant, and
the progress of an import from another biller

* ``external_id`` (unique) on plans, customers, payment_methods, consents and
  subscriptions: where an imported object came from (``stripe:sub_...``, ``csv:...``);
  a second import finds it and creates nothing.
* ``subscriptions.charge_from``: the run-cycle charges nothing before it (the previous
  biller keeps charging until the cut-over).
* ``import_progress``: the cursor of a running import (resumed after a crash).

Consents are append-only (0004 triggers): columns are added with ADD COLUMN, never by
recreating the table, so the triggers stay.

Revision ID: 0012_imports
Revises: 0011_report_rollups
"""
import sqlalchemy as sa
from alembic import op

revision = '0012_imports'
down_revision = '0011_report_rollups'
branch_labels = None
depends_on = None

TABLES = ('plans', 'customers', 'payment_methods', 'consents', 'subscriptions')


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column('external_id', sa.String(length=200), nullable=True))
        op.create_index(f'ix_{table}_external_id', table, ['external_id'], unique=True)
    op.add_column('subscriptions', sa.Column('charge_from', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'import_progress',
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('cursor', sa.String(length=200), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('created', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('key'),
    )


def downgrade() -> None:
    # plain DROP COLUMN (SQLite >= 3.35 too): a batch copy of these tables would trip the
    # foreign keys that point at them and drop the append-only triggers on consents
    op.drop_table('import_progress')
    op.drop_column('subscriptions', 'charge_from')
    for table in TABLES:
        op.drop_index(f'ix_{table}_external_id', table_name=table)
        op.drop_column(table, 'external_id')
