"""Reminders: how far ahead of a charge the customer is told, per plan interval and for trials."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billing_engine.models import Plan
from billing_engine.reminders import reminder_lead
from billing_engine.settings import load_settings

SETTINGS = load_settings(reminder_days_before=7)
NOW = datetime(2026, 1, 15, tzinfo=UTC)


def _plan(interval: str, *, count: int = 1, reminder_days: int | None = None, trial_days: int = 0) -> Plan:
    return Plan(code=f"p-{interval}", name="P", amount_minor=1000, currency="USD", interval=interval,
                interval_count=count, reminder_days=reminder_days, trial_days=trial_days, created_at=NOW)


@pytest.mark.parametrize("interval,count,lead", [
    ("month", 1, timedelta(days=7)),
    ("year", 1, timedelta(days=7)),
    ("week", 1, timedelta(days=3, hours=12)),  # at most half a period
    ("week", 4, timedelta(days=7)),
    ("day", 1, timedelta(hours=24)),  # never less than 24 hours: the receipt of one charge reminds of the next
])
def test_a_renewal_reminder_comes_at_most_half_a_period_ahead(interval: str, count: int, lead: timedelta) -> None:
    assert reminder_lead(_plan(interval, count=count), trial=False, settings=SETTINGS) == lead


def test_a_plan_may_choose_its_own_lead_but_never_no_reminder() -> None:
    assert reminder_lead(_plan("month", reminder_days=3), trial=False, settings=SETTINGS) == timedelta(days=3)
    assert reminder_lead(_plan("month", reminder_days=0), trial=False, settings=SETTINGS) == timedelta(hours=24)


def test_yearly_renewals_and_trial_ends_are_always_announced() -> None:
    assert reminder_lead(_plan("year", reminder_days=0), trial=False, settings=SETTINGS) == timedelta(days=7)
    assert reminder_lead(_plan("month", reminder_days=0, trial_days=30), trial=True,
                         settings=SETTINGS) == timedelta(days=7)
    never = load_settings(reminder_days_before=0)
    assert reminder_lead(_plan("year", reminder_days=0), trial=False, settings=never) == timedelta(days=1)


def test_a_short_trial_is_reminded_halfway_through() -> None:
    assert reminder_lead(_plan("month", trial_days=14), trial=True, settings=SETTINGS) == timedelta(days=7)
    assert reminder_lead(_plan("month", trial_days=4), trial=True, settings=SETTINGS) == timedelta(days=2)
