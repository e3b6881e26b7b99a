"""One row per invoice that had a failed payment -- the base of the recovery attribution and
the involuntary churn funnel reports. Definitions: docs/reports.md ("Recovery attribution").

Per failed invoice: its first failure (the failed attempt with the lowest number: when, decline
code and kind), its outcome as of the range end (``recovered`` when paid before it,
``lost`` when closed unpaid -- uncollectible or void -- before it, else ``in_dunning``) and,
for a recovered one, what recovered it: the last of these between the first failure and the
payment --

- ``admin``: the subscription's card was switched by an admin (event
  ``subscription.payment_method_changed``, actor ``admin`` or ``admin:...``);
- ``customer_card_update``: the card was switched by anyone else (the customer);
- ``card_updater``: the card updater changed the paying card's details (event
  ``payment_method.updated`` from ``stripe:webhook`` for the card that paid);
- ``automatic_retry``: none of these -- the dunning schedule's retry just worked.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, and_, case, cast, func, literal, or_, select, union
from sqlalchemy.sql.selectable import Subquery
from sqlalchemy.types import BigInteger

from billing_engine.models import Event, PaymentAttempt, ReportFailedInvoice
from billing_engine.reports.params import ReportQuery
from billing_engine.reports.sql import invoices, reason_group, subscriptions, ts

attempts: Table = PaymentAttempt.__table__  # type: ignore[attr-defined]
events: Table = Event.__table__  # type: ignore[attr-defined]
failed_table: Table = ReportFailedInvoice.__table__  # type: ignore[attr-defined]

METHODS = ("automatic_retry", "customer_card_update", "card_updater", "admin")
CARD_CHANGED = "subscription.payment_method_changed"
CARD_UPDATED = "payment_method.updated"
CARD_UPDATER_ACTOR = "stripe:webhook"


def seconds_between(conn: Any, a: Any, b: Any) -> Any:
    """Whole seconds from ``a`` to ``b`` (rounded), on either dialect."""
    if conn.dialect.name == "postgresql":
        return cast(func.round(func.extract("epoch", b - a)), BigInteger)
    return cast(func.round((func.julianday(b) - func.julianday(a)) * 86400.0), BigInteger)


def failed_invoice_rows(conn: Any, only_invoices: Any = None, only_subscriptions: Any = None) -> Any:
    """The raw facts of every invoice with a failed attempt (optionally only these invoice /
    subscription ids): the rows of the ``report_failed_invoices`` rollup. Columns:
    invoice_id, subscription_id, currency, plan_id, amount_minor, first_failed_at,
    decline_code, decline_kind, status, paid_at, closed_at, paid_minor, method (what
    recovered a paid one), seconds (first failure to payment), cancellation_kind and
    reason_group (the subscription's, as ``report_failed_days`` groups by them)."""
    att, inv, ev = attempts, invoices, events
    scope = []
    if only_invoices is not None and only_subscriptions is not None:
        # one IN over a union, not an OR of two: each side is an index probe (an OR of two
        # subqueries made PostgreSQL scan every attempt, 15 s per fold at 13 M attempts)
        by_sub = attempts.alias("by_sub")
        scope = [att.c.invoice_id.in_(union(select(by_sub.c.invoice_id)
                                            .where(by_sub.c.subscription_id.in_(only_subscriptions)),
                                            select(only_invoices.subquery().c[0])))]
    elif only_invoices is not None:
        scope = [att.c.invoice_id.in_(only_invoices)]
    elif only_subscriptions is not None:
        scope = [att.c.subscription_id.in_(only_subscriptions)]
    first_no = (select(att.c.invoice_id, func.min(att.c.attempt_number).label("n"))
                .where(att.c.status == "failed", *scope).group_by(att.c.invoice_id).subquery("first_fail_no"))
    first = (
        select(att.c.invoice_id, att.c.subscription_id, att.c.completed_at.label("failed_at"), att.c.decline_code,
               att.c.decline_kind)
        .select_from(att.join(first_no, and_(first_no.c.invoice_id == att.c.invoice_id,
                                             first_no.c.n == att.c.attempt_number)))
        .subquery("first_fail")
    )
    paid = inv.c.status == "paid"
    ok = (select(att.c.invoice_id, att.c.payment_method_id).where(att.c.status == "succeeded")
          .subquery("paid_attempt"))
    window = and_(ev.c.occurred_at > first.c.failed_at, ev.c.occurred_at <= inv.c.paid_at)
    is_admin = or_(ev.c.actor == "admin", ev.c.actor.like("admin:%"))

    def last(*conds: Any) -> Any:
        return (select(func.max(ev.c.occurred_at)).where(window, *conds).scalar_subquery())

    admin_at = last(ev.c.type == CARD_CHANGED, ev.c.subscription_id == first.c.subscription_id, is_admin)
    customer_at = last(ev.c.type == CARD_CHANGED, ev.c.subscription_id == first.c.subscription_id, ~is_admin)
    updater_at = last(ev.c.type == CARD_UPDATED, ev.c.actor == CARD_UPDATER_ACTOR,
                      ev.c.customer_id == inv.c.customer_id,
                      ev.c.payload.like(literal('%"payment_method_id": "') + ok.c.payment_method_id + literal('"%')))
    b = (
        select(
            inv.c.id.label("invoice_id"), inv.c.subscription_id, inv.c.currency, inv.c.plan_id, inv.c.amount_minor,
            first.c.failed_at.label("first_failed_at"), first.c.decline_code, first.c.decline_kind,
            inv.c.status, inv.c.paid_at, inv.c.closed_at,
            case((paid, inv.c.amount_paid_minor), else_=0).label("paid_minor"),
            case((paid, admin_at)).label("admin_at"),
            case((paid, customer_at)).label("customer_at"),
            case((paid, updater_at)).label("updater_at"),
            case((paid, seconds_between(conn, first.c.failed_at, inv.c.paid_at))).label("seconds"),
            subscriptions.c.cancellation_kind, reason_group(subscriptions.c.cancellation_reason).label("reason_group"),
        )
        .select_from(first.join(inv, inv.c.id == first.c.invoice_id).outerjoin(ok, ok.c.invoice_id == inv.c.id)
                     .join(subscriptions, subscriptions.c.id == inv.c.subscription_id))
        .where(first.c.failed_at.is_not(None))
        .subquery("failed_base")
    )

    def latest(x: Any, *others: Any) -> Any:
        return and_(x.is_not(None), *[or_(o.is_(None), x >= o) for o in others])

    method = case(
        (b.c.status != "paid", None),
        (latest(b.c.admin_at, b.c.customer_at, b.c.updater_at), "admin"),
        (latest(b.c.customer_at, b.c.updater_at), "customer_card_update"),
        (b.c.updater_at.is_not(None), "card_updater"),
        else_="automatic_retry",
    )
    return select(b.c.invoice_id, b.c.subscription_id, b.c.currency, b.c.plan_id, b.c.amount_minor,
                  b.c.first_failed_at, b.c.decline_code, b.c.decline_kind, b.c.status, b.c.paid_at, b.c.closed_at,
                  b.c.paid_minor, method.label("method"), b.c.seconds, b.c.cancellation_kind, b.c.reason_group)


def failed_invoices(conn: Any, q: ReportQuery) -> Subquery:
    """The failed invoices whose first failure is in ``[q.start, q.end)``, read from the
    ``report_failed_invoices`` rollup (see :mod:`billing_engine.reports.rollups`), with their
    outcome as of ``q.end``. Columns: invoice_id, currency, plan_id, amount_minor,
    first_failed_at, decline_code, decline_kind, outcome, paid_minor, method, seconds,
    cancellation_kind, reason_group."""
    f, sub = failed_table, subscriptions
    paid = and_(f.c.status == "paid", f.c.paid_at < ts(q.end))
    return (
        select(
            f.c.invoice_id, f.c.currency, f.c.plan_id, f.c.amount_minor, f.c.first_failed_at, f.c.decline_code,
            f.c.decline_kind,
            case((paid, "recovered"),
                 (and_(f.c.status.in_(("uncollectible", "void")), f.c.closed_at < ts(q.end)), "lost"),
                 else_="in_dunning").label("outcome"),
            case((paid, f.c.paid_minor), else_=0).label("paid_minor"),
            case((paid, f.c.method)).label("method"),
            case((paid, f.c.seconds)).label("seconds"),
            sub.c.cancellation_kind, reason_group(sub.c.cancellation_reason).label("reason_group"),
        )
        .select_from(f.join(sub, sub.c.id == f.c.subscription_id))
        .where(f.c.first_failed_at >= ts(q.start), f.c.first_failed_at < ts(q.end))
        .subquery("failed_invoices")
    )
