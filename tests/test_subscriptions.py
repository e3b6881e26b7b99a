"""Subscriptions: created only on a card whose consent covers the plan."""

from __future__ import annotations

import pytest

from billing_engine import subscriptions
from billing_engine.db import transaction
from billing_engine.errors import ConsentRequired
from tests.factories import make_card, make_customer, make_plan


def test_subscription_without_consent_covering_the_price_is_refused(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        cheap = make_plan(s, now, code="cheap", amount_minor=500)
        dear = make_plan(s, now, code="dear", amount_minor=5000)
        cust = make_customer(s, now)
        pm = make_card(s, now, cust, cheap)  # consented to 5.00 a month
        cust_id, pm_id, dear_id = cust.id, pm.id, dear.id
    with pytest.raises(ConsentRequired), transaction(engine) as s:
        subscriptions.create(s, customer_id=cust_id, plan_id=dear_id, payment_method_id=pm_id, now=now)
