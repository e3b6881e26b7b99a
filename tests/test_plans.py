"""Plans: validated on creation, unique codes, never re-priced under subscribers."""

from __future__ import annotations

import pytest

from billing_engine import plans
from billing_engine.db import transaction
from billing_engine.errors import Conflict, ValidationError
from tests.factories import make_plan, make_subscription


def test_plan_with_subscribers_cannot_be_repriced(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, now)
        make_subscription(s, now, plan=plan)
    with pytest.raises(Conflict), transaction(engine) as s:
        plans.update(s, plan.code, amount_minor=9900, now=now)
    with transaction(engine) as s:
        plans.update(s, plan.code, name="Renamed", active=False, now=now)
        assert plans.get(s, plan.code).amount_minor == 1700


def test_a_duplicate_plan_code_is_a_conflict(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        make_plan(s, now, code="x")
    with pytest.raises(Conflict) as exc, transaction(engine) as s:
        make_plan(s, now, code="x")
    assert exc.value.field == "code"


@pytest.mark.parametrize("field,override", [
    ("code", {"code": ""}),
    ("name", {"name": "   "}),
    ("amount_minor", {"amount_minor": -1}),
    ("currency", {"currency": "XYZ"}),
    ("interval", {"interval": "fortnight"}),
    ("interval_count", {"interval_count": 0}),
    ("trial_days", {"trial_days": -3}),
    ("reminder_days", {"reminder_days": 61}),
])
def test_a_bad_plan_is_refused_naming_the_field(sqlite_engine, now, field, override) -> None:  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"code": "gold", "name": "Gold", "amount_minor": 1700, "currency": "USD",
                               "interval": "month", "interval_count": 1, "trial_days": 0} | override
    with pytest.raises(ValidationError) as exc, transaction(sqlite_engine) as s:
        plans.create(s, now=now, **args)  # type: ignore[arg-type]
    assert exc.value.field == field
    with transaction(sqlite_engine) as s:
        assert plans.list_plans(s) == []


def test_a_plan_is_stored_with_its_normalised_terms(sqlite_engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(sqlite_engine) as s:
        plans.create(s, code="gold-yearly", name=" Gold ", amount_minor=12000, currency="eur", interval="year",
                     now=now)
    with transaction(sqlite_engine) as s:
        p = plans.get(s, "gold-yearly")
        assert (p.name, p.currency, p.interval, p.interval_count, p.active) == ("Gold", "EUR", "year", 1, True)
