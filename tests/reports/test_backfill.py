"""Migration 0002 backfills subscriptions.activated_at / mrr_minor from the invoices to exactly
what payments._invoice_paid maintains, and the reports use them."""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from billing_engine.db import downgrade, upgrade
from billing_engine.reports import reconcile
from billing_engine.reports.sql import subscriptions
from tests.reports.scenario import RANGE, build


def _facts(engine: Engine) -> dict[str, tuple[object, object]]:
    with engine.connect() as c:
        rows = c.execute(select(subscriptions.c.id, subscriptions.c.activated_at, subscriptions.c.mrr_minor))
        return {r.id: (r.activated_at, r.mrr_minor) for r in rows}


def test_backfill_matches_what_the_engine_maintains(engine: Engine) -> None:
    build(engine)
    maintained = _facts(engine)
    assert sum(1 for a, m in maintained.values() if a is not None and m is not None) >= 15
    with engine.begin() as c:
        c.execute(text("UPDATE subscriptions SET activated_at = NULL, mrr_minor = NULL"))
    downgrade(engine, "0001")
    upgrade(engine)
    assert _facts(engine) == maintained
    assert reconcile(engine, *RANGE) == []
