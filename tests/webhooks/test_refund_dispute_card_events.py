"""charge.refunded, disputes and card updates from Stripe."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import select

from billing_engine import refunds
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway import FakeGateway
from billing_engine.models import Dispute, Event, Invoice, Notification, PaymentMethod, Refund, Subscription
from billing_engine.settings import load_settings

from .conftest import Post
from .stripe_events import (
    Billed,
    charge,
    counts,
    dispute,
    event,
    get,
    only_invoice,
    paid_attempt,
    payment_method,
    refund_obj,
    subscribed,
)


def paid(engine: Engine, db_url: str, now: datetime, **kw: str) -> tuple[Billed, Invoice, str]:
    """A subscription whose first invoice (17.00 USD) was charged; returns the intent id."""
    billed = subscribed(engine, now, **kw)
    run_cycle(engine, FakeGateway(), now=now, settings=load_settings(database_url=db_url))
    invoice = only_invoice(engine, billed.subscription_id)
    assert invoice.status == "paid"
    return billed, invoice, paid_attempt(engine, invoice.id).gateway_charge_id


def _refunds(engine: Engine) -> list[Refund]:
    with transaction(engine) as s:
        return list(s.exec(select(Refund).order_by(Refund.created_at, Refund.amount_minor)))


def _types(engine: Engine, subscription_id: str) -> list[str]:
    with transaction(engine) as s:
        return [e.type for e in s.exec(select(Event).where(Event.subscription_id == subscription_id)
                                       .order_by(Event.id))]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- refunds


def test_a_dashboard_refund_is_recorded_once(engine: Engine, db_url: str, now: datetime, post: Post) -> None:
    billed, invoice, pi = paid(engine, db_url, now)
    r = post(event("charge.refunded", charge(pi, amount=1700, amount_refunded=500)))
    assert r.json()["outcome"].startswith("recorded refund(s)")
    [refund] = _refunds(engine)
    assert (refund.amount_minor, refund.status, refund.invoice_id, refund.currency) == (500, "succeeded", invoice.id,
                                                                                          "USD")
    assert get(engine, Invoice, invoice.id).amount_refunded_minor == 500
    assert "refund.created" in _types(engine, billed.subscription_id)
    # Stripe sends another event about the same charge state (e.g. charge.updated re-sent as refunded)
    before = counts(engine)
    again = post(event("charge.refunded", charge(pi, amount=1700, amount_refunded=500)))
    assert again.json()["outcome"].startswith("nothing to record")
    assert counts(engine) == before | {"webhook_events": before["webhook_events"] + 1}
    # a second dashboard refund for the rest
    post(event("charge.refunded", charge(pi, amount=1700, amount_refunded=1700)))
    assert [r.amount_minor for r in _refunds(engine)] == [500, 1200]
    assert get(engine, Invoice, invoice.id).amount_refunded_minor == 1700


def test_listed_refunds_keep_their_stripe_ids(engine: Engine, db_url: str, now: datetime, post: Post) -> None:
    _, invoice, pi = paid(engine, db_url, now)
    listed = [refund_obj("re_3Dash1", pi, 300), refund_obj("re_3Dash2", pi, 200)]
    post(event("charge.refunded", charge(pi, amount=1700, amount_refunded=500, refunds=listed)))
    assert sorted((r.gateway_refund_id, r.amount_minor) for r in _refunds(engine)) == [("re_3Dash1", 300),
                                                                                      ("re_3Dash2", 200)]
    assert get(engine, Invoice, invoice.id).amount_refunded_minor == 500


def test_our_own_refund_is_not_counted_again(engine: Engine, db_url: str, now: datetime, post: Post) -> None:
    _, invoice, pi = paid(engine, db_url, now)
    with transaction(engine) as s:  # phase 1 committed; Stripe's event arrives before our answer
        ours = refunds.start(s, invoice_id=invoice.id, amount_minor=700, reason="requested_by_customer", now=now)
    listed = [refund_obj("re_3Ours", pi, 700, metadata={"refund_id": ours.id})]
    r = post(event("charge.refunded", charge(pi, amount=1700, amount_refunded=700, refunds=listed)))
    assert r.json()["outcome"].startswith("nothing to record")
    assert [x.id for x in _refunds(engine)] == [ours.id]
    # it was answered "pending"; refund.updated finishes it
    with transaction(engine) as s:
        row = s.get(Refund, ours.id)
        assert row is not None
        row.gateway_refund_id = "re_3Ours"
    post(event("refund.updated", refund_obj("re_3Ours", pi, 700, metadata={"refund_id": ours.id})))
    assert get(engine, Refund, ours.id).status == "succeeded"
    assert get(engine, Invoice, invoice.id).amount_refunded_minor == 700


def test_a_refund_on_a_charge_we_do_not_know_is_ignored(engine: Engine, db_url: str, now: datetime,
                                                        post: Post) -> None:
    paid(engine, db_url, now)
    before = counts(engine)
    r = post(event("charge.refunded", charge("pi_3SomeoneElse", amount=1700, amount_refunded=1700)))
    assert r.json()["outcome"].startswith("ignored")
    assert counts(engine) == before | {"webhook_events": before["webhook_events"] + 1}


# --------------------------------------------------------------------------- disputes


def test_dispute_created_is_recorded_and_lost_cancels_involuntarily(engine: Engine, db_url: str, now: datetime,
                                                                      post: Post) -> None:
    billed, _, pi = paid(engine, db_url, now)
    post(event("charge.dispute.created", dispute("dp_3One", pi, status="needs_response")))
    [row] = _disputes(engine)
    assert (row.status, row.subscription_id, row.amount_minor, row.currency, row.reason) == (
        "needs_response", billed.subscription_id, 1700, "USD", "fraudulent")
    assert "dispute.created" in _types(engine, billed.subscription_id)
    assert get(engine, Subscription, billed.subscription_id).status == "active"

    r = post(event("charge.dispute.closed", dispute("dp_3One", pi, status="lost")))
    assert "canceled subscription" in r.json()["outcome"]
    sub = get(engine, Subscription, billed.subscription_id)
    assert (sub.status, sub.cancellation_kind, sub.cancellation_reason, sub.ended_at) == (
        "canceled", "involuntary", "dispute", now)
    assert [d.status for d in _disputes(engine)] == ["lost"]
    assert _types(engine, billed.subscription_id)[-3:] == [
        "dispute.closed", "subscription.cancel_decided", "subscription.canceled"]
    with transaction(engine) as s:
        mail = s.exec(select(Notification).where(Notification.kind == "canceled_involuntary")).one()
    assert '"dispute"' in mail.payload


def test_dispute_won_is_recorded_only(engine: Engine, db_url: str, now: datetime, post: Post) -> None:
    billed, _, pi = paid(engine, db_url, now)
    post(event("charge.dispute.created", dispute("dp_3Won", pi, status="needs_response")))
    post(event("charge.dispute.updated", dispute("dp_3Won", pi, status="under_review")))
    post(event("charge.dispute.closed", dispute("dp_3Won", pi, status="won")))
    assert [d.status for d in _disputes(engine)] == ["won"]
    assert get(engine, Subscription, billed.subscription_id).status == "active"
    assert "dispute.closed" in _types(engine, billed.subscription_id)


def test_dispute_closed_before_created_arrives(engine: Engine, db_url: str, now: datetime, post: Post) -> None:
    billed, _, pi = paid(engine, db_url, now)
    post(event("charge.dispute.closed", dispute("dp_3Swap", pi, status="lost")))
    assert get(engine, Subscription, billed.subscription_id).status == "canceled"
    before = counts(engine)
    late = post(event("charge.dispute.created", dispute("dp_3Swap", pi, status="needs_response")))
    assert late.json()["outcome"].startswith("nothing to do")
    assert counts(engine) == before | {"webhook_events": before["webhook_events"] + 1}
    assert [d.status for d in _disputes(engine)] == ["lost"]
    assert _types(engine, billed.subscription_id).count("subscription.canceled") == 1


def test_lost_dispute_overrides_a_scheduled_voluntary_cancel(engine: Engine, db_url: str, now: datetime,
                                                             post: Post) -> None:
    from billing_engine import cancellations

    billed, _, pi = paid(engine, db_url, now)
    with transaction(engine) as s:
        sub = s.get(Subscription, billed.subscription_id)
        assert sub is not None
        cancellations.cancel(s, sub, reason="too_expensive", now=now)
    post(event("charge.dispute.closed", dispute("dp_3Sched", pi, status="lost")))
    sub = get(engine, Subscription, billed.subscription_id)
    assert (sub.status, sub.cancellation_kind, sub.cancellation_reason) == ("canceled", "involuntary", "dispute")


def _disputes(engine: Engine) -> list[Dispute]:
    with transaction(engine) as s:
        return list(s.exec(select(Dispute)))


# --------------------------------------------------------------------------- cards


def test_card_updater_changes_brand_last4_expiry(engine: Engine, now: datetime, post: Post) -> None:
    billed = subscribed(engine, now, token="pm_1Updated")
    r = post(event("payment_method.automatically_updated",
                   payment_method("pm_1Updated", brand="mastercard", last4="4444", exp_month=3, exp_year=2031)))
    assert r.json()["outcome"].startswith(f"updated {billed.payment_method_id}")
    pm = get(engine, PaymentMethod, billed.payment_method_id)
    assert (pm.brand, pm.last4, pm.exp_month, pm.exp_year, pm.status) == ("mastercard", "4444", 3, 2031, "active")
    with transaction(engine) as s:
        assert s.exec(select(Event).where(Event.type == "payment_method.updated")).one()
    before = counts(engine)
    same = post(event("payment_method.automatically_updated",
                      payment_method("pm_1Updated", brand="mastercard", last4="4444", exp_month=3, exp_year=2031)))
    assert same.json()["outcome"].startswith("nothing to do")
    assert counts(engine) == before | {"webhook_events": before["webhook_events"] + 1}


def test_detached_card_is_marked_and_the_cycle_ends_its_subscription(engine: Engine, db_url: str, now: datetime,
                                                                     post: Post) -> None:
    billed, _, _ = paid(engine, db_url, now, token="pm_1Detached")
    r = post(event("payment_method.detached", payment_method("pm_1Detached", last4="4242", exp_month=12,
                                                              exp_year=2034)))
    assert "1 live subscription(s)" in r.json()["outcome"]
    pm = get(engine, PaymentMethod, billed.payment_method_id)
    assert (pm.status, pm.detached_at) == ("detached", now)
    assert get(engine, Subscription, billed.subscription_id).status == "active"  # until its next charge
    next_month = now + timedelta(days=32)
    gateway = FakeGateway()
    run_cycle(engine, gateway, now=next_month, settings=load_settings(database_url=db_url))
    sub = get(engine, Subscription, billed.subscription_id)
    assert (sub.status, sub.cancellation_kind, sub.cancellation_reason) == (
        "canceled", "involuntary", "hard_decline:payment_method_detached")
    assert gateway.ledger == []


def test_card_events_for_cards_we_do_not_hold_are_ignored(engine: Engine, now: datetime, post: Post) -> None:
    subscribed(engine, now)
    before = counts(engine)
    pm = payment_method("pm_1NotOurs", last4="1111", exp_month=1, exp_year=2030)
    assert post(event("payment_method.automatically_updated", pm)).json()["outcome"].startswith("ignored")
    assert post(event("payment_method.detached", pm)).json()["outcome"].startswith("ignored")
    assert counts(engine) == before | {"webhook_events": before["webhook_events"] + 2}
