"""The reminder rule over a simulated year (issue #16): every charge in the gateway's
ledger has a reminder for its period sent at least the plan's lead time earlier (never
less than 24 hours) — for every interval, through dunning recovery and a 5-day
catch-up after missed runs. The first charge at sign-up (customer present) is exempt."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import reminders
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Invoice, Notification, PaymentAttempt, Plan, Subscription
from billing_engine.settings import load_settings
from tests.factories import make_plan, make_subscription

SETTINGS = load_settings(reminder_days_before=7, mail_transport="none")
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
INTERVALS = ("day", "week", "month", "year")
GAP = range(150, 155)  # no run-cycle on these 5 days (cron down): the next run catches up


def _world(engine: Engine, gw: FakeGateway) -> dict[str, str]:
    kinds: dict[str, str] = {}
    with transaction(engine) as s:
        for iv in INTERVALS:
            plan = make_plan(s, T0, code=f"p-{iv}", interval=iv, amount_minor=500)
            for who, trial in (("plain", None), ("dunning", None), ("trial", 10)):
                token = f"pm_{who}_{iv}"
                gw.script(f"pm_dunning_{iv}", ["succeed", "insufficient_funds", "succeed"])
                sub = make_subscription(s, T0, plan=plan, email=f"{who}-{iv}@example.com", token=token,
                                        trial_days=trial)
                kinds[sub.id] = f"{who}-{iv}"
    return kinds


def _reminders(notes: list[Notification]) -> dict[str, list[tuple[int, int, datetime]]]:
    """Per subscription: (first period, last period, sent at) of every e-mail that counts as a reminder."""
    out: dict[str, list[tuple[int, int, datetime]]] = {}
    for n in notes:
        p: dict[str, Any] = json.loads(n.payload)
        if n.kind in ("renewal_reminder", "trial_ending"):
            lo, hi = int(p["period_index"]), int(p.get("through_period_index", p["period_index"]))
        elif "reminds_period_index" in p:  # a receipt or a confirmation stating the next charge in time
            lo = hi = int(p["reminds_period_index"])
        else:
            continue
        out.setdefault(n.subscription_id or "", []).append((lo, hi, n.created_at))
    return out


def test_every_charge_of_a_simulated_year_was_reminded_the_lead_time_before(sqlite_engine: Engine) -> None:
    engine, gw = sqlite_engine, FakeGateway()
    kinds = _world(engine, gw)
    waited = 0
    for day in range(400):
        if day in GAP:
            continue
        summary = run_cycle(engine, gw, now=T0 + timedelta(days=day, hours=1), settings=SETTINGS)
        assert summary.errors == []
        waited += summary.waiting_for_reminder
    with Session(engine) as s:
        attempts = {a.idempotency_key: a for a in s.exec(select(PaymentAttempt))}
        invoices = {i.id: i for i in s.exec(select(Invoice))}
        subs = {x.id: x for x in s.exec(select(Subscription))}
        plans = {p.id: p for p in s.exec(select(Plan))}
        sent = _reminders(list(s.exec(select(Notification))))
    charges = [e for e in gw.ledger if e.kind == "charge"]
    checked: dict[str, int] = {}
    for e in charges:
        attempt = attempts[e.idempotency_key]
        inv = invoices[attempt.invoice_id]
        sub = subs[inv.subscription_id]
        if inv.period_index == 0 and sub.trial_end is None:
            continue  # the first charge at sign-up
        lead = reminders.reminder_lead(plans[sub.plan_id], trial=inv.period_index == 0, settings=SETTINGS)
        assert lead >= timedelta(hours=24)
        ok = [at for lo, hi, at in sent.get(sub.id, []) if lo <= inv.period_index <= hi and at <= attempt.created_at - lead]
        assert ok, f"{kinds[sub.id]} period {inv.period_index} charged {attempt.created_at} without a reminder {lead} before"
        checked[kinds[sub.id]] = checked.get(kinds[sub.id], 0) + 1
    # not vacuous: every kind renewed, dunning recovered, the daily plan caught up after the gap
    assert checked["plain-day"] >= 390 and checked["plain-week"] >= 55 and checked["plain-month"] >= 12
    assert checked["plain-year"] == 1 and checked["dunning-year"] == 1 and checked["trial-year"] == 2
    assert all(subs[sid].status == "active" for sid in subs), {kinds[x.id]: x.status for x in subs.values()}
    declined = [a for a in attempts.values() if a.status == "failed"]
    assert len(declined) == 4  # one per interval, each recovered
    assert waited > 0  # the catch-up and the renewals right after recovery had to wait for their reminder


def test_dry_run_and_subscription_summary_say_the_charge_waits_for_its_reminder(engine: Engine) -> None:
    from billing_engine import subscriptions

    gw = FakeGateway()
    with transaction(engine) as s:
        sub_id = make_subscription(s, T0, plan=make_plan(s, T0)).id
    run_cycle(engine, gw, now=T0 + timedelta(hours=1), settings=SETTINGS)  # first charge at sign-up
    late = T0 + timedelta(days=40)  # the renewal (Feb 5) came with no run before it: no reminder went out
    plan = run_cycle(engine, gw, now=late, settings=SETTINGS, dry_run=True)
    [w] = plan.would_charge
    assert (w["action"], w["reason"]) == ("wait", "reminder_pending")
    assert "sends it now" in w["message"]
    with Session(engine) as s:
        shown = subscriptions.summary(s, s.get(Subscription, sub_id), now=late)  # type: ignore[arg-type]
    assert shown["waits_for_reminder"] is True and shown["reminder_sent_at"] is None
    summary = run_cycle(engine, gw, now=late, settings=SETTINGS)
    assert (summary.succeeded, summary.waiting_for_reminder, summary.reminders_queued) == (0, 1, 1)
    with Session(engine) as s:
        shown = subscriptions.summary(s, s.get(Subscription, sub_id), now=late)  # type: ignore[arg-type]
    assert shown["reminder_sent_at"] == late and shown["charge_not_before"] == late + timedelta(days=7)
    [w] = run_cycle(engine, gw, now=late + timedelta(days=6), settings=SETTINGS, dry_run=True).would_charge
    assert (w["action"], w["reason"]) == ("wait", "reminder_pending")
    assert run_cycle(engine, gw, now=late + timedelta(days=7), settings=SETTINGS).succeeded == 1
    assert len([e for e in gw.ledger if e.kind == "charge"]) == 2
