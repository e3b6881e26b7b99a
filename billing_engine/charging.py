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

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pydantic_core
from sqlalchemy import bindparam, insert, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from billing_engine import (
    cancellations,
    claims,
    events,
    invoice_numbers,
    notifications,
    pauses,
    payments,
    plan_changes,
    reminders,
    renewals,
)
from billing_engine.db import among, locks_rows
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
from billing_engine.settings import Settings


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


SUBS = Subscription.__table__  # type: ignore[attr-defined]
ATTEMPTS = PaymentAttempt.__table__  # type: ignore[attr-defined]
INVOICES = Invoice.__table__  # type: ignore[attr-defined]


def _load_subs(session: Session, ids: Sequence[str], *, worker: str | None) -> list[Any]:
    """The batch's subscriptions as rows, locked (PostgreSQL) in id order, in ``ids`` order."""
    q = SUBS.select().where(among(SUBS.c.id, ids)).order_by(SUBS.c.id)
    if locks_rows(session):
        q = q.with_for_update()
    subs = renewals.rows(session, q)
    if worker is not None:
        subs = [s for s in subs if s.lease_owner == worker]  # a claim we lost is not ours to touch
    order = {sid: i for i, sid in enumerate(ids)}
    return sorted(subs, key=lambda s: order[s.id])


def _orm(session: Session, sub_id: str) -> Subscription:
    sub = session.get(Subscription, sub_id, populate_existing=True)
    assert sub is not None
    return sub


def prepare(
    session: Session, ids: Sequence[str], *, now: datetime, worker: str, plans: dict[str, Plan],
    settings: Settings | None = None, subs: list[Any] | None = None,
) -> Prepared:
    """``subs``: the rows of ``ids`` as this transaction's claim returned them
    (:func:`claims.claim_rows_in`), else they are read here."""
    if subs is None:
        subs = _load_subs(session, ids, worker=worker)
    if any(s.scheduled_plan_id is not None for s in subs):  # rare: a plan change due at period end
        if plan_changes.apply_due(session, subs, now=now):
            subs = _load_subs(session, ids, worker=worker)
    snaps = renewals.load(session, subs, plans, settings)
    out = Prepared()
    cust_t = Customer.__table__  # type: ignore[attr-defined]
    customers = dict(session.connection().execute(
        select(cust_t.c.id, cust_t.c.gateway_customer_id).where(among(cust_t.c.id, {s.customer_id for s in subs}))
    ).all()) if subs else {}
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
                                  request=payments.charge_request(attempt, pm.token, customers.get(sub.customer_id))))
            continue
        if action.kind == ActionKind.CHARGE:
            charges.append(snap)
            continue
        out.settled_ids.append(sub.id)
        if action.kind == ActionKind.END_AT_PERIOD_END:
            cancellations.end_at_period_end(session, _orm(session, sub.id), now=now)
        elif action.kind == ActionKind.PAUSE:
            pauses.take_effect(session, _orm(session, sub.id), at=sub.current_period_end, now=now)
        elif action.kind == ActionKind.CANCEL_INVOLUNTARY:
            assert action.reason is not None
            cancellations.end_involuntarily(session, _orm(session, sub.id), reason=action.reason, now=now,
                                            actor="system:cycle", details={"message": action.message})
    if charges:
        try:
            with session.begin_nested():
                attempts = _start_attempts_bulk(session, charges, now=now)
        except IntegrityError:  # an invoice exists that the snapshot did not show: row by row
            attempts = _start_attempts_one_by_one(session, charges, now=now)
        for snap, attempt in zip(charges, attempts, strict=True):
            assert snap.payment_method is not None
            out.steps.append(Step(subscription_id=snap.sub.id, attempt_id=attempt.id, reconcile=False,
                                  request=payments.charge_request(attempt, snap.payment_method.token,
                                                                  customers.get(snap.sub.customer_id))))
    return out


class _Attempt(dict[str, Any]):
    """An attempt row being inserted, readable as attributes (for :func:`payments.charge_request`)."""

    def __getattr__(self, name: str) -> Any:
        return self[name]


