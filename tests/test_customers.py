"""Customers: created with a unique external reference, found by id or reference."""

from __future__ import annotations

import pytest

from billing_engine import customers
from billing_engine.db import transaction
from billing_engine.errors import Conflict, NotFound


def test_a_duplicate_external_ref_is_a_conflict(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        customers.create(s, email="a@example.com", external_ref="r1", now=now)
    with pytest.raises(Conflict) as exc, transaction(engine) as s:
        customers.create(s, email="b@example.com", external_ref="r1", now=now)
    assert exc.value.field == "external_ref"


def test_a_customer_is_found_by_id_or_external_ref(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        c = customers.create(s, email="a@example.com", external_ref="crm-7", now=now)
    with transaction(engine) as s:
        assert customers.get(s, c.id).id == customers.get(s, "crm-7").id == c.id
    with pytest.raises(NotFound) as exc, transaction(engine) as s:
        customers.get(s, "crm-8")
    assert exc.value.field == "customer"
