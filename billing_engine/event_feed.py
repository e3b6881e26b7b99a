"""The merchant-facing events: public types, their stable JSON, and the ``/v1/events`` feed.

The engine's audit log (:mod:`billing_engine.events`) records every state change in the
transaction that makes it. Some of those rows matter to a merchant's app; each such row
is ONE public event whose id is ``evt_<row id>`` (ids grow, so an id is also a cursor).
The public type and the JSON are derived from the row alone (plus the invoice's amount
and currency, which never change), so the feed, a webhook delivery and a replay of the
same event are byte-for-byte the same ``data``.

Envelope (Standard Webhooks payload structure)::

    {"id": "evt_123", "type": "subscription.canceled", "timestamp": "2026-01-31T00:00:00+00:00",
     "data": {"subscription_id": "sub_...", "customer_id": "cus_...", "kind": "voluntary", ...}}

Amounts are integer minor units with their ISO-4217 currency; times are UTC ISO-8601.
docs/webhooks.md lists every type and its ``data`` fields.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from billing_engine.errors import NotFound, ValidationError
from billing_engine.events import EventType
from billing_engine.models import Event, Invoice

ID_PREFIX = "evt_"


class PublicType(StrEnum):
    CUSTOMER_CREATED = "customer.created"
    SUBSCRIPTION_CREATED = "subscription.created"
    SUBSCRIPTION_TRIAL_ENDING = "subscription.trial_ending"
    SUBSCRIPTION_ACTIVATED = "subscription.activated"  # first payment (after a trial or at sign-up)
    SUBSCRIPTION_RENEWED = "subscription.renewed"
    SUBSCRIPTION_PAST_DUE = "subscription.past_due"
    SUBSCRIPTION_RECOVERED = "subscription.recovered"
    SUBSCRIPTION_CANCELED = "subscription.canceled"  # decided (now or for period end), kind + reason
    SUBSCRIPTION_REACTIVATED = "subscription.reactivated"
    SUBSCRIPTION_ENDED = "subscription.ended"  # access ended
    INVOICE_PAID = "invoice.paid"
    INVOICE_PAYMENT_FAILED = "invoice.payment_failed"
    INVOICE_UNCOLLECTIBLE = "invoice.uncollectible"
    REFUND_CREATED = "refund.created"
    PAYMENT_METHOD_UPDATED = "payment_method.updated"
    PAYMENT_METHOD_EXPIRING = "payment_method.expiring"


ALL_TYPES: tuple[str, ...] = tuple(t.value for t in PublicType)

# internal event type -> public type (rows of any other type are not public)
PUBLIC_TYPE: dict[str, PublicType] = {
    EventType.CUSTOMER_CREATED: PublicType.CUSTOMER_CREATED,
    EventType.SUBSCRIPTION_CREATED: PublicType.SUBSCRIPTION_CREATED,
    EventType.SUBSCRIPTION_TRIAL_ENDING: PublicType.SUBSCRIPTION_TRIAL_ENDING,
    EventType.SUBSCRIPTION_ACTIVATED: PublicType.SUBSCRIPTION_ACTIVATED,
    EventType.SUBSCRIPTION_RENEWED: PublicType.SUBSCRIPTION_RENEWED,
    EventType.SUBSCRIPTION_PAST_DUE: PublicType.SUBSCRIPTION_PAST_DUE,
    EventType.SUBSCRIPTION_RECOVERED: PublicType.SUBSCRIPTION_RECOVERED,
    EventType.SUBSCRIPTION_CANCEL_SCHEDULED: PublicType.SUBSCRIPTION_CANCELED,
    EventType.SUBSCRIPTION_CANCEL_DECIDED: PublicType.SUBSCRIPTION_CANCELED,
    EventType.SUBSCRIPTION_REACTIVATED: PublicType.SUBSCRIPTION_REACTIVATED,
    EventType.SUBSCRIPTION_CANCELED: PublicType.SUBSCRIPTION_ENDED,
    EventType.INVOICE_PAID: PublicType.INVOICE_PAID,
    EventType.PAYMENT_FAILED: PublicType.INVOICE_PAYMENT_FAILED,
    EventType.INVOICE_UNCOLLECTIBLE: PublicType.INVOICE_UNCOLLECTIBLE,
    EventType.REFUND_CREATED: PublicType.REFUND_CREATED,
    EventType.PAYMENT_METHOD_UPDATED: PublicType.PAYMENT_METHOD_UPDATED,
    EventType.SUBSCRIPTION_PAYMENT_METHOD_CHANGED: PublicType.PAYMENT_METHOD_UPDATED,
    EventType.PAYMENT_METHOD_EXPIRING: PublicType.PAYMENT_METHOD_EXPIRING,
}


def internal_types(public: Sequence[str] | None = None) -> list[str]:
    """The internal event types behind ``public`` types (all public ones when None)."""
    wanted = set(ALL_TYPES if public is None else public)
    return sorted(str(k) for k, v in PUBLIC_TYPE.items() if v.value in wanted)


def parse_types(raw: Sequence[str] | str | None, *, field: str = "type") -> list[str] | None:
    """Public types from ``a,b`` strings or repeated values; ``*`` or nothing means all.
    A type may end with ``.*`` (``subscription.*``)."""
    if raw is None:
        return None
    items = [raw] if isinstance(raw, str) else list(raw)
    names = [p.strip() for item in items for p in item.split(",") if p.strip()]
    if not names or "*" in names:
        return None
    out: list[str] = []
    for n in names:
        if n.endswith(".*"):
            matched = [t for t in ALL_TYPES if t.startswith(n[:-1])]
            if not matched:
                raise ValidationError(f"no event type matches {n!r}; known: {', '.join(ALL_TYPES)}", field=field)
            out.extend(matched)
        elif n in ALL_TYPES:
            out.append(n)
        else:
            raise ValidationError(f"unknown event type {n!r}; known: {', '.join(ALL_TYPES)}", field=field)
    return list(dict.fromkeys(out))


def event_id(row_id: int) -> str:
    return f"{ID_PREFIX}{row_id}"


def parse_event_id(value: str, *, field: str = "event") -> int:
    """``evt_123`` (or ``123``) -> 123."""
    raw = value.strip()
    raw = raw[len(ID_PREFIX):] if raw.startswith(ID_PREFIX) else raw
    if not raw.isdigit() or len(raw) > 18:
        raise ValidationError(f"not an event id: {value!r} (expected evt_<number>)", field=field)
    return int(raw)


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def _pick(p: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: p.get(k) for k in keys}


@dataclass(frozen=True, slots=True)
class InvoiceFacts:
    amount_minor: int
    currency: str


def _data(ev: Event, ptype: PublicType, p: dict[str, Any], inv: InvoiceFacts | None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if ev.subscription_id:
        d["subscription_id"] = ev.subscription_id
    if ev.customer_id:
        d["customer_id"] = ev.customer_id
    if ev.invoice_id:
        d["invoice_id"] = ev.invoice_id
    money = {"amount_minor": inv.amount_minor, "currency": inv.currency} if inv else _pick(p, "amount_minor", "currency")
    t = ev.type
    if ptype is PublicType.CUSTOMER_CREATED:
        d |= _pick(p, "email")
    elif ptype is PublicType.SUBSCRIPTION_CREATED:
        d |= _pick(p, "plan_id", "plan_code", "status", "amount_minor", "currency", "trial_end", "billing_anchor")
    elif ptype is PublicType.SUBSCRIPTION_TRIAL_ENDING:
        d |= _pick(p, "trial_end", "amount_minor", "currency")
    elif ptype in (PublicType.SUBSCRIPTION_ACTIVATED, PublicType.SUBSCRIPTION_RENEWED, PublicType.SUBSCRIPTION_RECOVERED):
        d |= {"status": "active", "previous_status": p.get("previous_status"),
              "period_start": p.get("period_start"), "period_end": p.get("period_end")} | money
    elif ptype is PublicType.SUBSCRIPTION_PAST_DUE:
        d |= {"status": "past_due", "next_retry_at": p.get("next_retry_at"), "decline_code": p.get("decline_code")}
        d |= money
    elif ptype is PublicType.SUBSCRIPTION_CANCELED:
        d |= {"kind": p.get("kind"), "reason": p.get("reason"), "ends_at": p.get("effective_at"),
              "at_period_end": t == EventType.SUBSCRIPTION_CANCEL_SCHEDULED}
    elif ptype is PublicType.SUBSCRIPTION_REACTIVATED:
        d |= {"status": "active"} | _pick(p, "current_period_end")
    elif ptype is PublicType.SUBSCRIPTION_ENDED:
        d |= {"status": "canceled"} | _pick(p, "kind", "reason", "ended_at", "previous_status")
    elif ptype is PublicType.INVOICE_PAID:
        d |= money | _pick(p, "period_start", "period_end", "recovered_by_dunning") | {"payment_id": p.get("attempt_id")}
    elif ptype is PublicType.INVOICE_PAYMENT_FAILED:
        d |= money | _pick(p, "decline_code", "decline_kind") | {"payment_id": p.get("attempt_id")}
    elif ptype is PublicType.INVOICE_UNCOLLECTIBLE:
        d |= money
    elif ptype is PublicType.REFUND_CREATED:
        d |= _pick(p, "refund_id", "amount_minor", "currency", "reason")
    elif ptype is PublicType.PAYMENT_METHOD_UPDATED:
        if t == EventType.SUBSCRIPTION_PAYMENT_METHOD_CHANGED:
            d |= {"payment_method_id": p.get("to"), "previous_payment_method_id": p.get("from")}
        else:
            d |= _pick(p, "payment_method_id", "last4", "exp_month", "exp_year")
    elif ptype is PublicType.PAYMENT_METHOD_EXPIRING:
        d |= _pick(p, "payment_method_id", "brand", "last4", "exp_month", "exp_year", "next_charge_at")
    return {k: _iso(v) for k, v in d.items()}


def present(ev: Event, inv: InvoiceFacts | None = None) -> dict[str, Any] | None:
    """The public JSON of an event row (None when the row is not a public event)."""
    ptype = PUBLIC_TYPE.get(ev.type)
    if ptype is None or ev.id is None:
        return None
    payload: dict[str, Any] = json.loads(ev.payload or "{}")
    return {"id": event_id(ev.id), "type": ptype.value, "timestamp": ev.created_at.isoformat(),
            "data": _data(ev, ptype, payload, inv)}


def present_many(session: Session, rows: Sequence[Event]) -> list[dict[str, Any]]:
    """:func:`present` for a page of rows, with ONE look-up of their invoices' amounts."""
    inv_ids = {r.invoice_id for r in rows if r.invoice_id}
    facts: dict[str, InvoiceFacts] = {}
    if inv_ids:
        t = Invoice.__table__  # type: ignore[attr-defined]
        for iid, amount, cur in session.connection().execute(
                sa_select(t.c.id, t.c.amount_minor, t.c.currency).where(t.c.id.in_(inv_ids))):
            facts[iid] = InvoiceFacts(int(amount), cur)
    out = []
    for r in rows:
        p = present(r, facts.get(r.invoice_id) if r.invoice_id else None)
        if p is not None:
            out.append(p)
    return out


