"""clock.check_run_instant: the one rule for how far ahead a run-cycle may run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billing_engine.clock import FUTURE_TOLERANCE, check_run_instant
from billing_engine.errors import ValidationError

WALL = datetime(2026, 12, 2, tzinfo=UTC)


@pytest.mark.parametrize(("gateway", "production"), [("stripe", False), ("stripe", True), ("fake", True)])
def test_ahead_of_the_clock_is_refused_when_money_could_move(gateway: str, production: bool) -> None:
    with pytest.raises(ValidationError) as exc:
        check_run_instant(WALL + timedelta(days=730), WALL, gateway_name=gateway, simulate=False,
                          production=production)
    assert exc.value.field == "at" and "730 days" in exc.value.message


def test_within_tolerance_past_simulated_and_fake_outside_production_are_allowed() -> None:
    check_run_instant(WALL + FUTURE_TOLERANCE, WALL, gateway_name="stripe", simulate=False)
    check_run_instant(WALL - timedelta(days=365), WALL, gateway_name="stripe", simulate=False)
    check_run_instant(WALL + timedelta(days=730), WALL, gateway_name="stripe", simulate=True)
    check_run_instant(WALL + timedelta(days=730), WALL, gateway_name="fake", simulate=False)


def test_out_of_range_is_refused_even_when_simulating() -> None:
    with pytest.raises(ValidationError, match="supported range"):
        check_run_instant(datetime(9999, 12, 31, tzinfo=UTC), WALL, gateway_name="fake", simulate=True,
                          field="--at")
