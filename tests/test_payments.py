"""payments.settle: one test per outcome of a gateway answer, on both backends."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import cancellations, invoices, payments
from billing_engine.db import transaction
from billing_engine.gateway.protocol import ChargeResult, ChargeStatus, DeclineKind
from billing_engine.models import (
    AttemptStatus,
    Event,
    Invoice,
    Notification,
    PaymentAttempt,
    PaymentMethod,
    Plan,
    Refund,
    RefundStatus,
    Subscription,
)
from billing_engine.payments import Outcome
from billing_engine.settings import DEFAULT_DUNNING_SCHEDULE
from tests.factories import make_subscription

PAID = ChargeResult(status=ChargeStatus.SUCCEEDED, gateway_charge_id="pi_paid", amount_minor=1700, currency="USD")
SOFT = ChargeResult(status=ChargeStatus.DECLINED, decline_code="insufficient_funds", decline_kind=DeclineKind.SOFT,
                    message="Your card has insufficient funds.")
HARD = ChargeResult(status=ChargeStatus.DECLINED, decline_code="stolen_card", decline_kind=DeclineKind.HARD,
                    message="Your card was declined.")
LOST = ChargeResult(status=ChargeStatus.UNKNOWN, message="timeout after sending")
ACTION = ChargeResult(status=ChargeStatus.REQUIRES_ACTION, gateway_charge_id="pi_3ds")


def _attempt(engine: Engine, now: datetime) -> tuple[str, str, str]:
    """A new subscription with a pending attempt on its first invoice: (sub, invoice, attempt) ids."""
    with transaction(engine) as s:
        sub = make_subscription(s, now)
        attempt = _start(s, sub, now)
        return sub.id, attempt.invoice_id, attempt.id


def _start(s: Session, sub: Subscription, now: datetime) -> PaymentAttempt:
    plan = s.get(Plan, sub.plan_id)
    pm = s.get(PaymentMethod, sub.payment_method_id)
    assert plan is not None and pm is not None
    invoice = invoices.for_period(s, sub, plan, sub.next_period_index, now=now)
    return payments.start_attempt(s, sub, invoice, pm, now=now)


def _settle(engine: Engine, attempt_id: str, result: ChargeResult, now: datetime) -> Outcome:
    with transaction(engine) as s:
        attempt = s.get(PaymentAttempt, attempt_id)
        assert attempt is not None
        return payments.settle(s, attempt, result, now=now)


def _event_types(s: Session, sub_id: str, since: datetime) -> list[str]:
    rows = s.exec(select(Event).where(Event.subscription_id == sub_id, col(Event.occurred_at) >= since)
                  .order_by(col(Event.id))).all()
    return [e.type for e in rows]


def _emails(s: Session, sub_id: str) -> list[str]:
    return [n.kind for n in s.exec(select(Notification).where(Notification.subscription_id == sub_id))
            if n.kind != "subscription_confirmed"]  # the sign-up e-mail: tests/test_customer_emails.py


def test_success_pays_the_invoice_advances_the_period_and_queues_a_receipt(engine: Engine, now: datetime) -> None:
    sub_id, invoice_id, attempt_id = _attempt(engine, now)
    assert _settle(engine, attempt_id, PAID, now) == Outcome.SUCCEEDED
    with Session(engine) as s:
        sub, inv, att = s.get(Subscription, sub_id), s.get(Invoice, invoice_id), s.get(PaymentAttempt, attempt_id)
        assert sub is not None and inv is not None and att is not None
        assert (att.status, att.gateway_charge_id) == (AttemptStatus.SUCCEEDED, "pi_paid")
        assert (inv.status, inv.amount_paid_minor) == ("paid", 1700)
        assert sub.status == "active" and sub.next_period_index == 1
        assert (sub.current_period_start, sub.current_period_end) == (inv.period_start, inv.period_end)
        assert sub.current_period_end > now
        after = [t for t in _event_types(s, sub_id, now) if t in ("invoice.paid", "subscription.activated",
                                                                  "subscription.renewed", "subscription.recovered")]
        assert after == ["invoice.paid", "subscription.activated"]
        assert _emails(s, sub_id) == ["receipt"]


def test_renewal_after_a_soft_decline_is_a_recovery(engine: Engine, now: datetime) -> None:
    sub_id, _, first = _attempt(engine, now)
    _settle(engine, first, PAID, now)
    later = now + timedelta(days=31)
    with transaction(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        second = _start(s, sub, later).id
    assert _settle(engine, second, SOFT, later) == Outcome.DECLINED_SOFT
    with transaction(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        third = _start(s, sub, later + timedelta(days=1)).id
    assert _settle(engine, third, PAID, later + timedelta(days=1)) == Outcome.SUCCEEDED
    with Session(engine) as s:
        kinds = _event_types(s, sub_id, later + timedelta(days=1))
        assert kinds.count("invoice.paid") == 1 and kinds.count("subscription.recovered") == 1
        assert "subscription.renewed" not in kinds
        sub = s.get(Subscription, sub_id)
        assert sub is not None and sub.status == "active" and sub.next_retry_at is None


def test_soft_decline_makes_it_past_due_with_a_retry_per_the_schedule(engine: Engine, now: datetime) -> None:
    sub_id, invoice_id, attempt_id = _attempt(engine, now)
    assert _settle(engine, attempt_id, SOFT, now) == Outcome.DECLINED_SOFT
    with Session(engine) as s:
        sub, inv, att = s.get(Subscription, sub_id), s.get(Invoice, invoice_id), s.get(PaymentAttempt, attempt_id)
        assert sub is not None and inv is not None and att is not None
        assert (att.status, att.decline_code, att.decline_kind) == (AttemptStatus.FAILED, "insufficient_funds", "soft")
        assert sub.status == "past_due"
        assert sub.next_retry_at == now + timedelta(days=DEFAULT_DUNNING_SCHEDULE[0])
        assert inv.status == "open"
        assert _emails(s, sub_id) == ["payment_failed"]


def test_hard_decline_ends_the_subscription_as_involuntary(engine: Engine, now: datetime) -> None:
    sub_id, invoice_id, attempt_id = _attempt(engine, now)
    assert _settle(engine, attempt_id, HARD, now) == Outcome.DECLINED_HARD
    with Session(engine) as s:
        sub, inv = s.get(Subscription, sub_id), s.get(Invoice, invoice_id)
        assert sub is not None and inv is not None
        assert (sub.status, sub.cancellation_kind) == ("canceled", "involuntary")
        assert sub.cancellation_reason == "hard_decline:stolen_card"
        assert inv.status == "uncollectible"
        assert _emails(s, sub_id) == ["canceled_involuntary"]


def test_requires_action_off_session_is_a_hard_decline(engine: Engine, now: datetime) -> None:
    sub_id, _, attempt_id = _attempt(engine, now)
    assert _settle(engine, attempt_id, ACTION, now) == Outcome.DECLINED_HARD
    with Session(engine) as s:
        sub, att = s.get(Subscription, sub_id), s.get(PaymentAttempt, attempt_id)
        assert sub is not None and att is not None
        assert att.status == AttemptStatus.REQUIRES_ACTION
        assert (sub.status, sub.cancellation_kind) == ("canceled", "involuntary")
        assert sub.cancellation_reason == "hard_decline:authentication_required"
        assert _emails(s, sub_id) == ["canceled_involuntary"]


def test_soft_decline_after_the_last_retry_ends_it_as_involuntary(engine: Engine, now: datetime) -> None:
    sub_id, invoice_id, attempt_id = _attempt(engine, now)
    at = now
    outcomes = [_settle(engine, attempt_id, SOFT, at)]
    while outcomes[-1] == Outcome.DECLINED_SOFT:
        with transaction(engine) as s:
            sub = s.get(Subscription, sub_id)
            assert sub is not None and sub.next_retry_at is not None
            at = sub.next_retry_at
            attempt_id = _start(s, sub, at).id
        outcomes.append(_settle(engine, attempt_id, SOFT, at))
    assert outcomes == [Outcome.DECLINED_SOFT] * len(DEFAULT_DUNNING_SCHEDULE) + [Outcome.EXHAUSTED]
    with Session(engine) as s:
        sub, inv = s.get(Subscription, sub_id), s.get(Invoice, invoice_id)
        assert sub is not None and inv is not None
        assert (sub.status, sub.cancellation_kind, sub.cancellation_reason) == ("canceled", "involuntary",
                                                                                "payment_failed")
        assert inv.status == "uncollectible"
        assert "canceled_involuntary" in _emails(s, sub_id)


def test_unknown_answer_moves_nothing_but_the_attempt(engine: Engine, now: datetime) -> None:
    sub_id, invoice_id, attempt_id = _attempt(engine, now)
    with Session(engine) as s:
        before = s.get(Subscription, sub_id)
        assert before is not None
        status_before, period_before = before.status, before.current_period_end
    assert _settle(engine, attempt_id, LOST, now) == Outcome.UNKNOWN
    with Session(engine) as s:
        sub, inv, att = s.get(Subscription, sub_id), s.get(Invoice, invoice_id), s.get(PaymentAttempt, attempt_id)
        assert sub is not None and inv is not None and att is not None
        assert att.status == AttemptStatus.UNKNOWN
        assert (sub.status, sub.current_period_end) == (status_before, period_before)
        assert inv.status == "open"
        assert _emails(s, sub_id) == []
        assert [a.id for a in s.exec(payments.unresolved_query(subscription_ids=[sub_id]))] == [attempt_id]


def test_settling_twice_changes_nothing(engine: Engine, now: datetime) -> None:
    sub_id, _, attempt_id = _attempt(engine, now)
    _settle(engine, attempt_id, PAID, now)
    with Session(engine) as s:
        events_before = len(_event_types(s, sub_id, now))
    later = now + timedelta(hours=1)
    assert _settle(engine, attempt_id, PAID, later) == Outcome.ALREADY_SETTLED
    assert _settle(engine, attempt_id, HARD, later) == Outcome.ALREADY_SETTLED
    with Session(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None and sub.status == "active" and sub.next_period_index == 1
        assert len(_event_types(s, sub_id, now)) == events_before
        assert _emails(s, sub_id) == ["receipt"]


def test_money_arriving_after_the_customer_cancelled_is_refunded(engine: Engine, now: datetime) -> None:
    sub_id, invoice_id, attempt_id = _attempt(engine, now)
    with transaction(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        cancellations.cancel(s, sub, now=now, at_period_end=False)
    assert _settle(engine, attempt_id, PAID, now) == Outcome.REFUNDING
    with Session(engine) as s:
        refund = s.exec(select(Refund).where(Refund.invoice_id == invoice_id)).one()
        assert refund.idempotency_key == f"auto_refund:{attempt_id}"
        assert (refund.status, refund.amount_minor) == (RefundStatus.PENDING, 1700)
        assert _event_types(s, sub_id, now).count("payment.refund_after_cancel") == 1
        sub = s.get(Subscription, sub_id)
        assert sub is not None and sub.status == "canceled" and sub.cancellation_kind == "voluntary"
        assert "receipt" not in _emails(s, sub_id)


def test_a_decline_for_a_subscription_that_ended_meanwhile_closes_its_invoice(engine, now) -> None:  # type: ignore[no-untyped-def]
    from billing_engine import subscriptions
    from billing_engine.models import Invoice, PaymentAttempt, PaymentMethod, Plan
    from tests.factories import make_subscription

    with transaction(engine) as s:
        sub = make_subscription(s, now)
        plan = s.get(Plan, sub.plan_id)
        pm = s.get(PaymentMethod, sub.payment_method_id)
        assert plan is not None and pm is not None
        inv = invoices.for_period(s, sub, plan, sub.next_period_index, now=now)
        attempt_id = payments.start_attempt(s, sub, inv, pm, now=now).id
        invoice_id = inv.id
    with transaction(engine) as s:  # the customer leaves while the charge is in flight
        cancellations.cancel(s, subscriptions.get(s, sub.id), at_period_end=False, now=now)
    with transaction(engine) as s:
        attempt = s.get(PaymentAttempt, attempt_id)
        assert attempt is not None
        payments.settle(s, attempt, ChargeResult(status=ChargeStatus.DECLINED, decline_code="insufficient_funds",
                                                 decline_kind=DeclineKind.SOFT), now=now)
    with Session(engine) as s:
        closed = s.get(Invoice, invoice_id)
        assert closed is not None and closed.status == "uncollectible"  # not open forever
