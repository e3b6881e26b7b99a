"""The two database phases of a batch of renewals, set-based.

``prepare`` (ONE transaction, committed before any gateway call): re-read the claimed
subscriptions under lock, :func:`renewals.decide` each one, apply the decisions that
need no gateway (scheduled ends, involuntary ends), and write the invoices and the
``pending`` attempts — with their fixed idempotency keys — for the whole batch in a
few multi-row statements.

``settle`` (ONE transaction): apply the gateway's answers. A plain successful renewal
(the common case) is written set-based: attempts, invoices and subscriptions updated
with ``executemany``, two event rows and one receipt per renewal inserted in bulk.
Everything else (declines and dunning, unknown answers, a charge that landed after
the customer cancelled) goes through :func:`payments.settle`, the same function the
Stripe webhook uses. Both paths apply the one rule in :func:`payments.paid_changes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_engine import cancellations, events, notifications, payments, renewals
from billing_engine.gateway.protocol import ChargeRequest, ChargeResult, ChargeStatus
from billing_engine.invoices import for_period
from billing_engine.models import (
    AttemptStatus,
    Customer,
    Event,
    Invoice,
    InvoiceStatus,
    Notification,
    PaymentAttempt,
    PaymentMethod,
    Plan,
    Subscription,
    SubscriptionStatus,
    new_id,
)
from billing_engine.renewals import ActionKind


@dataclass(frozen=True, kw_only=True)
class Step:
    """One gateway call to make: a new charge, or the reconciliation of an old one."""

    subscription_id: str
    attempt_id: str
    reconcile: bool
    request: ChargeRequest


@dataclass(kw_only=True)
class Prepared:
    steps: list[Step] = field(default_factory=list)
    settled_ids: list[str] = field(default_factory=list)  # no gateway call: release now
    actions: list[tuple[str, renewals.Action]] = field(default_factory=list)


def _locking(session: Session) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def _load_subs(session: Session, ids: Sequence[str], *, worker: str | None) -> list[Subscription]:
    q = select(Subscription).where(col(Subscription.id).in_(list(ids))).order_by(col(Subscription.id))
    if _locking(session):
        q = q.with_for_update()
    subs = list(session.exec(q.execution_options(populate_existing=True)))
    if worker is not None:
        subs = [s for s in subs if s.lease_owner == worker]  # a claim we lost is not ours to touch
    order = {sid: i for i, sid in enumerate(ids)}
    return sorted(subs, key=lambda s: order[s.id])


def _request(attempt: PaymentAttempt, pm: PaymentMethod, gateway_customer_id: str | None) -> ChargeRequest:
    return ChargeRequest(
        amount_minor=attempt.amount_minor, currency=attempt.currency, payment_method_token=pm.token,
        idempotency_key=attempt.idempotency_key, gateway_customer_id=gateway_customer_id,
        description=f"Subscription {attempt.subscription_id} invoice {attempt.invoice_id}",
        metadata={"invoice_id": attempt.invoice_id, "subscription_id": attempt.subscription_id,
                  "attempt_id": attempt.id, "idempotency_key": attempt.idempotency_key},
    )


def prepare(
    session: Session, ids: Sequence[str], *, now: datetime, worker: str, plans: dict[str, Plan],
) -> Prepared:
    subs = _load_subs(session, ids, worker=worker)
    snaps = renewals.load(session, subs, plans)
    out = Prepared()
    customers = {c.id: c.gateway_customer_id for c in session.exec(
        select(Customer).where(col(Customer.id).in_({s.customer_id for s in subs})))} if subs else {}
    charges: list[renewals.Snapshot] = []
    for snap in snaps:
        sub = snap.sub
        action = renewals.decide(snap, now)
        out.actions.append((sub.id, action))
        if action.kind == ActionKind.RECONCILE:
            attempt = snap.unresolved
            assert attempt is not None
            pm = snap.payment_method if snap.payment_method and snap.payment_method.id == attempt.payment_method_id \
                else session.get(PaymentMethod, attempt.payment_method_id)
            assert pm is not None
            out.steps.append(Step(subscription_id=sub.id, attempt_id=attempt.id, reconcile=True,
                                  request=_request(attempt, pm, customers.get(sub.customer_id))))
            continue
        if action.kind == ActionKind.CHARGE:
            charges.append(snap)
            continue
        out.settled_ids.append(sub.id)
        if action.kind == ActionKind.END_AT_PERIOD_END:
            cancellations.end_at_period_end(session, sub, now=now)
        elif action.kind == ActionKind.CANCEL_INVOLUNTARY:
            assert action.reason is not None
            cancellations.end_involuntarily(session, sub, reason=action.reason, now=now, actor="system:cycle",
                                            details={"message": action.message})
    if charges:
        try:
            with session.begin_nested():
                attempts = _start_attempts_bulk(session, charges, now=now)
        except IntegrityError:  # an invoice exists that the snapshot did not show: row by row
            attempts = _start_attempts_one_by_one(session, charges, now=now)
        for snap, attempt in zip(charges, attempts, strict=True):
            assert snap.payment_method is not None
            out.steps.append(Step(subscription_id=snap.sub.id, attempt_id=attempt.id, reconcile=False,
                                  request=_request(attempt, snap.payment_method, customers.get(snap.sub.customer_id))))
    return out


def _start_attempts_bulk(session: Session, charges: list[renewals.Snapshot], *, now: datetime) -> list[PaymentAttempt]:
    new_invoices: list[dict[str, Any]] = []
    bumped: list[dict[str, Any]] = []
    attempts: list[PaymentAttempt] = []
    for snap in charges:
        sub, plan, pm = snap.sub, snap.plan, snap.payment_method
        assert pm is not None
        inv = snap.open_invoice
        if inv is None:
            start, end = renewals.next_period(sub, plan)
            inv_id, number, amount, currency = new_id("in"), 1, plan.amount_minor, plan.currency
            new_invoices.append({
                "id": inv_id, "subscription_id": sub.id, "customer_id": sub.customer_id, "plan_id": plan.id,
                "period_index": sub.next_period_index, "period_start": start, "period_end": end,
                "amount_minor": amount, "currency": currency, "status": InvoiceStatus.OPEN, "attempt_count": 1,
                "amount_paid_minor": 0, "amount_refunded_minor": 0, "created_at": now,
            })
        else:
            inv_id, number, amount, currency = inv.id, inv.attempt_count + 1, inv.amount_minor, inv.currency
            bumped.append({"_id": inv_id, "attempt_count": number})
        attempts.append(PaymentAttempt(
            id=new_id("pay"), invoice_id=inv_id, subscription_id=sub.id, payment_method_id=pm.id,
            attempt_number=number, idempotency_key=payments.idempotency_key_for(inv_id, number), gateway=pm.gateway,
            status=AttemptStatus.PENDING, amount_minor=amount, currency=currency, created_at=now,
        ))
    conn = session.connection()
    if new_invoices:
        conn.execute(insert(Invoice.__table__), new_invoices)  # type: ignore[attr-defined]
    _bulk_update(session, Invoice, bumped)
    conn.execute(insert(PaymentAttempt.__table__), [a.model_dump() for a in attempts])  # type: ignore[attr-defined]
    return attempts


def _start_attempts_one_by_one(session: Session, charges: list[renewals.Snapshot], *, now: datetime) -> list[PaymentAttempt]:
    out = []
    for snap in charges:
        assert snap.payment_method is not None
        invoice = for_period(session, snap.sub, snap.plan, snap.sub.next_period_index, now=now)
        out.append(payments.start_attempt(session, snap.sub, invoice, snap.payment_method, now=now))
    return out


# --------------------------------------------------------------------------- settle


@dataclass(frozen=True, kw_only=True)
class Settled:
    subscription_id: str
    attempt_id: str
    outcome: payments.Outcome
    amount_minor: int
    currency: str
    next_due_at: datetime | None = None  # after a success: when the next period is due (catch-up)


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = session.bind.dialect.name if session.bind is not None else ""
    table = Notification.__table__  # type: ignore[attr-defined]
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"])
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"])
    else:  # pragma: no cover - the two supported databases are above
        stmt = insert(table)
    session.connection().execute(stmt, rows)


def settle(
    session: Session,
    answers: Sequence[tuple[Step, ChargeResult]],
    *,
    now: datetime,
    schedule_days: Sequence[int],
    plans: dict[str, Plan],
    actor: str = "system:cycle",
) -> list[Settled]:
    """Apply definitive-or-unknown answers of one batch (errors never reach here)."""
    if not answers:
        return []
    subs = {s.id: s for s in _load_subs(session, [st.subscription_id for st, _ in answers], worker=None)}
    aq = select(PaymentAttempt).where(col(PaymentAttempt.id).in_([st.attempt_id for st, _ in answers]))
    if _locking(session):
        aq = aq.with_for_update()
    attempts = {a.id: a for a in session.exec(aq.execution_options(populate_existing=True))}
    invoices = {i.id: i for i in session.exec(
        select(Invoice).where(col(Invoice.id).in_({a.invoice_id for a in attempts.values()})))}
    emails = {c.id: c.email for c in session.exec(
        select(Customer).where(col(Customer.id).in_({s.customer_id for s in subs.values()})))}
    for pid in {s.plan_id for s in subs.values()} | {i.plan_id for i in invoices.values()}:
        if pid not in plans:
            p = session.get(Plan, pid)
            assert p is not None
            plans[pid] = p

    out: list[Settled] = []
    att_rows: list[dict[str, Any]] = []
    inv_rows: list[dict[str, Any]] = []
    sub_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    receipts: list[dict[str, Any]] = []
    for step, result in answers:
        attempt, sub = attempts[step.attempt_id], subs[step.subscription_id]
        invoice = invoices[attempt.invoice_id]
        if attempt.status not in payments.UNRESOLVED:
            out.append(Settled(subscription_id=sub.id, attempt_id=attempt.id, outcome=payments.Outcome.ALREADY_SETTLED,
                               amount_minor=attempt.amount_minor, currency=attempt.currency))
            continue
        paid = None
        if result.status == ChargeStatus.SUCCEEDED:
            paid = payments.paid_changes(sub, invoice, attempt, result, invoice_plan=plans[invoice.plan_id],
                                         plan_name=plans[sub.plan_id].name, now=now)
        next_due: datetime | None = None
        if paid is None or paid.refund or "status" not in paid.subscription:
            outcome = payments.settle(session, attempt, result, now=now, schedule_days=schedule_days, actor=actor)
            if outcome == payments.Outcome.SUCCEEDED and sub.status != SubscriptionStatus.CANCELED:
                next_due = sub.current_period_end
        else:
            next_due = paid.subscription["current_period_end"]
            outcome = payments.Outcome.SUCCEEDED
            att_rows.append({"_id": attempt.id, **paid.attempt})
            inv_rows.append({"_id": invoice.id, **paid.invoice})
            sub_rows.append({"_id": sub.id, "activated_at": sub.activated_at, **paid.subscription})
            for etype, payload in paid.events:
                event_rows.append(events.row(etype, at=now, actor=actor, subscription_id=sub.id,
                                             customer_id=sub.customer_id, invoice_id=invoice.id, payload=payload))
            if paid.receipt is not None and sub.customer_id in emails:
                receipts.append(notifications.row(
                    notifications.Kind.RECEIPT, customer_id=sub.customer_id, to_email=emails[sub.customer_id],
                    dedupe_key=f"receipt:{invoice.id}", at=now, subscription_id=sub.id, payload=paid.receipt))
        out.append(Settled(subscription_id=sub.id, attempt_id=attempt.id, outcome=outcome,
                           amount_minor=attempt.amount_minor, currency=attempt.currency, next_due_at=next_due))
    _bulk_update(session, PaymentAttempt, att_rows)
    _bulk_update(session, Invoice, inv_rows)
    _bulk_update(session, Subscription, sub_rows)
    if event_rows:
        session.connection().execute(insert(Event.__table__), event_rows)  # type: ignore[attr-defined]
    _insert_ignoring_duplicates(session, receipts)
    return out


def _bulk_update(session: Session, model: Any, rows: list[dict[str, Any]]) -> None:
    """``UPDATE table SET ... WHERE id = ?`` for many rows in one executemany (Core)."""
    if not rows:
        return
    table = model.__table__
    keys = [k for k in rows[0] if k != "_id"]
    stmt = update(table).where(table.c.id == bindparam("b__id")).values({k: bindparam(f"b_{k}") for k in keys})
    session.connection().execute(stmt, [{f"b_{k}": v for k, v in r.items()} for r in rows])
