"""audit trail: events.recorded_at, the wall-clock time a row was written

``occurred_at`` stays the business time (``now`` / ``--at``); ``recorded_at`` is the real
clock, set by ``events.row`` / ``events.record``. Existing rows get their ``created_at``
(the best knowledge we have; it equals ``occurred_at`` for rows written so far).

Revision ID: 0003_audit_trail
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = '0003_audit_trail'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=True))
    op.execute('UPDATE events SET recorded_at = created_at WHERE recorded_at IS NULL')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.alter_column('recorded_at', existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('recorded_at')