def list_events(
    session: Session,
    *,
    after: int | None = None,
    types: Sequence[str] | None = None,
    created_gte: datetime | None = None,
    created_lt: datetime | None = None,
    subscription_id: str | None = None,
    customer_id: str | None = None,
    limit: int = 100,
) -> list[Event]:
    """Public event rows, oldest first, after the cursor ``after`` (a row id)."""
    q = (select(Event).where(col(Event.type).in_(internal_types(types)))
         .order_by(col(Event.id)).limit(limit))
    if after is not None:
        q = q.where(col(Event.id) > after)
    if created_gte is not None:
        q = q.where(col(Event.created_at) >= created_gte)
    if created_lt is not None:
        q = q.where(col(Event.created_at) < created_lt)
    if subscription_id:
        q = q.where(col(Event.subscription_id) == subscription_id)
    if customer_id:
        q = q.where(col(Event.customer_id) == customer_id)
    return list(session.exec(q))


def get(session: Session, event: str | int) -> Event:
    """A public event by id (``evt_123``)."""
    rid = event if isinstance(event, int) else parse_event_id(event)
    ev = session.get(Event, rid)
    if ev is None or ev.type not in PUBLIC_TYPE:
        raise NotFound(f"no event {event_id(rid)!r}", field="event")
    return ev

