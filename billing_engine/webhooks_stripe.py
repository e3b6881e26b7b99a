"""What a Stripe webhook event changes (the HTTP endpoint is ``api/routers/webhooks.py``).

:func:`receive` is the unit the endpoint runs in ONE transaction: insert the event
into ``webhook_events`` (its id is the primary key; ``ON CONFLICT DO NOTHING``), apply
its effect with :func:`handle_event`, stamp ``handled_at`` and the outcome. If the
effect fails, the insert rolls back with it and Stripe's retry tries again; a
delivery whose id is already stored changes nothing.

Events may arrive in any order and for objects we never made; every handler looks the
object up by our own ids (PaymentIntent ``metadata``) or the gateway's, and otherwise
records the event and ignores it:

* ``payment_intent.succeeded`` / ``payment_intent.payment_failed``: a ``pending`` or
  ``unknown`` attempt is settled with :func:`billing_engine.payments.settle` (the same
  function the run-cycle uses, so whoever learns the answer first applies it once);
  an attempt already settled is left alone.
* ``charge.refunded``: refunds made outside the engine (Stripe dashboard) are recorded
  so that what we hold as refunded on the charge equals Stripe's ``amount_refunded``;
  refunds the engine made itself (pending or succeeded) are never counted twice.
  ``refund.updated`` / ``charge.refund.updated`` / ``refund.failed`` settle refunds of
  ours that Stripe answered ``pending``.
* ``charge.dispute.created`` / ``.updated`` / ``.closed``: a :class:`Dispute` row; a
  dispute closed ``lost`` cancels the subscription at once (involuntary, ``dispute``).
* ``payment_method.automatically_updated``: the card updater's new brand/last4/expiry.
* ``checkout.session.completed`` (``mode=setup``) / ``setup_intent.succeeded``: the card
  a customer entered on Stripe's hosted page for a card update started on the
  self-service page (:mod:`billing_engine.card_updates`) is stored with the consent
  given there and put on the subscription; whichever event comes first does it. The
  endpoint then retries a subscription in dunning at once, after commit.
* ``payment_method.detached``: the card is marked detached. Live subscriptions on it
  are not touched here: the run-cycle cancels them (involuntary,
  ``hard_decline:payment_method_detached``) when their next charge is due, unless a
  new card is attached first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, func, select

from billing_engine import cancellations, card_updates, events, payment_methods, payments, refunds, subscriptions
from billing_engine.db import locks_rows
from billing_engine.errors import ValidationError
from billing_engine.gateway.protocol import CardDetails, ChargeStatus, PaymentGateway, RefundResult, RefundStatus
from billing_engine.gateway.stripe import intent_result
from billing_engine.models import (
    AttemptStatus,
    CancellationReason,
    CardUpdate,
    Dispute,
    Invoice,
    PaymentAttempt,
    PaymentMethod,
    Refund,
    Subscription,
    SubscriptionStatus,
    WebhookEvent,
)
from billing_engine.models import RefundStatus as OurRefundStatus
from billing_engine.settings import DEFAULT_DUNNING_SCHEDULE

log = logging.getLogger(__name__)

GATEWAY = "stripe"
ACTOR = "stripe:webhook"
FINAL_DISPUTE_STATUSES = frozenset({"won", "lost", "warning_closed", "prevented"})

# The events to enable on the Stripe webhook endpoint (docs/stripe.md).
HANDLED_EVENTS = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "charge.refund.updated",
    "refund.updated",
    "refund.failed",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "payment_method.automatically_updated",
    "payment_method.detached",
    "checkout.session.completed",
    "setup_intent.succeeded",
)
CARD_UPDATE_EVENTS = frozenset({"checkout.session.completed", "setup_intent.succeeded"})


@dataclass(frozen=True, kw_only=True)
class Receipt:
    event_id: str
    type: str
    duplicate: bool  # already received: nothing was applied this time
    outcome: str | None


def receive(
    session: Session,
    event: dict[str, Any],
    *,
    payload: str,
    now: datetime,
    schedule_days: Sequence[int] = DEFAULT_DUNNING_SCHEDULE,
    gateway: PaymentGateway | None = None,
) -> Receipt:
    """Record a verified event once and apply it, in the caller's transaction.
    ``gateway`` reads the card of a completed card update (Stripe)."""
    event_id, event_type = _identity(event)
    if not _insert(session, event_id=event_id, event_type=event_type, payload=payload, now=now):
        row = session.get(WebhookEvent, event_id)
        return Receipt(event_id=event_id, type=event_type, duplicate=True, outcome=row.outcome if row else None)
    outcome = handle_event(session, event, now, schedule_days=schedule_days, gateway=gateway)
    row = session.get(WebhookEvent, event_id)
    assert row is not None
    row.handled_at = now
    row.outcome = outcome[:500]
    session.add(row)
    session.flush()
    log.info("stripe webhook %s %s: %s", event_id, event_type, outcome)
    return Receipt(event_id=event_id, type=event_type, duplicate=False, outcome=outcome)


def handle_event(
    session: Session,
    event: dict[str, Any],
    now: datetime,
    *,
    schedule_days: Sequence[int] = DEFAULT_DUNNING_SCHEDULE,
    gateway: PaymentGateway | None = None,
) -> str:
    """Apply one event's effect (no deduplication here); returns a one-line outcome."""
    _, event_type = _identity(event)
    obj = (event.get("data") or {}).get("object")
    if not isinstance(obj, dict):
        return "ignored: the event has no data.object"
    if event_type in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        return _payment_intent(session, obj, now=now, schedule_days=schedule_days)
    if event_type in CARD_UPDATE_EVENTS:
        return _card_update(session, event_type, obj, now=now, gateway=gateway)
    handler = _HANDLERS.get(event_type)
    if handler is None:
        return f"ignored: {event_type} is not handled"
    return handler(session, obj, now)


