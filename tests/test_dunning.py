"""Dunning schedule: the default 8 tries in two weeks, custom schedules, card-network caps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from billing_engine.dunning import next_retry_at

T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def test_default_schedule_gives_eight_tries_within_two_weeks() -> None:
    retries = []
    failures = 1
    while (when := next_retry_at(first_failure_at=T0, failures=failures)) is not None:
        retries.append((when - T0).days)
        failures += 1
    assert retries == [1, 2, 3, 5, 7, 10, 14]  # + the first try = 8 tries
    assert failures == 8


def test_custom_schedule_is_followed() -> None:
    assert next_retry_at(first_failure_at=T0, failures=1, schedule_days=[3, 6]) == T0 + timedelta(days=3)
    assert next_retry_at(first_failure_at=T0, failures=3, schedule_days=[3, 6]) is None


def test_mastercard_never_gets_more_than_ten_tries_in_24_hours() -> None:
    recent = [T0 + timedelta(minutes=i) for i in range(10)]  # 10 tries in the last day
    when = next_retry_at(first_failure_at=T0, failures=1, schedule_days=[0, 1], brand="mastercard",
                         recent_attempts=recent)
    assert when is not None
    assert len([t for t in recent if when - timedelta(hours=24) < t <= when]) < 10


def test_visa_is_capped_at_fifteen_tries_in_30_days() -> None:
    recent = [T0 + timedelta(hours=i) for i in range(15)]
    when = next_retry_at(first_failure_at=T0, failures=1, schedule_days=[1, 2], brand="visa", recent_attempts=recent)
    assert when is not None and when > T0 + timedelta(days=30)
    assert len([t for t in recent if when - timedelta(days=30) < t <= when]) < 15
