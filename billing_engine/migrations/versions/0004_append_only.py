"""append-only consents and events: the database refuses UPDATE and DELETE

Consents (proof that a customer agreed to be charged) and events (the audit trail) are
never modified or deleted; from here on that is the database's guarantee, not only the
code's. Row triggers refuse ``UPDATE`` and ``DELETE`` on ``events``, and on ``consents``
everything except the one change revocation makes: stamping ``revoked_at`` once, every other
column unchanged (PostgreSQL compares every column, present and future, through
``to_jsonb``; SQLite compares the columns the table has now). ``TRUNCATE`` (a deliberate
owner's operation, used by the test fixtures) fires no row trigger.

Revision ID: 0004_append_only
Revises: 0003_audit_trail
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_append_only'
down_revision = '0003_audit_trail'
branch_labels = None
depends_on = None

PG_UP = """
CREATE FUNCTION billing_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'consents' AND TG_OP = 'UPDATE' THEN  -- nested: plpgsql does not short-circuit
        IF (to_jsonb(NEW) - 'revoked_at') = (to_jsonb(OLD) - 'revoked_at')
           AND (OLD.revoked_at IS NULL OR NEW.revoked_at IS NOT DISTINCT FROM OLD.revoked_at) THEN
            RETURN NEW;  -- revocation: revoked_at stamped once, nothing else changed
        END IF;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation',
              HINT = 'consents and events are kept unchanged (retention: at least 3 years)';
END
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION billing_append_only();
CREATE TRIGGER consents_append_only BEFORE UPDATE OR DELETE ON consents
    FOR EACH ROW EXECUTE FUNCTION billing_append_only();
"""

PG_DOWN = """
DROP TRIGGER IF EXISTS consents_append_only ON consents;
DROP TRIGGER IF EXISTS events_append_only ON events;
DROP FUNCTION IF EXISTS billing_append_only();
"""

SQLITE_TRIGGERS = ('events_no_update', 'events_no_delete', 'consents_no_delete', 'consents_only_revoke')


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == 'postgresql':
        op.execute(PG_UP)
        return
    if conn.dialect.name != 'sqlite':
        return
    others = [c['name'] for c in sa.inspect(conn).get_columns('consents') if c['name'] != 'revoked_at']
    changed = ' OR '.join(f'NEW."{c}" IS NOT OLD."{c}"' for c in others)
    for table, verb in (('events', 'UPDATE'), ('events', 'DELETE'), ('consents', 'DELETE')):
        op.execute(f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                   f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} refused'); END")
    op.execute("CREATE TRIGGER consents_only_revoke BEFORE UPDATE ON consents "
               f"WHEN {changed} OR (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NOT OLD.revoked_at) "
               "BEGIN SELECT RAISE(ABORT, 'consents is append-only: UPDATE refused'); END")


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == 'postgresql':
        op.execute(PG_DOWN)
        return
    for name in SQLITE_TRIGGERS:
        op.execute(f'DROP TRIGGER IF EXISTS {name}')
