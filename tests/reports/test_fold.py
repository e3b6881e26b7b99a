"""The incremental fold re-does only what changed (reports/fold.py) and still never misses a
change: every rollup equals its recomputation from the raw tables after folds that touch
cells far from the day folded -- a late refund of an old invoice, a dispute, a customer who
comes back months later, a cancellation scheduled during dunning (the failed invoices'
cancellation facts), two currencies -- all folded while their events are still inside the
refresh lag; a refresh repeated inside the lag writes nothing, and an event that becomes
visible late below the last event folded is still folded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine

from billing_engine import cancellations, refunds
from billing_engine.db import transaction
from billing_engine.models import Invoice
from billing_engine.reports import fold, reconcile
from billing_engine.reports.rollups import differences, refresh, state_table
from tests.reports.paths import rollup_vs_raw
from tests.reports.scenario import World, _first_paid, build

RANGE = (datetime(2025, 11, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))


@contextmanager
def writes(engine: Engine) -> Iterator[list[str]]:
    """The INSERT / UPDATE / DELETE statements on report tables executed meanwhile."""
    seen: list[str] = []

    def on(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split()
        if words and words[0].upper() in ("INSERT", "UPDATE", "DELETE") and " report_" in f" {statement}":
            target = statement.split()[2]
            if target.startswith("report_") and not target.startswith("report_fold_"):
                seen.append(" ".join(words[:3]))

    event.listen(engine, "before_cursor_execute", on)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on)


def _refund_first_invoice(engine: Engine, w: World, label: str, amount: int | None, now: datetime) -> None:
    with transaction(engine) as s:
        inv = s.exec(_first_paid(w.subs[label])).first()
        assert inv is not None
        inv_id = inv.id
    refunds.create(engine, w.gateway, invoice_id=inv_id, amount_minor=amount, reason="requested_by_customer", now=now)


@pytest.mark.parametrize("small", [fold.SMALL, 0], ids=["diff-in-python", "diff-in-sql"])
def test_folds_inside_the_lag_touch_every_changed_cell_and_repeat_nothing(engine: Engine, small: int,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fold, "SMALL", small)  # 0: every difference taken in SQL (EXCEPT into scratch tables)
    folds: list[int] = []

    def every_few_days(w: World, now: datetime) -> None:
        day = (now - datetime(2025, 11, 1, 6, tzinfo=UTC)).days
        if day == 52:  # R1 (recovered by dunning: a failed invoice) schedules its end: its failed
            # invoice's cancellation facts change today, its failure day is weeks back
            with transaction(engine) as s:
                cancellations.cancel(s, w.sub(s, "R1"), kind="voluntary", reason="too_expensive", now=now)
        if day == 80:  # a late refund of a JPY invoice of the first month
            _refund_first_invoice(engine, w, "J2", 700, now)
        if day % 9 == 0:
            # the default lag: every event of this test is younger than it, so the watermark
            # stays at the first build and each refresh folds only what the last one did not
            r = refresh(engine)
            if r.rebuilt:
                return
            folds.append(r.folded_to - r.folded_after)
            with writes(engine) as again:
                r2 = refresh(engine)
            assert (r2.folded_after, r2.folded_to) == (r.folded_to, r.folded_to)  # nothing new to fold
            assert again == []  # ... and nothing written
            if day % 27 == 0:
                assert differences(engine) == []

    build(engine, days=95, on_day=every_few_days)
    assert len(folds) >= 8 and all(n > 0 for n in folds)
    with engine.connect() as c:  # the watermark never moved: every fold above happened inside the lag
        st = c.execute(select(state_table)).one()
        assert st.folded_to > st.last_event_id
    refresh(engine)
    assert differences(engine) == []
    assert reconcile(engine, *RANGE) == []
    assert rollup_vs_raw(engine, *RANGE) == []


def test_an_event_committed_late_below_the_last_event_folded_is_still_folded(engine: Engine) -> None:
    build(engine, days=40)
    refresh(engine, lag=timedelta(0))  # builds; the watermark covers everything so far
    with engine.connect() as c:
        top = int(c.execute(text("SELECT max(id) FROM events")).scalar_one())
        paid = c.execute(select(Invoice.id, Invoice.subscription_id, Invoice.customer_id)  # type: ignore[call-overload]
                         .where(Invoice.status == "paid").order_by(Invoice.paid_at).limit(1)).one()
    ev = ("INSERT INTO events (id, type, subscription_id, customer_id, invoice_id, actor, payload, occurred_at,"
          " created_at, recorded_at) VALUES (:id, :type, :sub, :cus, :inv, 'test', '{}', :at, :at, :rec)")
    at = datetime(2025, 12, 11, tzinfo=UTC)
    rec = datetime.now(UTC)
    # a transaction that took id top+2 commits first (nothing the reports read) ...
    with engine.begin() as c:
        c.execute(text(ev), {"id": top + 2, "type": "run_cycle.completed", "sub": None, "cus": None, "inv": None,
                             "at": at, "rec": rec})
    r = refresh(engine)
    assert (r.folded_after, r.folded_to) == (top, top + 2)
    # ... and the one that took id top+1 commits after that refresh: a discount on the
    # oldest paid invoice, a day long folded
    with engine.begin() as c:
        c.execute(text("UPDATE invoices SET discount_minor = discount_minor + 100 WHERE id = :i"), {"i": paid[0]})
        c.execute(text(ev), {"id": top + 1, "type": "invoice.updated", "sub": paid[1], "cus": paid[2], "inv": paid[0],
                             "at": at, "rec": rec})
    r = refresh(engine)
    assert differences(engine) == []  # the discount is in the paid-day rollup
    assert r.folded_after == top  # the count below top+2 changed: the whole lag window again
