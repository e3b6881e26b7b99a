"""A simulated year (the demo's data): money reconciles, no period skipped or doubled."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pytest
from sqlmodel import Session, col, select

from billing_engine.db import make_engine
from billing_engine.demo import run_demo
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Invoice, PaymentAttempt, Subscription
from billing_engine.settings import load_settings

START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def year(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One simulated year per backend, shared by the checks in this module."""
    from tests.conftest import fresh_database_url

    url = fresh_database_url(request, request.param, tmp_path_factory.mktemp("year"))
    engine = make_engine(url)
    gw = FakeGateway()
    result = run_demo(engine, start=START, months=12, settings=load_settings(), gateway=gw)
    yield engine, gw, result
    engine.dispose()


def test_money_collected_equals_paid_invoices_and_the_gateway_ledger(year) -> None:  # type: ignore[no-untyped-def]
    engine, gw, result = year
    with Session(engine) as s:
        paid = s.exec(select(Invoice).where(Invoice.status == "paid")).all()
        ok_attempts = s.exec(select(PaymentAttempt).where(PaymentAttempt.status == "succeeded")).all()
    by_cur: dict[str, int] = defaultdict(int)
    for inv in paid:
        by_cur[inv.currency] += inv.amount_paid_minor
    demo_cur: dict[str, int] = defaultdict(int)
    for m in result.months:
        for c, v in m.collected.items():
            demo_cur[c] += v
    for cur in ("USD", "EUR", "JPY"):
        assert by_cur[cur] == gw.total_collected(cur) == demo_cur[cur] > 0
    assert len(ok_attempts) == len(paid) == len([e for e in gw.ledger if e.kind == "charge"])


def test_every_subscription_is_billed_for_contiguous_periods_once(year) -> None:  # type: ignore[no-untyped-def]
    engine, _gw, _ = year
    with Session(engine) as s:
        subs = s.exec(select(Subscription)).all()
        for sub in subs:
            invs = s.exec(select(Invoice).where(Invoice.subscription_id == sub.id).order_by(col(Invoice.period_index))).all()
            assert [i.period_index for i in invs] == list(range(len(invs)))
            for a, b in zip(invs, invs[1:], strict=False):
                assert a.period_end == b.period_start
            if sub.status in ("active", "trialing"):
                assert all(i.status == "paid" for i in invs)
                assert sub.current_period_end > datetime(2026, 12, 31, tzinfo=UTC)


def test_the_year_has_both_kinds_of_churn_and_recoveries(year) -> None:  # type: ignore[no-untyped-def]
    engine, _gw, result = year
    with Session(engine) as s:
        ended = s.exec(select(Subscription).where(Subscription.status == "canceled")).all()
        recovered = s.exec(select(Invoice).where(Invoice.status == "paid", col(Invoice.attempt_count) > 1)).all()
    kinds = {sub.cancellation_kind for sub in ended}
    reasons = {sub.cancellation_reason for sub in ended}
    assert kinds == {"voluntary", "involuntary"}
    assert "payment_failed" in reasons and any(r and r.startswith("hard_decline:") for r in reasons)
    assert recovered, "some soft declines must recover through dunning"
    assert any("changed their mind" in line for line in result.log)


def test_reports_on_the_demo_year_reconcile_with_the_raw_tables(year) -> None:  # type: ignore[no-untyped-def]
    from billing_engine.reports import reconcile

    engine, _gw, _ = year
    assert reconcile(engine, START, datetime(2027, 1, 1, tzinfo=UTC)) == []


def test_churn_report_counts_the_demo_cancellations_by_kind(year) -> None:  # type: ignore[no-untyped-def]
    from billing_engine.reports import build_query, churn_report

    engine, _gw, _ = year
    report = churn_report(engine, build_query(start=START, end=datetime(2027, 1, 1, tzinfo=UTC), period="year",
                                              now=START))
    with Session(engine) as s:
        ended = s.exec(select(Subscription).where(col(Subscription.ended_at) < datetime(2027, 1, 1, tzinfo=UTC))).all()
        paid_subs = {i.subscription_id for i in s.exec(select(Invoice).where(Invoice.status == "paid"))}
    churned = [x for x in ended if x.id in paid_subs]  # ended after paying at least once (see docs/reports.md)
    voluntary = sum(r["voluntary"] for r in report.rows)  # one row per currency
    involuntary = sum(r["involuntary"] for r in report.rows)
    assert voluntary == len([x for x in churned if x.cancellation_kind == "voluntary"]) > 0
    assert involuntary == len([x for x in churned if x.cancellation_kind == "involuntary"]) > 0


def test_the_month_by_month_table_uses_the_reports_definitions(year) -> None:  # type: ignore[no-untyped-def]
    from billing_engine.demo import month_by_month, report_range
    from billing_engine.reports import build_query, churn_report

    engine, _gw, result = year
    rows = month_by_month(engine, result, start=START, months=12)
    first, last = report_range(START, 12)
    total = churn_report(engine, build_query(start=first, end=last, period="all", now=START)).rows
    for column, key in (("new subscribers", "new"), ("voluntary churn", "voluntary"),
                        ("involuntary churn", "involuntary"), ("ended unpaid", "ended_unpaid")):
        assert sum(r[column] for r in rows) == sum(r[key] for r in total) > 0, column
    # sign-ups are a different figure under its own name: canceled trials and never-paid sign-ups
    # are sign-ups but never new subscribers
    assert sum(r["sign-ups"] for r in rows) > sum(r["new subscribers"] for r in rows)
    assert [r["charges paid"] for r in rows] == [m.succeeded for m in result.months]
