"""A small data set for the API / CLI / dashboard tests: three months, two currencies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from billing_engine import cancellations, subscriptions
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from tests.factories import make_plan, make_subscription

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
RANGE = ("2026-01-01", "2026-03-31")


def build(engine: Engine) -> None:
    gw = FakeGateway()
    with transaction(engine) as s:
        basic = make_plan(s, T0, code="basic", amount_minor=1700, tier="small")
        pro = make_plan(s, T0, code="pro-year", amount_minor=19900, interval="year", tier="large")
        eur = make_plan(s, T0, code="eur", amount_minor=990, currency="EUR")
        for i in range(3):
            make_subscription(s, T0, plan=basic, email=f"b{i}@example.com")
        make_subscription(s, T0, plan=pro, email="p@example.com")
        make_subscription(s, T0, plan=eur, email="e@example.com")
        make_subscription(s, T0, plan=basic, email="dunning@example.com", token="pm_fake_recover_after_1")
    for day in (0, 1, 31, 32, 59, 60):
        now = T0 + timedelta(days=day)
        if day == 31:
            with transaction(engine) as s:
                sub = subscriptions.list_subscriptions(s, plan_id="basic")[0]
                cancellations.cancel(s, sub, kind="voluntary", reason="unused", at_period_end=False, now=now)
        run_cycle(engine, gw, now=now)
