"""Subscribe charges the first period at once, exactly once, and says what happened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import first_charge
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.errors import Conflict, GatewayUnavailable
from billing_engine.first_charge import PaymentBehavior
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import (
    AttemptStatus,
    Invoice,
    InvoiceStatus,
    Notification,
    PaymentAttempt,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.settings import load_settings
from tests.factories import make_card, make_customer, make_plan, remind_ahead

SETTINGS = load_settings()
T0 = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
DECLINES = "pm_card_chargeDeclinedInsufficientFunds"


def _setup(engine: Engine, *tokens: str, trial_days: int = 0) -> tuple[str, list[str]]:
    with transaction(engine) as s:
        plan = make_plan(s, T0, trial_days=trial_days)
        cust = make_customer(s, T0)
        pms = [make_card(s, T0, cust, plan, token=t).id for t in tokens]
        return cust.id, pms


def _subscribe(engine: Engine, gw: FakeGateway, cust: str, pm: str, **kw: object) -> first_charge.Subscribed:
    return first_charge.subscribe(engine, gw, customer=cust, plan="basic-monthly", payment_method=pm, now=T0,
                                  **kw)  # type: ignore[arg-type]


def _state(engine: Engine, sub_id: str) -> tuple[Subscription, list[Invoice], list[PaymentAttempt], list[str]]:
    with Session(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        invs = list(s.exec(select(Invoice).where(Invoice.subscription_id == sub_id).order_by(col(Invoice.created_at))))
        atts = list(s.exec(select(PaymentAttempt).where(PaymentAttempt.subscription_id == sub_id)
                           .order_by(col(PaymentAttempt.attempt_number))))
        mails = [n.kind for n in s.exec(select(Notification).where(Notification.subscription_id == sub_id))]
        return sub, invs, atts, mails


def test_a_good_card_is_charged_at_once_and_the_subscription_is_active(engine: Engine) -> None:
    cust, (pm,) = _setup(engine, "pm_card_visa")
    gw = FakeGateway()
    res = _subscribe(engine, gw, cust, pm)
    assert res.first_charge.status == "succeeded" and not res.failed
    assert (res.first_charge.amount_minor, res.first_charge.currency) == (1700, "USD")
    sub, invs, atts, mails = _state(engine, res.subscription_id)
    assert sub.status == SubscriptionStatus.ACTIVE and sub.activated_at == T0
    assert (sub.current_period_start, sub.current_period_end) == (T0, datetime(2026, 4, 10, 9, 30, tzinfo=UTC))
    assert [(i.status, i.amount_minor) for i in invs] == [(InvoiceStatus.PAID, 1700)]
    assert [a.idempotency_key for a in atts] == [f"billing:{invs[0].id}:attempt:1"]
    assert [(e.kind, e.amount_minor, e.idempotency_key) for e in gw.ledger] == [("charge", 1700, atts[0].idempotency_key)]
    assert mails == ["subscription_confirmed", "receipt"]  # the terms, then the receipt
    assert sub.lease_owner is None  # the run-cycle may take it from here
    # the run-cycle at the same instant has nothing to do; a month later it renews once
    assert run_cycle(engine, gw, now=T0, settings=SETTINGS).charged == 0
    remind_ahead(engine, T0 + timedelta(days=31), SETTINGS)  # the renewal's reminder
    assert run_cycle(engine, gw, now=T0 + timedelta(days=31), settings=SETTINGS).succeeded == 1
    assert [e.amount_minor for e in gw.ledger] == [1700, 1700]


def test_the_same_subscribe_again_after_success_is_refused_and_charges_nothing(engine: Engine) -> None:
    cust, (pm,) = _setup(engine, "pm_card_visa")
    gw = FakeGateway()
    res = _subscribe(engine, gw, cust, pm)
    with pytest.raises(Conflict) as exc:
        _subscribe(engine, gw, cust, pm)
    assert res.subscription_id in str(exc.value) and exc.value.field == "plan"
    assert "already has an active subscription" in str(exc.value)
    assert len(gw.ledger) == 1


def test_a_declined_card_fails_the_subscribe_and_keeps_nothing_due(engine: Engine) -> None:
    cust, (bad, good) = _setup(engine, DECLINES, "pm_card_visa")
    gw = FakeGateway()
    res = _subscribe(engine, gw, cust, bad)
    assert res.failed and res.first_charge.status == "declined"
    assert res.first_charge.decline_code == "insufficient_funds" and not res.first_charge.kept_incomplete
    err = first_charge.declined_error(res)
    assert err.http_status == 402 and err.exit_code == 5 and "insufficient_funds" in str(err)
    assert "nothing was charged" in str(err)
    sub, invs, atts, mails = _state(engine, res.subscription_id)
    assert sub.status == SubscriptionStatus.INCOMPLETE_EXPIRED and sub.cancellation_kind is None  # not churn
    assert [i.status for i in invs] == [InvoiceStatus.VOID]
    assert [a.status for a in atts] == [AttemptStatus.FAILED]
    assert mails == [] and gw.ledger == []
    # nothing is left for the run-cycle
    assert run_cycle(engine, gw, now=T0 + timedelta(days=3), settings=SETTINGS).due == 0
    # the same request again declines again (no money), then another card: charged exactly once
    again = _subscribe(engine, gw, cust, bad)
    assert again.failed and again.subscription_id != res.subscription_id
    ok = _subscribe(engine, gw, cust, good)
    assert ok.first_charge.status == "succeeded"
    assert [(e.kind, e.amount_minor) for e in gw.ledger] == [("charge", 1700)]


def test_allow_incomplete_keeps_it_for_a_retry_that_charges_once(engine: Engine) -> None:
    cust, (bad, good) = _setup(engine, DECLINES, "pm_card_visa")
    gw = FakeGateway()
    res = _subscribe(engine, gw, cust, bad, payment_behavior=PaymentBehavior.ALLOW_INCOMPLETE)
    assert res.failed and res.first_charge.kept_incomplete
    assert "stays incomplete" in str(first_charge.declined_error(res))
    sub, invs, _, _ = _state(engine, res.subscription_id)
    assert sub.status == SubscriptionStatus.INCOMPLETE and [i.status for i in invs] == [InvoiceStatus.OPEN]
    retry = _subscribe(engine, gw, cust, good, payment_behavior=PaymentBehavior.ALLOW_INCOMPLETE)
    assert retry.subscription_id == res.subscription_id and retry.first_charge.status == "succeeded"
    sub, invs, atts, mails = _state(engine, res.subscription_id)
    assert sub.status == SubscriptionStatus.ACTIVE and sub.payment_method_id == good
    assert [i.status for i in invs] == [InvoiceStatus.PAID]
    assert [(a.attempt_number, a.status) for a in atts] == [(1, AttemptStatus.FAILED), (2, AttemptStatus.SUCCEEDED)]
    assert [(e.kind, e.amount_minor) for e in gw.ledger] == [("charge", 1700)] and mails == ["subscription_confirmed", "receipt"]


def test_no_answer_is_not_a_decline_and_the_retry_reconciles_without_charging_twice(engine: Engine) -> None:
    cust, (pm,) = _setup(engine, "pm_card_visa")
    gw = FakeGateway()
    gw.unknown_next(charged=True, times=3)  # money moved, every try of the call lost its answer
    with pytest.raises(GatewayUnavailable) as exc:
        _subscribe(engine, gw, cust, pm)
    assert "no decline" in str(exc.value)
    subs = _subs(engine)
    assert [s.status for s in subs] == [SubscriptionStatus.INCOMPLETE]
    _, _, atts, _ = _state(engine, subs[0].id)
    assert [a.status for a in atts] == [AttemptStatus.UNKNOWN]
    res = _subscribe(engine, gw, cust, pm)  # the same request: found by its key, not charged again
    assert res.subscription_id == subs[0].id and res.first_charge.status == "succeeded"
    assert len([e for e in gw.ledger if e.kind == "charge"]) == 1


def test_a_trial_a_future_start_and_a_deferred_first_charge_charge_nothing_now(engine: Engine) -> None:
    cust, (pm,) = _setup(engine, "pm_card_visa")
    gw = FakeGateway()
    deferred = _subscribe(engine, gw, cust, pm, defer_first_charge=True)
    assert deferred.first_charge.status == "deferred" and gw.ledger == []
    assert _state(engine, deferred.subscription_id)[0].status == SubscriptionStatus.INCOMPLETE
    assert run_cycle(engine, gw, now=T0, settings=SETTINGS).succeeded == 1  # bulk loads: the run-cycle charges
    assert len(gw.ledger) == 1
    with transaction(engine) as s:
        trial_plan = make_plan(s, T0, code="trial-monthly", trial_days=14)
        cust2 = make_customer(s, T0, email="bo@example.com")
        pm2 = make_card(s, T0, cust2, trial_plan).id
    trial = first_charge.subscribe(engine, gw, customer=cust2.id, plan="trial-monthly", payment_method=pm2, now=T0)
    assert trial.first_charge.status == "trialing" and len(gw.ledger) == 1


def _subs(engine: Engine) -> list[Subscription]:
    with Session(engine) as s:
        return list(s.exec(select(Subscription).order_by(col(Subscription.created_at))))


class _Refusing(FakeGateway):
    """The gateway refuses the request itself (a revoked API key): our configuration, not the card."""

    def charge(self, request):  # type: ignore[no-untyped-def]
        from billing_engine.gateway.protocol import GatewayAuthError

        raise GatewayAuthError("401: Invalid API Key provided")


def test_a_gateway_refusing_our_request_is_no_decline_and_the_next_run_settles_it(engine: Engine) -> None:
    from billing_engine.gateway.protocol import GatewayAuthError

    cust, (pm,) = _setup(engine, "pm_card_visa")
    with pytest.raises(GatewayAuthError):
        _subscribe(engine, _Refusing(), cust, pm)
    [sub] = _subs(engine)
    _, invs, atts, mails = _state(engine, sub.id)
    assert sub.status == SubscriptionStatus.INCOMPLETE and sub.lease_owner is None  # not expired, not declined
    assert [a.status for a in atts] == [AttemptStatus.PENDING] and mails == ["subscription_confirmed"]  # the terms; no receipt
    gw = FakeGateway()  # the key fixed: the run-cycle reconciles the same attempt (same key), charged once
    assert run_cycle(engine, gw, now=T0 + timedelta(minutes=5), settings=SETTINGS).succeeded == 1
    _, _, atts, _ = _state(engine, sub.id)
    assert [(a.attempt_number, a.status) for a in atts] == [(1, AttemptStatus.SUCCEEDED)]
    assert [e.idempotency_key for e in gw.ledger] == [atts[0].idempotency_key]


def test_a_card_that_needs_authentication_answers_requires_action(engine: Engine) -> None:
    cust, (pm,) = _setup(engine, "pm_card_authenticationRequired")
    gw = FakeGateway()
    res = _subscribe(engine, gw, cust, pm)
    assert res.failed and res.first_charge.status == "requires_action"
    err = first_charge.declined_error(res)
    assert err.code == "payment_requires_action" and err.http_status == 402 and "authentication" in str(err)
    assert _state(engine, res.subscription_id)[0].status == SubscriptionStatus.INCOMPLETE_EXPIRED and gw.ledger == []