# --------------------------------------------------------------------------- dedupe


def _identity(event: dict[str, Any]) -> tuple[str, str]:
    event_id, event_type = event.get("id"), event.get("type")
    if event.get("object") != "event" or not isinstance(event_id, str) or not isinstance(event_type, str):
        raise ValidationError("not a Stripe event (needs object=event, id and type)", field="body")
    if not event_id or len(event_id) > 100 or len(event_type) > 100:
        raise ValidationError("the event id or type is empty or too long", field="body")
    return event_id, event_type


def _insert(session: Session, *, event_id: str, event_type: str, payload: str, now: datetime) -> bool:
    """Insert the event row unless its id is stored (a concurrent delivery waits on the key)."""
    table = WebhookEvent.__table__  # type: ignore[attr-defined]
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = (
        insert(table)
        .values(id=event_id, gateway=GATEWAY, type=event_type, payload=payload, received_at=now)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(table.c.id)
    )
    return session.execute(stmt).first() is not None


# --------------------------------------------------------------------------- payments


def _payment_intent(
    session: Session, pi: dict[str, Any], *, now: datetime, schedule_days: Sequence[int]
) -> str:
    attempt = _find_attempt(session, pi)
    pi_id = pi.get("id")
    if attempt is None:
        return f"ignored: no payment attempt of ours for {pi_id}"
    currency = str(pi.get("currency") or "").upper()
    if pi.get("amount") != attempt.amount_minor or currency != attempt.currency:
        log.warning("stripe %s does not match attempt %s (amount/currency)", pi_id, attempt.id)
        return (f"ignored: {pi_id} is {pi.get('amount')} {currency}, attempt {attempt.id} is "
                f"{attempt.amount_minor} {attempt.currency}")
    result = intent_result(pi)
    if attempt.status not in (AttemptStatus.PENDING, AttemptStatus.UNKNOWN):
        said = "succeeded" if result.status == ChargeStatus.SUCCEEDED else "failed"
        agrees = (result.status == ChargeStatus.SUCCEEDED) == (attempt.status == AttemptStatus.SUCCEEDED)
        if not agrees:
            log.warning("stripe says %s %s, attempt %s is %s: review", pi_id, said, attempt.id, attempt.status)
        return f"already settled: attempt {attempt.id} is {attempt.status}" + (
            "" if agrees else f" but Stripe says {said}: needs review")
    if result.status == ChargeStatus.UNKNOWN:
        return f"ignored: {pi_id} is {pi.get('status')}; reconciled later"
    outcome = payments.settle(session, attempt, result, now=now, schedule_days=schedule_days, actor=ACTOR)
    return f"settled attempt {attempt.id}: {outcome.value}"


def _find_attempt(session: Session, pi: dict[str, Any]) -> PaymentAttempt | None:
    """Our attempt for a PaymentIntent: by metadata attempt_id, idempotency key or intent id."""
    metadata = pi.get("metadata") or {}
    key = metadata.get("idempotency_key")
    attempt: PaymentAttempt | None = None
    if isinstance(metadata.get("attempt_id"), str):
        attempt = session.get(PaymentAttempt, metadata["attempt_id"])
    if attempt is None and isinstance(key, str):
        attempt = session.exec(select(PaymentAttempt).where(PaymentAttempt.idempotency_key == key)).first()
    if attempt is None and isinstance(pi.get("id"), str):
        attempt = _attempt_by_intent(session, pi["id"])
    if attempt is None or attempt.gateway != GATEWAY:
        return None
    if isinstance(key, str) and attempt.idempotency_key != key:
        return None  # someone else's metadata: not ours
    return attempt


