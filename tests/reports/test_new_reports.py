"""Cohorts, revenue retention, recovery attribution and the involuntary churn funnel: the
figures a person can check by hand, and every cell equal to the independent recomputation
(reconcile)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine

from billing_engine.reports import build_query, reconcile, run_report
from billing_engine.reports.model import rate
from tests.reports import recovery_world, scenario

FEB = datetime(2026, 2, 1, tzinfo=UTC)
JAN = datetime(2026, 1, 1, tzinfo=UTC)


def row(report: Any, start: datetime, **match: str) -> dict[str, Any]:
    rows = [r for r in report.rows if r["period_start"] == start and all(r.get(k) == v for k, v in match.items())]
    assert len(rows) == 1, rows
    return rows[0]


def test_recovery_is_attributed_to_what_recovered_it(engine: Engine) -> None:
    recovery_world.build(engine)
    assert reconcile(engine, *recovery_world.RANGE) == []
    q = build_query(start=recovery_world.RANGE[0], end=recovery_world.RANGE[1], now=recovery_world.RANGE[1])
    rec = run_report(engine, "recovery", q)
    jan, feb = row(rec, JAN), row(rec, FEB)
    # January: two first charges failed; the plain retry and the card updater brought both back
    assert (jan["failed_invoices"], jan["recovered_invoices"], jan["recovery_rate"]) == (2, 2, Decimal("1.0000"))
    assert (jan["automatic_retry_invoices"], jan["card_updater_invoices"]) == (1, 1)
    assert (jan["automatic_retry_days"], jan["card_updater_days"]) == (Decimal("1.00"), Decimal("3.00"))
    # February: six renewals failed; the customer's new card (1 day) and an admin (2 days) saved two
    assert (feb["failed_invoices"], feb["failed_minor"], feb["recovered_minor"]) == (6, 6 * 1700, 2 * 1700)
    assert (feb["customer_card_update_invoices"], feb["admin_invoices"]) == (1, 1)
    assert (feb["customer_card_update_days"], feb["admin_days"]) == (Decimal("1.00"), Decimal("2.00"))
    assert (feb["lost_invoices"], feb["in_dunning_invoices"], feb["recovery_rate"]) == (3, 1, Decimal("0.3333"))

    funnel = run_report(engine, "funnel", q)
    by_code = {r["decline_code"]: r for r in funnel.rows if r["period_start"] == FEB}
    assert {c: r["decline_kind"] for c, r in by_code.items()} == {
        "insufficient_funds": "soft", "do_not_honor": "soft", "generic_decline": "soft", "try_again_later": "soft",
        "processing_error": "soft", "stolen_card": "hard"}
    assert by_code["insufficient_funds"]["recovered_invoices"] == by_code["do_not_honor"]["recovered_invoices"] == 1
    assert (by_code["generic_decline"]["lost_payment_failed"], by_code["try_again_later"]["lost_voluntary"]) == (1, 1)
    assert by_code["processing_error"]["in_dunning_invoices"] == 1
    assert sum(r["failed_invoices"] for r in by_code.values()) == 6
    hard = row(funnel, FEB, decline_code="stolen_card")
    assert (hard["decline_kind"], hard["lost_invoices"], hard["lost_hard_decline"]) == ("hard", 1, 1)


def test_cohorts_and_revenue_retention_on_the_scenario(engine: Engine) -> None:
    scenario.build(engine)
    q = build_query(start=scenario.RANGE[0], end=scenario.RANGE[1], now=scenario.RANGE[1])
    cohorts = run_report(engine, "cohorts", q)
    nov = [r for r in cohorts.rows if r["currency"] == "USD" and r["cohort_start"] == scenario.RANGE[0]]
    assert [r["periods_since"] for r in nov] == [0, 1, 2, 3]
    assert nov[0]["customers"] == nov[0]["retained_customers"] == 13  # paid in November
    assert nov[1]["retained_customers"] == 12  # the daily plan left in November
    # the customer who left in December and came back in January stays in the November cohort
    jan = [r for r in cohorts.rows if r["currency"] == "USD" and r["cohort_start"] == JAN]
    assert jan[0]["customers"] == 3
    ret = run_report(engine, "retention", q)
    dec = row(ret, datetime(2025, 12, 1, tzinfo=UTC), currency="USD")
    assert (dec["mrr_start_minor"], dec["churn_minor"]) == (10 * 1700 + 1658 + 2170, 4 * 1700)
    start = 10 * 1700 + 1658 + 2170
    assert dec["grr"] == dec["nrr"] == rate(start - 4 * 1700, start)  # no price changes: GRR = NRR
    assert reconcile(engine, *scenario.RANGE) == []
