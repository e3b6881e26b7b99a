"""Payment methods: only gateway tokens are stored, never a card number."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from billing_engine import payment_methods
from billing_engine.db import transaction
from billing_engine.errors import ValidationError
from billing_engine.models import Consent, PaymentMethod
from tests.factories import consent_for, make_customer, make_plan


def test_card_number_is_rejected_and_nothing_is_stored(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, now)
        cust = make_customer(s, now)
        cust_id = cust.id
    for pan in ("4242424242424242", "4242 4242 4242 4242", "pm_4242424242424242"):
        with pytest.raises(ValidationError, match="card number") as exc, transaction(engine) as s:
            payment_methods.add(s, customer_id=cust_id, token=pan, gateway="fake", card=None,
                                consent=consent_for(plan, now), now=now)
        assert exc.value.field == "token"
    with Session(engine) as s:
        assert s.exec(select(PaymentMethod)).all() == []
        assert s.exec(select(Consent)).all() == []