def _attempt_by_intent(session: Session, intent_id: str) -> PaymentAttempt | None:
    return session.exec(select(PaymentAttempt).where(
        PaymentAttempt.gateway_charge_id == intent_id, PaymentAttempt.gateway == GATEWAY,
    ).order_by(col(PaymentAttempt.created_at))).first()


# --------------------------------------------------------------------------- refunds


def _charge_refunded(session: Session, charge: dict[str, Any], now: datetime) -> str:
    """Record refunds made outside the engine so our total matches ``amount_refunded``."""
    charge_id, intent_id = charge.get("id"), charge.get("payment_intent")
    if not isinstance(intent_id, str):
        return f"ignored: charge {charge_id} has no payment_intent"
    attempt = _attempt_by_intent(session, intent_id)
    if attempt is None or attempt.status != AttemptStatus.SUCCEEDED:
        return f"ignored: no succeeded payment of ours for {intent_id}"
    invoice = session.get(Invoice, attempt.invoice_id, with_for_update=locks_rows(session))
    assert invoice is not None
    if str(charge.get("currency") or "").upper() != invoice.currency:
        return f"ignored: charge {charge_id} is in {charge.get('currency')}, invoice {invoice.id} in {invoice.currency}"
    target = min(int(charge.get("amount_refunded") or 0), attempt.amount_minor)
    known = int(session.exec(select(func.coalesce(func.sum(Refund.amount_minor), 0)).where(
        Refund.payment_attempt_id == attempt.id,
        col(Refund.status).in_([OurRefundStatus.PENDING, OurRefundStatus.SUCCEEDED]),
    )).one())
    missing = target - known
    if missing <= 0:
        return f"nothing to record: {known} of {target} refunded on {intent_id} already known"
    recorded: list[str] = []
    listed = (charge.get("refunds") or {}).get("data") or []
    listed = [r for r in listed if isinstance(r, dict) and isinstance(r.get("id"), str)]
    for r in sorted(listed, key=lambda r: (r.get("created") or 0, r["id"])):
        amount = int(r.get("amount") or 0)
        if r.get("status") in ("failed", "canceled") or not 0 < amount <= missing or _is_ours(session, r):
            continue
        recorded.append(_record_refund(session, attempt, invoice, amount=amount, gateway_refund_id=str(r["id"]),
                                       key=f"stripe:{r['id']}", reason=r.get("reason"), now=now))
        missing -= amount
    if missing > 0:  # the event does not list the refunds (API versions since 2022-11-15)
        recorded.append(_record_refund(session, attempt, invoice, amount=missing, gateway_refund_id=None,
                                       key=f"stripe:{charge_id}:refunded_to:{target}", reason=None, now=now))
    return f"recorded refund(s) {', '.join(recorded)} on invoice {invoice.id}"


def _is_ours(session: Session, refund: dict[str, Any]) -> bool:
    """A refund the engine made (or already recorded): by gateway id or our metadata."""
    if session.exec(select(Refund.id).where(Refund.gateway_refund_id == str(refund["id"]))).first():
        return True
    ours = (refund.get("metadata") or {}).get("refund_id")
    return isinstance(ours, str) and session.get(Refund, ours) is not None


def _record_refund(
    session: Session, attempt: PaymentAttempt, invoice: Invoice, *, amount: int, gateway_refund_id: str | None,
    key: str, reason: str | None, now: datetime,
) -> str:
    refund = Refund(invoice_id=invoice.id, payment_attempt_id=attempt.id, amount_minor=amount,
                    currency=invoice.currency, status=OurRefundStatus.PENDING,
                    reason=(reason or "refunded in Stripe")[:200], idempotency_key=key, created_at=now)
    session.add(refund)
    session.flush()
    refunds.settle(session, refund, RefundResult(status=RefundStatus.SUCCEEDED, gateway_refund_id=gateway_refund_id,
                                                 amount_minor=amount), now=now, actor=ACTOR)
    return refund.id