def _start_attempts_bulk(session: Session, charges: list[renewals.Snapshot], *, now: datetime) -> list[Any]:
    new_invoices: list[dict[str, Any]] = []
    bumped: list[dict[str, Any]] = []
    attempts: list[_Attempt] = []
    for snap in charges:
        sub, plan, pm = snap.sub, snap.plan, snap.payment_method
        assert pm is not None
        inv = snap.open_invoice
        if inv is None:
            start, end = renewals.next_period(sub, plan)
            q = renewals.quote(snap)  # the price in force for the period, less a coupon's discount
            inv_id, number, amount, currency = new_id("in"), 1, q.net_minor, plan.currency
            new_invoices.append({
                "id": inv_id, "subscription_id": sub.id, "customer_id": sub.customer_id, "plan_id": plan.id,
                "period_index": sub.next_period_index, "period_start": start, "period_end": end,
                "amount_minor": amount, "currency": currency, "discount_minor": q.discount_minor,
                "redemption_id": q.redemption_id, "status": InvoiceStatus.OPEN, "attempt_count": 1,
                "amount_paid_minor": 0, "amount_refunded_minor": 0, "created_at": now, "updated_at": now,
            })
        else:
            inv_id, number, amount, currency = inv.id, inv.attempt_count + 1, inv.amount_minor, inv.currency
            bumped.append({"_id": inv_id, "attempt_count": number, "updated_at": now})
        attempts.append(_Attempt(
            id=new_id("pay"), invoice_id=inv_id, subscription_id=sub.id, payment_method_id=pm.id,
            attempt_number=number, idempotency_key=payments.idempotency_key_for(inv_id, number), gateway=pm.gateway,
            status=AttemptStatus.PENDING, amount_minor=amount, currency=currency, created_at=now,
            gateway_charge_id=None, decline_code=None, decline_kind=None, message=None, completed_at=None,
        ))
    bulk_insert(session, INVOICES, new_invoices)
    _bulk_update(session, Invoice, bumped)
    bulk_insert(session, ATTEMPTS, [dict(a) for a in attempts])
    return attempts


