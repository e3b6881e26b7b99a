"""Set-based, idempotent writes of validated import records.

Every imported object carries its source's id in ``external_id`` (unique): a record
whose subscription is already there is skipped, a customer or card already imported is
reused, so running the same import twice creates nothing. Rows are written in chunks
with multi-row statements (``COPY`` on PostgreSQL, :func:`charging.bulk_insert`), a
handful of statements per chunk whatever its size. The caller owns the transaction.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from sqlmodel import select as orm_select

from billing_engine import events, plans
from billing_engine.charging import bulk_insert
from billing_engine.consents import terms_hash
from billing_engine.errors import ValidationError
from billing_engine.imports.records import Record, consent_text, engine_schedule
from billing_engine.models import (
    Consent,
    Customer,
    Event,
    PaymentMethod,
    PaymentMethodStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
    UTCDateTime,
    new_id,
)
from billing_engine.periods import Interval, monthly_amount

CHUNK = 5_000
KINDS = ("plans", "customers", "payment_methods", "consents", "subscriptions")
CUSTOMERS: Any = Customer.__table__  # type: ignore[attr-defined]
PMS: Any = PaymentMethod.__table__  # type: ignore[attr-defined]
CONSENTS: Any = Consent.__table__  # type: ignore[attr-defined]
SUBS: Any = Subscription.__table__  # type: ignore[attr-defined]
EVENTS: Any = Event.__table__  # type: ignore[attr-defined]


@dataclass
class Result:
    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    already_imported: int = 0  # subscriptions found by their external id (skipped)
    planned: list[dict[str, Any]] = field(default_factory=list)  # per new subscription (when asked)

    def add(self, other: Result) -> None:
        for k, v in other.created.items():
            self.created[k] += v
        self.already_imported += other.already_imported
        self.planned.extend(other.planned)

    def as_dict(self) -> dict[str, Any]:
        return {"created": dict(self.created), "already_imported": self.already_imported}


def existing_ids(session: Session, table: Any, external_ids: Iterable[str]) -> dict[str, str]:
    """external id -> engine id, for the ones already imported (chunked IN lists)."""
    ids = list(dict.fromkeys(external_ids))
    out: dict[str, str] = {}
    conn = session.connection()
    for i in range(0, len(ids), 1000):
        part = ids[i:i + 1000]
        out.update({e: k for k, e in conn.execute(
            select(table.c.id, table.c.external_id).where(table.c.external_id.in_(part))).all()})
    return out


def ensure_plans(session: Session, specs: Iterable[Any], *, now: datetime, dry_run: bool, actor: str,
                 result: Result, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """Plan code -> plan (found by external id, else by code; created when missing).
    A plan that exists with other terms is refused: the customers agreed to these.
    ``known``: plans a dry run already counted (several pages of one run)."""
    out: dict[str, Any] = {}
    for spec in {s.code: s for s in specs}.values():
        if known is not None and spec.code in known:
            out[spec.code] = known[spec.code]
            continue
        found = None
        if spec.external_id:
            found = session.exec(orm_select(Plan).where(Plan.external_id == spec.external_id)).first()
        if found is None:
            found = session.exec(orm_select(Plan).where(Plan.code == spec.code)).first()
        if found is not None:
            terms = (found.amount_minor, found.currency, found.interval, found.interval_count)
            if terms != (spec.amount_minor, spec.currency, spec.interval, spec.interval_count):
                raise ValidationError(f"plan {found.code!r} exists with other terms {terms}", field="plan_code")
            out[spec.code] = found
            continue
        result.created["plans"] += 1
        if dry_run:
            out[spec.code] = Plan(id=f"(new:{spec.code})", code=spec.code, name=spec.name,
                                  amount_minor=spec.amount_minor, currency=spec.currency, interval=spec.interval,
                                  interval_count=spec.interval_count)
            continue
        plan = plans.create(session, code=spec.code, name=spec.name, amount_minor=spec.amount_minor,
                            currency=spec.currency, interval=spec.interval, interval_count=spec.interval_count,
                            now=now, actor=actor)
        plan.external_id = spec.external_id
        session.add(plan)
        session.flush()
        out[spec.code] = plan
    if known is not None and dry_run:
        known.update(out)
    return out


def write(session: Session, records: Sequence[Record], *, now: datetime, dry_run: bool = False,
          actor: str = "admin:import", plan_details: bool = False, known_plans: dict[str, Any] | None = None
          ) -> Result:
    """Create what is missing of ``records`` (already validated). Returns the counts."""
    result = Result()
    plan_rows = ensure_plans(session, (r.plan for r in records), now=now, dry_run=dry_run, actor=actor,
                             result=result, known=known_plans)
    for i in range(0, len(records), CHUNK):
        _chunk(session, records[i:i + CHUNK], plan_rows, now=now, dry_run=dry_run, actor=actor,
               result=result, plan_details=plan_details)
    return result


def _chunk(session: Session, records: Sequence[Record], plan_rows: dict[str, Any], *, now: datetime,
           dry_run: bool, actor: str, result: Result, plan_details: bool) -> None:
    done = existing_ids(session, SUBS, (r.external_id for r in records))
    todo = list({r.external_id: r for r in records if r.external_id not in done}.values())
    result.already_imported += len({r.external_id for r in records if r.external_id in done})
    if not todo:
        return
    customers = existing_ids(session, CUSTOMERS, (r.customer.external_id for r in todo))
    cards = existing_ids(session, PMS, (r.card.external_id for r in todo))
    cus_id, pm_id, cns_id_, sub_id_ = (functools.partial(new_id, p) for p in ("cus", "pm", "cns", "sub"))
    cus_rows: list[dict[str, Any]] = []
    pm_rows: list[dict[str, Any]] = []
    cns_rows: list[dict[str, Any]] = []
    sub_rows: list[dict[str, Any]] = []
    ev_rows: list[dict[str, Any]] = []
    for r in todo:
        plan = plan_rows[r.plan.code]
        if r.customer.external_id not in customers:
            cid = customers[r.customer.external_id] = cus_id()
            cus_rows.append({"id": cid, "email": r.customer.email, "name": r.customer.name, "external_ref": None,
                             "gateway_customer_id": r.customer.gateway_customer_id,
                             "created_at": r.customer.created_at or r.created_at, "updated_at": now,
                             "external_id": r.customer.external_id})
            ev_rows.append(events.row(events.EventType.CUSTOMER_CREATED, at=now, actor=actor, customer_id=cid,
                                      payload={"imported_from": r.source, "external_id": r.customer.external_id}))
        cid = customers[r.customer.external_id]
        if r.card.external_id not in cards:
            pid = cards[r.card.external_id] = pm_id()
            c = r.card
            pm_rows.append({"id": pid, "customer_id": cid, "gateway": c.gateway, "token": c.token, "brand": c.brand,
                            "last4": c.last4, "exp_month": c.exp_month, "exp_year": c.exp_year,
                            "status": PaymentMethodStatus.ACTIVE.value, "created_at": r.created_at,
                            "detached_at": None, "external_id": c.external_id})
        pid = cards[r.card.external_id]
        sched = r.schedule or engine_schedule(status=r.status, billing_anchor=r.billing_anchor,
                                current_period_start=r.current_period_start, current_period_end=r.current_period_end,
                                trial_end=r.trial_end, next_retry_at=r.next_retry_at, interval=plan.interval,
                                interval_count=plan.interval_count)
        text = consent_text(r)
        cns_id, sub_id = cns_id_(), sub_id_()
        cns_rows.append({"id": cns_id, "customer_id": cid, "payment_method_id": pid, "plan_id": plan.id,
                         "accepted_at": r.created_at, "ip_address": "0.0.0.0", "user_agent": f"import:{r.source}",
                         "channel": "import", "terms_version": f"import:{r.source}", "terms_sha256": terms_hash(text),
                         "terms_text": text, "amount_minor": plan.amount_minor, "currency": plan.currency,
                         "interval": plan.interval, "interval_count": plan.interval_count,
                         "gateway_setup_id": None, "created_at": now, "revoked_at": None,
                         "external_id": f"{r.source}:consent:{r.external_id}"})
        paying = sched.status != SubscriptionStatus.TRIALING
        sub_rows.append({
            "id": sub_id, "customer_id": cid, "plan_id": plan.id, "payment_method_id": pid, "status": sched.status,
            "billing_anchor": sched.billing_anchor, "current_period_start": sched.current_period_start,
            "current_period_end": sched.current_period_end, "next_period_index": sched.next_period_index,
            "trial_end": sched.trial_end, "cancel_at_period_end": r.cancel_at_period_end,
            "next_retry_at": sched.next_retry_at,
            "dunning_started_at": sched.current_period_end if sched.status == SubscriptionStatus.PAST_DUE else None,
            "failed_attempts": 0, "activated_at": r.created_at if paying else None,
            "mrr_minor": monthly_amount(plan.amount_minor, Interval(plan.interval), plan.interval_count)
            if paying else None,
            "canceled_at": now if r.cancel_at_period_end else None,
            "canceled_by": f"import:{r.source}" if r.cancel_at_period_end else None,
            "cancellation_kind": "voluntary" if r.cancel_at_period_end else None,
            "created_at": r.created_at, "updated_at": now, "external_id": r.external_id, "charge_from": r.charge_from,
        })
        ev_rows.append(events.row(events.EventType.SUBSCRIPTION_IMPORTED, at=now, actor=actor, subscription_id=sub_id,
                                  customer_id=cid, payload={
                                      "source": r.source, "external_id": r.external_id, "source_ids": r.source_ids,
                                      "original_created_at": r.created_at, "plan_code": plan.code,
                                      "payment_method_id": pid, "consent_id": cns_id, "status": sched.status,
                                      "next_charge_at": sched.next_charge_at, "charge_from": r.charge_from}))
        if plan_details:
            result.planned.append({"external_id": r.external_id, "customer": r.customer.email, "plan": plan.code,
                                   "status": sched.status, "amount_minor": plan.amount_minor,
                                   "currency": plan.currency, "next_charge_at": sched.next_charge_at,
                                   "cancel_at_period_end": r.cancel_at_period_end, "charge_from": r.charge_from})
    for kind, rows in (("customers", cus_rows), ("payment_methods", pm_rows), ("consents", cns_rows),
                       ("subscriptions", sub_rows)):
        result.created[kind] += len(rows)
    if dry_run:
        return
    for table, rows in ((CUSTOMERS, cus_rows), (PMS, pm_rows), (CONSENTS, cns_rows), (SUBS, sub_rows),
                        (EVENTS, ev_rows)):
        insert_rows(session, table, rows)


def _sqlite_converters(table: Any, cols: list[str]) -> list[Callable[[Any], Any] | None]:
    """Per column: how a value is stored by SQLAlchemy on SQLite (UTCDateTime: naive UTC
    text; booleans: 0/1; enums: their value), or None when it is stored as is."""
    cache: dict[datetime, str] = {}

    def when(v: datetime | None) -> str | None:
        if v is None:
            return None
        text = cache.get(v)
        if text is None:
            text = cache[v] = v.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        return text

    def plain(v: Any) -> Any:
        return v.value if isinstance(v, StrEnum) else int(v) if isinstance(v, bool) else v

    out: list[Callable[[Any], Any] | None] = []
    for c in cols:
        python = getattr(table.c[c].type, "python_type", None) if c in table.c else None
        if isinstance(table.c[c].type, UTCDateTime):
            out.append(when)
        elif python in (bool, str) or python is None:
            out.append(plain)
        else:
            out.append(None)
    return out


def insert_rows(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """:func:`charging.bulk_insert` (COPY on PostgreSQL); on SQLite one ``executemany`` of
    plain values on the driver's cursor, in the session's transaction (SQLAlchemy's
    per-value type processing costs more than the insert itself at 100k rows)."""
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        bulk_insert(session, table, rows)
        return
    cols = list(rows[0])
    sql = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    raw = conn.connection.dbapi_connection
    assert raw is not None
    convert = list(zip(cols, _sqlite_converters(table, cols), strict=True))
    cur = raw.cursor()
    try:
        cur.executemany(sql, [[f(r[c]) if f else r[c] for c, f in convert] for r in rows])
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(sql, None, exc) from exc
    finally:
        cur.close()