def _refund_updated(session: Session, obj: dict[str, Any], now: datetime) -> str:
    """A refund of ours that Stripe answered ``pending`` has finished (or failed)."""
    refund = None
    if isinstance(obj.get("id"), str):
        refund = session.exec(select(Refund).where(Refund.gateway_refund_id == obj["id"])).first()
    ours = (obj.get("metadata") or {}).get("refund_id")
    if refund is None and isinstance(ours, str):
        refund = session.get(Refund, ours)
    if refund is None:
        return f"ignored: refund {obj.get('id')} is not one of ours (charge.refunded records it)"
    status = {"succeeded": RefundStatus.SUCCEEDED, "failed": RefundStatus.FAILED,
              "canceled": RefundStatus.FAILED}.get(str(obj.get("status")))
    if status is None or refund.status != OurRefundStatus.PENDING:
        return f"nothing to do: refund {refund.id} is {refund.status}, Stripe says {obj.get('status')}"
    refunds.settle(session, refund, RefundResult(status=status, gateway_refund_id=obj.get("id"),
                                                 amount_minor=int(obj.get("amount") or 0),
                                                 message=obj.get("failure_reason")), now=now, actor=ACTOR)
    return f"refund {refund.id} is {refund.status}"


# --------------------------------------------------------------------------- disputes


def _dispute(session: Session, obj: dict[str, Any], now: datetime) -> str:
    """Create or update the Dispute; the first time it is seen lost, cancel the subscription."""
    dispute_id, status = str(obj.get("id")), str(obj.get("status"))
    intent_id = obj.get("payment_intent")
    attempt = _attempt_by_intent(session, intent_id) if isinstance(intent_id, str) else None
    dispute = session.exec(select(Dispute).where(Dispute.gateway_dispute_id == dispute_id)).first()
    previous = dispute.status if dispute is not None else None
    notes: list[str] = []
    if dispute is None:
        dispute = Dispute(gateway_dispute_id=dispute_id, payment_attempt_id=attempt.id if attempt else None,
                          subscription_id=attempt.subscription_id if attempt else None,
                          amount_minor=int(obj.get("amount") or 0), currency=str(obj.get("currency") or "").upper(),
                          reason=_short(obj.get("reason"), 80), status=status[:40], created_at=now, updated_at=now)
        session.add(dispute)
        session.flush()
        events.record(session, events.EventType.DISPUTE_CREATED, at=now, actor=ACTOR,
                      subscription_id=dispute.subscription_id, invoice_id=attempt.invoice_id if attempt else None,
                      payload={"dispute_id": dispute.id, "gateway_dispute_id": dispute_id, "status": status,
                               "reason": dispute.reason, "amount_minor": dispute.amount_minor,
                               "currency": dispute.currency, "attempt_id": dispute.payment_attempt_id})
        notes.append(f"recorded dispute {dispute.id} ({status})")
    elif previous in FINAL_DISPUTE_STATUSES or previous == status:
        return f"nothing to do: dispute {dispute.id} is {previous}"  # a late, older event
    else:
        dispute.status, dispute.updated_at = status[:40], now
        dispute.amount_minor = int(obj.get("amount") or dispute.amount_minor)
        session.add(dispute)
        notes.append(f"dispute {dispute.id}: {previous} -> {status}")
    if status in FINAL_DISPUTE_STATUSES:
        events.record(session, events.EventType.DISPUTE_CLOSED, at=now, actor=ACTOR,
                      subscription_id=dispute.subscription_id,
                      payload={"dispute_id": dispute.id, "gateway_dispute_id": dispute_id, "status": status})
        if status == "lost":
            notes.append(_cancel_for_dispute(session, dispute, now=now))
    if attempt is None:
        notes.append(f"not linked to a payment of ours ({intent_id})")
    return "; ".join(notes)


def _cancel_for_dispute(session: Session, dispute: Dispute, *, now: datetime) -> str:
    if dispute.subscription_id is None:
        return "no subscription to cancel"
    locking = locks_rows(session)
    sub = session.get(Subscription, dispute.subscription_id, with_for_update=locking, populate_existing=locking)
    assert sub is not None
    if sub.status == SubscriptionStatus.CANCELED:
        return f"subscription {sub.id} already canceled"
    cancellations.end_involuntarily(session, sub, reason=CancellationReason.DISPUTE.value, now=now,
                                    actor="system:dispute", details={"dispute_id": dispute.id})
    return f"canceled subscription {sub.id} (involuntary, dispute)"


# --------------------------------------------------------------------------- cards


def _stored_cards(session: Session, token: object) -> list[PaymentMethod]:
    if not isinstance(token, str):
        return []
    return list(session.exec(select(PaymentMethod).where(
        PaymentMethod.gateway == GATEWAY, PaymentMethod.token == token).order_by(col(PaymentMethod.id))))


