"""Consents and events are never modified or deleted: the database refuses it (migration
0004_append_only), on PostgreSQL and SQLite alike. The one change allowed is revocation:
stamping a consent's ``revoked_at`` once."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from billing_engine.db import transaction
from tests.factories import make_subscription


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as c:
        return int(c.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


@pytest.fixture
def filled(engine: Engine, now: datetime) -> Engine:
    with transaction(engine) as s:
        make_subscription(s, now)
    assert _count(engine, "events") > 0 and _count(engine, "consents") == 1
    return engine


@pytest.mark.parametrize("statement", [
    "UPDATE events SET actor = 'someone-else'",
    "UPDATE events SET occurred_at = recorded_at",
    "DELETE FROM events",
    "UPDATE consents SET amount_minor = amount_minor * 10",
    "UPDATE consents SET terms_text = 'other terms', revoked_at = accepted_at",
    "DELETE FROM consents",
])
def test_changing_or_deleting_audit_rows_is_refused_by_the_database(filled: Engine, statement: str) -> None:
    events_before, consents_before = _count(filled, "events"), _count(filled, "consents")
    with pytest.raises(DBAPIError, match="append-only"), filled.begin() as c:
        c.execute(text(statement))
    assert (_count(filled, "events"), _count(filled, "consents")) == (events_before, consents_before)


def test_a_consent_may_be_revoked_once_and_nothing_else(filled: Engine, now: datetime) -> None:
    with filled.begin() as c:
        c.execute(text("UPDATE consents SET revoked_at = :at"), {"at": now})
    with pytest.raises(DBAPIError, match="append-only"), filled.begin() as c:
        c.execute(text("UPDATE consents SET revoked_at = :at"), {"at": now + timedelta(days=1)})
    with filled.connect() as c:
        revoked = c.execute(text("SELECT revoked_at FROM consents")).scalar_one()
    assert revoked is not None
