"""The report rollups, refreshed incrementally from the events watermark while a year is
simulated (refunds -- one of a long-past invoice --, a dispute, card changes, a customer who
comes back), equal a recomputation over the raw tables at every check, and the reports
built on them still reconcile cell by cell."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from billing_engine import refunds
from billing_engine.reports import reconcile
from billing_engine.reports.rollups import differences, failed_table, off_price_table, refresh
from tests.reports.paths import rollup_vs_raw
from tests.reports.scenario import World, _first_paid, build

YEAR = (datetime(2025, 11, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))


def test_rollups_refreshed_incrementally_equal_the_raw_tables_after_a_year(engine: Engine) -> None:
    marks: list[int] = []

    def every_week(w: World, now: datetime) -> None:
        day = (now - datetime(2025, 11, 1, 6, tzinfo=UTC)).days
        if day == 300:  # a refund of the very first invoice: it changes a day long past
            from billing_engine.db import transaction

            with transaction(engine) as s:
                inv = s.exec(_first_paid(w.subs["A6"])).first()
                assert inv is not None
                inv_id = inv.id
            refunds.create(engine, w.gateway, invoice_id=inv_id, amount_minor=500, reason="requested_by_customer",
                           now=now)
        if day % 7 == 3:
            r = refresh(engine, lag=timedelta(0))
            marks.append(r.to_event_id)
            assert r.rebuilt == (len(marks) == 1)  # the first refresh builds, the others fold in events
            if day % 63 == 3:
                assert differences(engine) == []

    build(engine, days=365, on_day=every_week)
    assert marks == sorted(marks) and marks[-1] > marks[0] > 0
    refresh(engine, lag=timedelta(0))
    assert differences(engine) == []
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(failed_table)).scalar_one() >= 4
    assert reconcile(engine, *YEAR) == []
    assert rollup_vs_raw(engine, *YEAR) == []

    # a change that bypasses the engine (no event) is invisible to the incremental refresh ...
    with engine.begin() as c:
        c.execute(text("UPDATE invoices SET amount_minor = 2900 WHERE id = ("
                       "SELECT min(id) FROM invoices WHERE status = 'paid' AND amount_minor = 1700)"))
    refresh(engine, lag=timedelta(0))
    assert differences(engine) != []
    # ... until a rebuild
    refresh(engine, rebuild=True)
    assert differences(engine) == []
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(off_price_table)).scalar_one() == 1
    # the per-day rollups follow the rebuild: the off-price subscription is now read invoice by
    # invoice (a price change), and every report still equals its raw-table version
    assert rollup_vs_raw(engine, *YEAR) == []