def _start_attempts_one_by_one(session: Session, charges: list[renewals.Snapshot], *, now: datetime) -> list[Any]:
    out: list[Any] = []
    for snap in charges:
        assert snap.payment_method is not None
        sub = _orm(session, snap.sub.id)
        pm = session.get(PaymentMethod, snap.payment_method.id)
        assert pm is not None
        invoice = for_period(session, sub, snap.plan, sub.next_period_index, now=now, quote=renewals.quote(snap))
        out.append(payments.start_attempt(session, sub, invoice, pm, now=now))
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
    if dialect == "postgresql":  # ONE statement over arrays, not a statement per row
        keys = list(rows[0])
        source, params = _unnest(session, table, rows, keys)
        session.connection().execute(text(
            f"INSERT INTO {table.name} ({', '.join(keys)}) SELECT {', '.join('v.' + k for k in keys)} FROM {source}"
            " ON CONFLICT (dedupe_key) DO NOTHING"), params)
        return
    if dialect == "sqlite":
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
    release: tuple[str, Sequence[str]] | None = None,
    number_prefix: str | None = None,
    settings: Settings | None = None,
) -> list[Settled]:
    """Apply definitive-or-unknown answers of one batch (errors never reach here).

    ``release=(worker, ids)``: give up the worker's claims on ``ids`` in the same
    transaction (folded into the renewals' own row update where possible)."""
    if not answers:
        if release is not None:
            claims.release_in(session, release[1], release[0])
        return []
    subs = {s.id: s for s in _load_subs(session, [st.subscription_id for st, _ in answers], worker=None)}
    aq = ATTEMPTS.select().where(among(ATTEMPTS.c.id, [st.attempt_id for st, _ in answers])).order_by(ATTEMPTS.c.id)
    if locks_rows(session):
        aq = aq.with_for_update()
    attempts = {a.id: a for a in renewals.rows(session, aq)}
    invoices = {i.id: i for i in renewals.rows(
        session, INVOICES.select().where(among(INVOICES.c.id, {a.invoice_id for a in attempts.values()})))}
    cust_t = Customer.__table__  # type: ignore[attr-defined]
    emails = dict(session.connection().execute(select(cust_t.c.id, cust_t.c.email).where(
        among(cust_t.c.id, {s.customer_id for s in subs.values()}))).all())
    for pid in {s.plan_id for s in subs.values()} | {i.plan_id for i in invoices.values()}:
        if pid not in plans:
            p = session.get(Plan, pid)
            assert p is not None
            plans[pid] = p

    out: list[Settled] = []
    released: set[str] = set()
    att_rows: list[dict[str, Any]] = []
    inv_rows: list[dict[str, Any]] = []
    sub_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    receipts: list[dict[str, Any]] = []
    leads: dict[str, timedelta] = {}  # plan id -> its reminder lead
    for step, result in answers:
        attempt, sub = attempts[step.attempt_id], subs[step.subscription_id]
        invoice = invoices[attempt.invoice_id]
        if attempt.status not in payments.UNRESOLVED:
            out.append(Settled(subscription_id=sub.id, attempt_id=attempt.id, outcome=payments.Outcome.ALREADY_SETTLED,
                               amount_minor=attempt.amount_minor, currency=attempt.currency))
            continue
        paid = None
        if result.status == ChargeStatus.SUCCEEDED:
            lead = leads.get(sub.plan_id)
            if lead is None:
                lead = leads[sub.plan_id] = reminders.reminder_lead(plans[sub.plan_id], trial=False, settings=settings)
            paid = payments.paid_changes(sub, invoice, attempt, result, invoice_plan=plans[invoice.plan_id],
                                         plan_name=plans[sub.plan_id].name, now=now, plan=plans[sub.plan_id],
                                         settings=settings, lead=lead)
        next_due: datetime | None = None
        if paid is None or paid.refund or "status" not in paid.subscription:
            orm_attempt = session.get(PaymentAttempt, attempt.id)
            assert orm_attempt is not None
            outcome = payments.settle(session, orm_attempt, result, now=now, schedule_days=schedule_days, actor=actor,
                                      number_prefix=number_prefix, settings=settings)
            orm_sub = session.get(Subscription, sub.id)
            if outcome == payments.Outcome.SUCCEEDED and orm_sub is not None and orm_sub.status != SubscriptionStatus.CANCELED:
                next_due = orm_sub.current_period_end
        else:
            next_due = paid.subscription["current_period_end"]
            outcome = payments.Outcome.SUCCEEDED
            att_rows.append({"_id": attempt.id, **paid.attempt})
            inv_rows.append({"_id": invoice.id, **paid.invoice})
            mine = release is not None and sub.lease_owner == release[0]
            sub_rows.append({"_id": sub.id, "activated_at": sub.activated_at, **paid.subscription,
                             "lease_owner": None if mine else sub.lease_owner,
                             "lease_expires_at": None if mine else sub.lease_expires_at})
            released.add(sub.id)
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
    _bulk_update(session, Subscription, sub_rows)
    bulk_insert(session, Event.__table__, event_rows)  # type: ignore[attr-defined]
    _insert_ignoring_duplicates(session, receipts)
    if release is not None:
        claims.release_in(session, [i for i in release[1] if i not in released], release[0])
    # last: the invoice-number counter stays locked until the COMMIT (a concurrent settle
    # of another batch waits for it), so it is taken after everything else
    _number(session, inv_rows, invoices, number_prefix)
    _bulk_update(session, Invoice, inv_rows)
    return out


def _number(session: Session, inv_rows: list[dict[str, Any]], invoices: dict[str, Any], prefix: str | None) -> None:
    """Gapless numbers for the invoices this batch pays: ONE range from the series' counter
    row (locked until the settle transaction commits), assigned in batch order."""
    new = iter(invoice_numbers.take(session, sum(1 for r in inv_rows if invoices[r["_id"]].number is None),
                                    prefix=prefix))
    for r in inv_rows:
        r["number"] = invoices[r["_id"]].number or next(new)