def _card_updated(session: Session, obj: dict[str, Any], now: datetime) -> str:
    card = obj.get("card")
    stored = _stored_cards(session, obj.get("id"))
    if not stored or not isinstance(card, dict):
        return f"ignored: payment method {obj.get('id')} is not one of ours (or not a card)"
    details = CardDetails(token=str(obj["id"]), brand=str(card.get("brand") or "unknown"),
                          last4=str(card.get("last4") or "")[:4], exp_month=int(card.get("exp_month") or 0),
                          exp_year=int(card.get("exp_year") or 0), fingerprint=card.get("fingerprint"))
    changed = [pm for pm in stored if (pm.brand, pm.last4, pm.exp_month, pm.exp_year)
               != (details.brand, details.last4, details.exp_month, details.exp_year)]
    for pm in changed:
        payment_methods.update_card(session, pm, details, now=now, actor=ACTOR)
    if not changed:
        return f"nothing to do: {obj['id']} already has these card details"
    return f"updated {', '.join(pm.id for pm in changed)} to {details.brand} {details.last4} " \
           f"{details.exp_month:02d}/{details.exp_year}"


def _card_detached(session: Session, obj: dict[str, Any], now: datetime) -> str:
    stored = _stored_cards(session, obj.get("id"))
    if not stored:
        return f"ignored: payment method {obj.get('id')} is not one of ours"
    live = 0
    for pm in stored:
        payment_methods.detach(session, pm, now=now, actor=ACTOR)
        live += len(subscriptions.live_for_payment_method(session, pm.id))
    return (f"detached {', '.join(pm.id for pm in stored)}; {live} live subscription(s) on it end "
            "at their next charge unless a new card is attached")


# --------------------------------------------------------------------------- card updates


def _card_update(
    session: Session, event_type: str, obj: dict[str, Any], *, now: datetime, gateway: PaymentGateway | None,
) -> str:
    """The customer saved a card on Stripe's hosted page: store it with the consent they
    gave on the self-service page, and put their subscription on it."""
    update = card_updates.find_for_stripe_object(session, obj)
    if update is None:
        return f"ignored: {obj.get('id')} is not a card update of ours"
    locked = session.get(CardUpdate, update.id, with_for_update=locks_rows(session), populate_existing=True)
    assert locked is not None
    if locked.status == card_updates.COMPLETED:
        return f"nothing to do: card update {locked.id} is already completed"
    if event_type == "checkout.session.completed":
        if obj.get("mode") != "setup" or obj.get("status") != "complete":
            return f"ignored: checkout session {obj.get('id')} is not a completed set-up"
        setup_id = obj.get("setup_intent")
        pm_token = None
    else:
        if obj.get("status") != "succeeded":
            return f"ignored: SetupIntent {obj.get('id')} is {obj.get('status')}"
        setup_id = obj.get("id")
        pm_token = obj.get("payment_method")
    if not isinstance(setup_id, str):
        return f"ignored: no SetupIntent on {obj.get('id')}"
    if gateway is None or not hasattr(gateway, "setup_intent_card"):
        raise ValidationError("a Stripe gateway is needed to read the new card", field="gateway")
    found = gateway.setup_intent_card(setup_id)
    if found is None:
        return f"ignored: SetupIntent {setup_id} has not succeeded"
    _, card = found
    if isinstance(pm_token, str) and pm_token != card.token:
        return f"ignored: SetupIntent {setup_id} saved {card.token}, the event says {pm_token}"
    done = card_updates.complete(session, locked, token=card.token, card=card, setup_id=setup_id, gateway=GATEWAY,
                                 now=now, actor="customer")
    return (f"card update {done.update_id}: {card.brand} {card.last4} on subscription {done.subscription_id}"
            + ("; retried at once" if done.retry_now else ""))


# --------------------------------------------------------------------------- helpers




def _short(value: object, limit: int) -> str | None:
    return str(value)[:limit] if value is not None else None


_HANDLERS: dict[str, Callable[[Session, dict[str, Any], datetime], str]] = {
    "charge.refunded": _charge_refunded,
    "charge.refund.updated": _refund_updated,
    "refund.updated": _refund_updated,
    "refund.failed": _refund_updated,
    "charge.dispute.created": _dispute,
    "charge.dispute.updated": _dispute,
    "charge.dispute.closed": _dispute,
    "payment_method.automatically_updated": _card_updated,
    "payment_method.detached": _card_detached,
}
