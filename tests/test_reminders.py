"""Reminders: how far ahead of a charge the customer is told, per plan interval and for trials."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import select

from billing_engine import notifications, reminders
from billing_engine.db import transaction
from billing_engine.models import Notification, Plan, SubscriptionStatus
from billing_engine.reminders import reminder_lead
from billing_engine.settings import load_settings
from tests.factories import make_plan, make_subscription

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


def test_one_pass_reminds_each_plan_at_its_own_lead_in_a_fixed_number_of_queries(engine: Engine) -> None:
    """Plans with different leads (7 days, 3.5 days, 2 days, 24 hours, and trials ending) in
    one pass: a subscription is reminded exactly when its own plan's lead has come, and the
    pass reads the subscriptions in one query per status, not one per plan."""
    t0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
    leads = {"monthly": ("month", None, 7 * 24), "weekly": ("week", None, 84), "short": ("month", 2, 48),
             "daily": ("day", None, 24)}
    expected: set[str] = set()
    with transaction(engine) as s:
        for code, (interval, days, lead_hours) in leads.items():
            plan = make_plan(s, t0, code=code, interval=interval, reminder_days=days)
            for extra in (-1, 1):  # an hour inside its lead, an hour outside it
                sub = make_subscription(s, t0, plan=plan, email=f"{code}{extra}@example.com")
                sub.status = SubscriptionStatus.ACTIVE
                sub.current_period_end = NOW + timedelta(hours=lead_hours + extra)
                s.add(sub)
                if extra < 0:
                    expected.add(sub.id)
        trial_plan = make_plan(s, t0, code="trial", trial_days=14)
        for extra in (-1, 1):  # trial lead: 7 days
            sub = make_subscription(s, t0, plan=trial_plan, email=f"trial{extra}@example.com", trial_days=14)
            sub.current_period_end = NOW + timedelta(days=7, hours=extra)
            s.add(sub)
            if extra < 0:
                expected.add(sub.id)
        for i in range(12):  # more plans (no subscriptions): the pass must not read per plan
            make_plan(s, t0, code=f"extra-{i}", interval="week" if i % 2 else "month", reminder_days=i % 5 or None)

    reads: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM subscriptions" in statement:
            reads.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        queued = reminders.queue(engine, now=NOW, settings=SETTINGS)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    with transaction(engine) as s:
        reminded = {n.subscription_id for n in s.exec(select(Notification)) if n.kind in (
            notifications.Kind.RENEWAL_REMINDER, notifications.Kind.TRIAL_ENDING)}
    assert reminded == expected and queued == len(expected) == 5
    assert len(reads) == 2, reads  # active, trialing: whatever the number of plans
    assert reminders.queue(engine, now=NOW, settings=SETTINGS) == 0  # once per period