def bulk_insert(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert many rows: ``COPY ... FROM STDIN`` on PostgreSQL (same transaction), else a
    multi-row INSERT. A constraint violation raises :class:`IntegrityError` either way."""
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), rows)
        return
    import psycopg

    cols = [c.name for c in table.columns if c.name in rows[0]]
    # a row's values in column order, taken in C (psycopg writes a StrEnum as its value:
    # it is a str first)
    values = operator.itemgetter(*cols) if len(cols) > 1 else (lambda r: (r[cols[0]],))
    raw = conn.connection.dbapi_connection
    assert raw is not None
    try:
        with raw.cursor() as cur, cur.copy(  # type: ignore[attr-defined]
                f"COPY {table.name} ({', '.join(cols)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(values(r))
    except psycopg.errors.IntegrityError as exc:
        raise IntegrityError(f"COPY {table.name}", None, exc) from exc


def _bulk_update(session: Session, model: Any, rows: list[dict[str, Any]]) -> None:
    """``UPDATE table SET ... WHERE id = ?`` for many rows at once.

    PostgreSQL: ONE statement, ``UPDATE ... FROM unnest(<one array per varying column>)``
    (columns equal on every row are plain parameters). SQLite: one executemany."""
    if not rows:
        return
    table = model.__table__
    keys = [k for k in rows[0] if k != "_id"]
    if session.bind is None or session.bind.dialect.name != "postgresql":
        stmt = update(table).where(table.c.id == bindparam("b__id")).values({k: bindparam(f"b_{k}") for k in keys})
        session.connection().execute(stmt, [{f"b_{k}": v for k, v in r.items()} for r in rows])
        return
    source, params = _unnest(session, table, rows, keys, key="_id")
    sets = ", ".join(f"{k} = v.{k}" for k in keys)
    session.connection().execute(text(f"UPDATE {table.name} AS t SET {sets} FROM {source} WHERE t.id = v._id"), params)


def _unnest(session: Session, table: Any, rows: list[dict[str, Any]], keys: list[str],
            key: str | None = None) -> tuple[str, dict[str, Any]]:
    """PostgreSQL: ``rows`` as a derived table ``v(keys...)``: ONE JSON document (the C
    encoder; timestamps as ISO text) read back with ``json_to_recordset`` typed as the
    table's columns. (Was one array parameter per column: psycopg dumps a list element
    by element in Python, escaping each: a tenth of a run-cycle's CPU.)"""
    assert session.bind is not None
    dialect = session.bind.dialect
    cols = ", ".join(f"{k} {table.c[k].type.compile(dialect=dialect)}" for k in keys)
    if key is not None:  # the row's id under another name (``_id``: UPDATE ... WHERE t.id = v._id)
        cols = f"{key} {table.c.id.type.compile(dialect=dialect)}, {cols}"
    # the rows as they are (a key not in the column list is ignored by json_to_recordset;
    # a key missing from a row would silently be NULL: every row has the first one's keys)
    shape = rows[0].keys()
    if any(r.keys() != shape for r in rows):
        raise ValueError(f"bulk rows for {table.name} differ in their columns")
    return f"json_to_recordset(CAST(:rows AS json)) AS v({cols})", {"rows": _rows_json(rows)}


def _rows_json(rows: list[dict[str, Any]]) -> str:
    """The rows as one JSON text, by pydantic-core's encoder (Rust; 3x the standard
    library's, whose ``default`` hook calls back into Python for every timestamp: a
    third of a settle's CPU). Timestamps as ISO 8601 (an aware UTC one ends in ``Z``),
    enums as their values. A column whose first-row value is not a JSON type raises
    (every row has the same columns); pydantic-core itself would send e.g. a Decimal as
    a string rather than fail."""
    for v in rows[0].values():
        if not isinstance(v, _JSON_SAFE):
            raise TypeError(f"cannot send {type(v).__name__} to the database as JSON")
    return pydantic_core.to_json(rows).decode()


_JSON_SAFE = (str, int, float, bool, type(None), date, dict, list)
