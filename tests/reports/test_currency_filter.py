"""``--currency`` is a filter, not a change of definition: a customer who paid in JPY in
January and comes back in USD in March is a returning customer (and a reactivation) in
March under ``--currency USD`` too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from billing_engine import cancellations, subscriptions
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Customer, Plan
from billing_engine.reports import build_query, mrr_report, revenue_report
from billing_engine.reports.reconcile import currency_filter_problems
from tests.factories import make_card, make_customer, make_plan

T0 = datetime(2026, 1, 5, 8, tzinfo=UTC)
MARCH = datetime(2026, 3, 1, tzinfo=UTC)


def _world(engine: Engine) -> None:
    gw = FakeGateway()
    with transaction(engine) as s:
        jpy = make_plan(s, T0, code="jp", amount_minor=1500, currency="JPY")
        usd = make_plan(s, T0, code="us", amount_minor=1700, currency="USD")
        cust = make_customer(s, T0, email="traveller@example.com")
        other = make_customer(s, T0, email="newcomer@example.com")
        pm = make_card(s, T0, cust, jpy)
        sub = subscriptions.create(s, customer_id=cust.id, plan_id=jpy.id, payment_method_id=pm.id, now=T0)
        sub_id, cust_id, other_id, usd_id = sub.id, cust.id, other.id, usd.id
    run_cycle(engine, gw, now=T0)
    with transaction(engine) as s:
        cancellations.cancel(s, subscriptions.get(s, sub_id), kind="voluntary", reason="other",
                             at_period_end=False, now=T0 + timedelta(days=10))
    back = datetime(2026, 3, 3, 8, tzinfo=UTC)
    with transaction(engine) as s:
        us = s.get(Plan, usd_id)
        assert us is not None
        for cid in (cust_id, other_id):  # the traveller comes back in USD; a newcomer joins
            c = s.get(Customer, cid)
            assert c is not None
            card = make_card(s, back, c, us)
            subscriptions.create(s, customer_id=cid, plan_id=usd_id, payment_method_id=card.id, now=back)
    run_cycle(engine, gw, now=back)


def test_a_customer_who_paid_in_another_currency_is_not_new_under_the_currency_filter(engine: Engine) -> None:
    _world(engine)
    for currency in (None, "USD"):
        q = build_query(start="2026-01-01", end="2026-03-31", currency=currency, now=MARCH)
        rev = next(r for r in revenue_report(engine, q).rows if r["currency"] == "USD" and r["period_start"] == MARCH)
        assert (rev["paying_customers"], rev["new_customers"], rev["returning_customers"]) == (2, 1, 1), currency
        mrr = next(r for r in mrr_report(engine, q).rows if r["currency"] == "USD" and r["period_start"] == MARCH)
        assert (mrr["new_minor"], mrr["reactivation_minor"]) == (1700, 1700), currency
    q = build_query(start="2026-01-01", end="2026-03-31", now=MARCH)
    assert currency_filter_problems(engine, q, ("churn", "mrr", "revenue", "segments")) == []
    assert currency_filter_problems(engine, build_query(start="2026-01-01", end="2026-03-31", by="plan", now=MARCH),
                                    ("churn", "mrr", "revenue")) == []
