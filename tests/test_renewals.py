"""The dry run says exactly what the real run at the same instant does, for every state;
and every involuntary end tells the customer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import cancellations, payment_methods, reminders
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Consent, Event, Notification, PaymentMethod, Subscription
from billing_engine.settings import load_settings
from tests.factories import make_plan, make_subscription

SETTINGS = load_settings()
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
AT = datetime(2026, 2, 5, 9, 0, tzinfo=UTC)  # first renewal of everyone


def _world(engine: Engine, gw: FakeGateway) -> dict[str, str]:
    """One subscription in each state the run-cycle can meet at AT."""
    with transaction(engine) as s:
        plan = make_plan(s, T0)
        ids = {name: make_subscription(s, T0, plan=plan, email=f"{name}@example.com", token=tok).id for name, tok in [
            ("due", "pm_card_visa"), ("retry", "pm_fake_recover_after_1"), ("lost", "pm_card_mastercard"),
            ("cancel_at_end", "pm_card_visa"), ("expired", "pm_card_visa"), ("detached", "pm_card_visa"),
            ("no_consent", "pm_card_visa"), ("not_due", "pm_card_visa")]}
    run_cycle(engine, gw, now=T0, settings=SETTINGS)  # everyone's first period paid (retry: declined once)
    with transaction(engine) as s:
        def sub(name: str) -> Subscription:
            x = s.get(Subscription, ids[name])
            assert x is not None
            return x

        cancellations.cancel(s, sub("cancel_at_end"), now=T0 + timedelta(days=3))
        pm = s.get(PaymentMethod, sub("expired").payment_method_id)
        assert pm is not None
        pm.exp_month, pm.exp_year = 1, 2026
        s.add(pm)
        pm2 = s.get(PaymentMethod, sub("detached").payment_method_id)
        assert pm2 is not None
        payment_methods.detach(s, pm2, now=T0 + timedelta(days=4))
        for c in s.exec(select(Consent).where(Consent.payment_method_id == sub("no_consent").payment_method_id)):
            c.revoked_at = T0 + timedelta(days=5)
            s.add(c)
        nd = sub("not_due")
        nd.current_period_end = AT + timedelta(days=10)
        s.add(nd)
    gw.unknown_next(charged=True)  # "lost" renews with its answer lost, just before AT
    with transaction(engine) as s:
        x = s.get(Subscription, ids["lost"])
        assert x is not None
        x.current_period_end = T0 - timedelta(days=1)  # first in line for the limit=1 run
        s.add(x)
    reminders.queue(engine, now=AT - timedelta(days=8), settings=SETTINGS)  # "lost": its reminder 7 days before
    reminders.queue(engine, now=AT - timedelta(days=7), settings=SETTINGS)  # everyone's renewal reminder
    run_cycle(engine, gw, now=AT - timedelta(days=1), settings=SETTINGS, limit=1)
    return ids


def test_the_dry_run_plans_exactly_what_the_run_then_does(engine: Engine) -> None:
    gw = FakeGateway()
    ids = _world(engine, gw)
    names = {v: k for k, v in ids.items()}
    plan = run_cycle(engine, FakeGateway(), now=AT, settings=SETTINGS, dry_run=True)
    planned = {names[w["subscription_id"]]: (w["action"], w["reason"]) for w in plan.would_charge}
    assert planned == {
        "due": ("charge", None), "retry": ("charge", None), "lost": ("reconcile", None),
        "cancel_at_end": ("end_at_period_end", None),
        "expired": ("cancel_involuntary", "card_expired"),
        "detached": ("cancel_involuntary", "hard_decline:payment_method_detached"),
        "no_consent": ("skip", "no_consent"),
    }
    before = len([c for c in gw.calls if c[0] == "charge"])
    summary = run_cycle(engine, gw, now=AT, settings=SETTINGS)
    with Session(engine) as s:
        def st(name: str) -> Subscription:
            x = s.get(Subscription, ids[name])
            assert x is not None
            return x
        assert st("due").status == "active" and st("due").current_period_end > AT
        assert st("retry").status == "active"  # recovered on its retry
        assert st("cancel_at_end").status == "canceled" and st("cancel_at_end").cancellation_kind == "voluntary"
        assert (st("expired").status, st("expired").cancellation_reason) == ("canceled", "card_expired")
        assert st("detached").cancellation_reason == "hard_decline:payment_method_detached"
        assert st("no_consent").status == "active" and st("no_consent").current_period_end <= AT  # not charged
        assert st("not_due").current_period_end > AT
    assert summary.reconciled == 1  # the lost answer was settled, not charged again
    # the two planned charges (due, retry); retry's next period, already due too, waits:
    # its reminder goes out now (it was past due when the others were reminded)
    assert len([c for c in gw.calls if c[0] == "charge"]) - before == 2
    assert summary.succeeded == 3 and summary.blocked == 3  # + the reconciled one
    assert summary.waiting_for_reminder == 1 and summary.cancellations_effective == 1


def _involuntary_mails(engine: Engine, sub_id: str) -> list[Notification]:
    with Session(engine) as s:
        return list(s.exec(select(Notification).where(
            Notification.subscription_id == sub_id, Notification.kind == "canceled_involuntary")))


def test_every_involuntary_end_emails_the_customer(engine: Engine) -> None:
    gw = FakeGateway()
    ids = _world(engine, gw)
    with transaction(engine) as s:
        plan = make_plan(s, T0, code="hard")
        hard = make_subscription(s, T0, plan=plan, email="hard@example.com", token="pm_card_chargeDeclinedStolenCard").id
        soft = make_subscription(s, T0, plan=plan, email="soft@example.com",
                                 token="pm_card_chargeDeclinedInsufficientFunds").id
    run_cycle(engine, gw, now=AT, settings=SETTINGS)
    for day in range(1, 20):  # dunning runs out for the soft decline
        run_cycle(engine, gw, now=AT + timedelta(days=day), settings=SETTINGS)
    with transaction(engine) as s:  # a lost dispute (the Stripe webhook path)
        x = s.get(Subscription, ids["due"])
        assert x is not None
        cancellations.end_involuntarily(s, x, reason="dispute", now=AT + timedelta(days=20), actor="system:dispute")
    for name, reason in [("expired", "card_expired"), ("detached", "hard_decline:payment_method_detached")]:
        [mail] = _involuntary_mails(engine, ids[name])
        assert reason in mail.payload
    for sub_id, reason in [(hard, "hard_decline:stolen_card"), (soft, "payment_failed"), (ids["due"], "dispute")]:
        [mail] = _involuntary_mails(engine, sub_id)
        assert reason in mail.payload
        with Session(engine) as s:
            x = s.get(Subscription, sub_id)
            assert x is not None and (x.status, x.cancellation_kind) == ("canceled", "involuntary")
            assert s.exec(select(Event).where(Event.subscription_id == sub_id,
                                              Event.type == "subscription.canceled")).first() is not None
