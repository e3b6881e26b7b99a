"""The switch-over from Stripe Billing, and the reconciliation afterwards.

Rule: Stripe owns every period that started before a subscription's hand-over (it
collects it, including an invoice still in its dunning); the engine owns every period
starting at or after it. The hand-over of one subscription is the end of its current
Stripe period at the moment of the cut-over:

1. :func:`pending` lists the imported subscriptions still held (``charge_from`` = HOLD);
2. :func:`execute` tells Stripe to stop renewing each one (``cancel_at_period_end``, or
   ``pause_collection`` with ``void``), and from Stripe's answer sets the engine's copy to
   Stripe's current period with ``charge_from`` = its end, page by page in one
   transaction each (an event per subscription). Rerunning it skips what is done;
3. :func:`reconcile` checks, per subscription, that each period was charged by exactly
   one side (Stripe's paid invoices vs the engine's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Engine

from billing_engine import events
from billing_engine.charging import bulk_insert
from billing_engine.db import transaction
from billing_engine.imports.records import HOLD, period_index
from billing_engine.models import LIVE_STATUSES, Customer, Event, Invoice, InvoiceStatus, Plan, Subscription

SUBS: Any = Subscription.__table__  # type: ignore[attr-defined]
BATCH = 100


@dataclass(frozen=True, kw_only=True)
class Held:
    id: str
    stripe_id: str
    email: str
    plan_code: str
    amount_minor: int
    currency: str
    current_period_end: datetime
    cancel_at_period_end: bool


def pending(engine: Engine, *, limit: int | None = None) -> list[Held]:
    """Imported Stripe subscriptions whose charging is held until the cut-over."""
    p, c = Plan.__table__, Customer.__table__  # type: ignore[attr-defined]
    q = (select(SUBS.c.id, SUBS.c.external_id, c.c.email, p.c.code, p.c.amount_minor, p.c.currency,
                SUBS.c.current_period_end, SUBS.c.cancel_at_period_end)
         .join(p, p.c.id == SUBS.c.plan_id).join(c, c.c.id == SUBS.c.customer_id)
         .where(SUBS.c.external_id.like("stripe:%"), SUBS.c.charge_from == HOLD,
                SUBS.c.status.in_([s.value for s in LIVE_STATUSES])).order_by(SUBS.c.id))
    if limit:
        q = q.limit(limit)
    with engine.connect() as conn:
        return [Held(id=r[0], stripe_id=r[1].removeprefix("stripe:"), email=r[2], plan_code=r[3], amount_minor=r[4],
                     currency=r[5], current_period_end=r[6], cancel_at_period_end=r[7]) for r in conn.execute(q)]


@dataclass
class CutoverResult:
    handed_over: list[dict[str, Any]] = field(default_factory=list)
    not_handed_over: list[dict[str, Any]] = field(default_factory=list)  # Stripe ended it meanwhile, ...

    def as_dict(self) -> dict[str, Any]:
        return {"handed_over": self.handed_over, "not_handed_over": self.not_handed_over}


def _ts(v: Any) -> datetime:
    return datetime.fromtimestamp(int(v), UTC)


def execute(engine: Engine, client: stripe.StripeClient, *, now: datetime, pause: bool = False,
            actor: str = "admin:import", on_done: Callable[[int], None] | None = None) -> CutoverResult:
    out = CutoverResult()
    params: dict[str, Any] = ({"pause_collection": {"behavior": "void"}} if pause
                              else {"cancel_at_period_end": True})
    while True:
        held = [h for h in pending(engine, limit=BATCH)
                if h.id not in {x["subscription_id"] for x in out.not_handed_over}]
        if not held:
            return out
        changes: list[dict[str, Any]] = []
        ev_rows: list[dict[str, Any]] = []
        with engine.connect() as conn:
            anchors: dict[str, datetime] = {r[0]: r[1] for r in conn.execute(select(
                SUBS.c.id, SUBS.c.billing_anchor).where(SUBS.c.id.in_([h.id for h in held])))}
            plans = {r[0]: (r[1], r[2]) for r in conn.execute(
                select(SUBS.c.id, Plan.__table__.c.interval, Plan.__table__.c.interval_count)  # type: ignore[attr-defined]
                .join(Plan.__table__, Plan.__table__.c.id == SUBS.c.plan_id)  # type: ignore[attr-defined]
                .where(SUBS.c.id.in_([h.id for h in held])))}
        for h in held:
            sub = client.v1.subscriptions.update(h.stripe_id, params,  # type: ignore[arg-type]
                                                 options={"idempotency_key": f"cutover:{h.id}"}).to_dict()
            item = sub["items"]["data"][0]
            cps = _ts(item.get("current_period_start", sub.get("current_period_start")))
            cpe = _ts(item.get("current_period_end", sub.get("current_period_end")))
            iv, count = plans[h.id]
            n = period_index(anchors[h.id], iv, count, cpe)
            if sub["status"] not in ("active", "trialing", "past_due") or n is None:
                why = (f"Stripe status {sub['status']}" if n is not None
                       else f"Stripe's period end {cpe.isoformat()} is off the imported schedule")
                out.not_handed_over.append({"subscription_id": h.id, "stripe_id": h.stripe_id, "reason": why})
                continue
            status = "trialing" if sub["status"] == "trialing" else "active"
            changes.append({"b_id": h.id, "b_status": status, "b_cps": cps, "b_cpe": cpe, "b_n": n,
                            "b_from": cpe, "b_now": now})
            ev_rows.append(events.row(events.EventType.SUBSCRIPTION_CUT_OVER, at=now, actor=actor,
                                      subscription_id=h.id, payload={
                                          "stripe_id": h.stripe_id, "stripe_status": sub["status"],
                                          "stripe_stops": "pause_collection" if pause else "cancel_at_period_end",
                                          "charge_from": cpe}))
            out.handed_over.append({"subscription_id": h.id, "stripe_id": h.stripe_id, "email": h.email,
                                    "stripe_status": sub["status"], "engine_charges_from": cpe,
                                    "amount_minor": h.amount_minor, "currency": h.currency,
                                    "ends_at_period_end": h.cancel_at_period_end})
        with transaction(engine) as s:
            if changes:
                s.connection().execute(
                    update(SUBS).where(SUBS.c.id == bindparam("b_id"), SUBS.c.charge_from == HOLD).values(
                        status=bindparam("b_status"), current_period_start=bindparam("b_cps"),
                        current_period_end=bindparam("b_cpe"), next_period_index=bindparam("b_n"),
                        charge_from=bindparam("b_from"), next_retry_at=None, dunning_started_at=None, failed_attempts=0,
                        updated_at=bindparam("b_now")),
                    changes)
            bulk_insert(s, Event.__table__, ev_rows)  # type: ignore[attr-defined]
        if on_done is not None:
            on_done(len(changes))


@dataclass(frozen=True, kw_only=True)
class Finding:
    subscription_id: str
    stripe_id: str
    problem: str  # double | stripe_after_cutover | engine_before_cutover | stripe_unpaid | engine_unpaid
    period_start: datetime
    detail: str


def reconcile(engine: Engine, client: stripe.StripeClient, *, now: datetime) -> tuple[int, list[Finding]]:
    """Every handed-over subscription, period by period: Stripe's paid invoices against the
    engine's. Returns (subscriptions checked, findings); no finding = each period charged
    by exactly one side."""
    i_t = Invoice.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        subs = conn.execute(select(SUBS.c.id, SUBS.c.external_id, SUBS.c.charge_from, SUBS.c.status,
                                   SUBS.c.ended_at, SUBS.c.trial_end).where(
            SUBS.c.external_id.like("stripe:%"), SUBS.c.charge_from.is_not(None), SUBS.c.charge_from != HOLD,
            SUBS.c.charge_from <= now).order_by(SUBS.c.id)).all()
        paid: dict[str, set[datetime]] = {}
        ids = [s[0] for s in subs]
        for i in range(0, len(ids), 1000):
            for sid, start in conn.execute(select(i_t.c.subscription_id, i_t.c.period_start).where(
                    i_t.c.subscription_id.in_(ids[i:i + 1000]), i_t.c.status == InvoiceStatus.PAID)):
                paid.setdefault(sid, set()).add(start)
    findings: list[Finding] = []
    for sid, ext, charge_from, status, ended_at, trial_end in subs:
        stripe_id = ext.removeprefix("stripe:")
        stripe_paid: set[datetime] = set()
        stripe_last_paid = False
        for inv in client.v1.invoices.list({"subscription": stripe_id, "status": "paid",
                                            "limit": 100}).auto_paging_iter():
            for line in inv.to_dict().get("lines", {}).get("data", []):
                start, end = _ts(line["period"]["start"]), _ts(line["period"]["end"])
                if start == end:
                    continue
                stripe_paid.add(start)
                stripe_last_paid = stripe_last_paid or end == charge_from
        engine_paid = paid.get(sid, set())
        for start in sorted(stripe_paid & engine_paid):
            findings.append(Finding(subscription_id=sid, stripe_id=stripe_id, problem="double", period_start=start,
                                    detail="charged by Stripe AND the engine"))
        for start in sorted(s for s in stripe_paid - engine_paid if s >= charge_from):
            findings.append(Finding(subscription_id=sid, stripe_id=stripe_id, problem="stripe_after_cutover",
                                    period_start=start, detail="Stripe charged a period the engine owns"))
        for start in sorted(s for s in engine_paid - stripe_paid if s < charge_from):
            findings.append(Finding(subscription_id=sid, stripe_id=stripe_id, problem="engine_before_cutover",
                                    period_start=start, detail="the engine charged a period Stripe owns"))
        if not stripe_last_paid and trial_end != charge_from:  # (a trial is not paid for)
            findings.append(Finding(subscription_id=sid, stripe_id=stripe_id, problem="stripe_unpaid",
                                    period_start=charge_from, detail="Stripe has no paid invoice for the period "
                                    "ending at the hand-over (still in Stripe's dunning?)"))
        ended_before = ended_at is not None and ended_at <= charge_from
        if charge_from not in engine_paid and not ended_before:
            findings.append(Finding(subscription_id=sid, stripe_id=stripe_id, problem="engine_unpaid",
                                    period_start=charge_from, detail=f"the engine has not collected its first "
                                    f"period yet (subscription {status})"))
    return len(subs), findings
