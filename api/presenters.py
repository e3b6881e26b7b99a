"""Rows -> response bodies (the same fields the CLI's ``--json`` prints, plus display amounts)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlmodel import Session, col, select

from api import fastjson
from api import schemas as S
from billing_engine import cancellations, customers, events, invoices, payment_methods, plans, refunds, subscriptions
from billing_engine.models import (
    Consent,
    Customer,
    Invoice,
    PaymentAttempt,
    PaymentMethod,
    Plan,
    Refund,
    Subscription,
)


def plan(p: Plan, *, subscriber_count: int | None = None) -> S.PlanOut:
    return S.PlanOut(**plans.summary(p), amount=S.display(p.amount_minor, p.currency),
                     subscriber_count=subscriber_count)


def plan_with_count(s: Session, p: Plan) -> S.PlanOut:
    return plan(p, subscriber_count=plans.subscriber_count(s, p.id))


def customer(c: Customer) -> S.CustomerOut:
    return S.CustomerOut(**customers.summary(c))


def consent(c: Consent) -> S.ConsentOut:
    return S.ConsentOut(
        id=c.id, accepted_at=c.accepted_at, ip_address=c.ip_address, user_agent=c.user_agent, channel=c.channel,
        terms_version=c.terms_version, terms_sha256=c.terms_sha256, amount_minor=c.amount_minor,
        currency=c.currency, interval=c.interval, interval_count=c.interval_count, plan_id=c.plan_id,
        revoked_at=c.revoked_at,
    )


def payment_method(s: Session, pm: PaymentMethod) -> S.PaymentMethodOut:
    rows = s.exec(select(Consent).where(Consent.payment_method_id == pm.id).order_by(col(Consent.accepted_at)))
    return S.PaymentMethodOut(**payment_methods.summary(pm), consents=[consent(c) for c in rows])


def payment_methods_of(s: Session, pms: list[PaymentMethod]) -> list[S.PaymentMethodOut]:
    """A list of cards with their consents: one query for all the consents."""
    consents: dict[str, list[S.ConsentOut]] = {pm.id: [] for pm in pms}
    if pms:
        for c in s.exec(select(Consent).where(col(Consent.payment_method_id).in_(list(consents)))
                        .order_by(col(Consent.accepted_at))):
            consents[c.payment_method_id].append(consent(c))
    return [S.PaymentMethodOut(**payment_methods.summary(pm), consents=consents[pm.id]) for pm in pms]


def subscription(s: Session, sub: Subscription) -> S.SubscriptionOut:
    return S.SubscriptionOut(**_sub_fields(s, sub))


def _sub_fields(s: Session, sub: Subscription) -> dict[str, Any]:
    fields = subscriptions.summary(s, sub)
    return fields | {"amount": S.display(fields["amount_minor"], fields["currency"])}


@lru_cache(maxsize=4096)
def _plan_display(amount_minor: int, currency: str) -> str:
    """:func:`api.schemas.display` of a plan's price (ints from the database): a page of 50
    rows has a handful of plans, formatted once each."""
    return S.display(amount_minor, currency)


def subscription_plain(fields: dict[str, Any]) -> dict[str, Any]:
    """A row of :func:`billing_engine.subscriptions.summaries` (the list's batched path) as
    the JSON object of ``SubscriptionOut`` (:func:`api.fastjson.plain`), without the model."""
    fields["amount"] = _plan_display(int(fields["amount_minor"]), fields["currency"])
    return fastjson.plain(S.SubscriptionOut, fields)


def subscription_detail(s: Session, sub: Subscription) -> S.SubscriptionDetail:
    return _detail(s, _sub_fields(s, sub))


def subscription_detail_plain(s: Session, fields: dict[str, Any]) -> dict[str, Any]:
    """:func:`billing_engine.subscriptions.show_summary` with its events as the JSON object of
    ``SubscriptionDetail`` (:func:`api.fastjson.plain`), without the models."""
    fields["amount"] = S.display(fields["amount_minor"], fields["currency"])
    fields["events"] = [fastjson.plain(S.EventOut, {"id": e.id or 0, "type": str(e.type), "at": e.occurred_at,
                                                    "actor": e.actor, "payload": events.payload_of(e)})
                        for e in events.for_subscription(s, fields["id"])]
    return fastjson.plain(S.SubscriptionDetail, fields)


def _detail(s: Session, fields: dict[str, Any]) -> S.SubscriptionDetail:
    evs = [S.EventOut(id=e.id or 0, type=e.type, at=e.occurred_at, actor=e.actor, payload=events.payload_of(e))
           for e in events.for_subscription(s, fields["id"])]
    return S.SubscriptionDetail(**fields, events=evs)


def cancel_result(s: Session, res: cancellations.CancelResult) -> S.CancelOut:
    return S.CancelOut(**_sub_fields(s, res.subscription), effective_at=res.effective_at, changed=res.changed)


def attempt(a: PaymentAttempt) -> S.PaymentAttemptOut:
    return S.PaymentAttemptOut(**invoices.attempt_summary(a), amount=S.display(a.amount_minor, a.currency))


def refund(r: Refund) -> S.RefundOut:
    return S.RefundOut(**refunds.summary(r), amount=S.display(r.amount_minor, r.currency))


def _invoice_fields(inv: Invoice) -> dict[str, Any]:
    return invoices.summary(inv) | {"amount": S.display(inv.amount_minor, inv.currency)}


def invoice(inv: Invoice) -> S.InvoiceOut:
    return S.InvoiceOut(**_invoice_fields(inv))


def invoice_detail(s: Session, inv: Invoice) -> S.InvoiceDetail:
    return S.InvoiceDetail(
        **_invoice_fields(inv),
        attempts=[attempt(a) for a in invoices.attempts(s, inv.id)],
        refunds=[refund(r) for r in refunds.list_refunds(s, invoice_id=inv.id)],
    )
