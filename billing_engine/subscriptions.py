"""Subscriptions: create, cancel, undo a cancellation, change the card.

Renewal charging lives in ``billing_engine.cycle`` (the run-cycle); this module holds
the state transitions, each writing an event row in the caller's transaction.

Period model: ``billing_anchor`` is where period 0 starts (the trial end when there is
a trial). ``current_period_start/end`` is what the customer has access to now (the
trial, or the last paid period); ``next_period_index`` is the next period to bill and
starts at ``current_period_end``. A new subscription without trial is ``incomplete``
with an empty current period, so its first charge is due at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache, partial
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from billing_engine import consents, customers, events, listing, metadata, validation
from billing_engine.db import among_param, locks_rows
from billing_engine.errors import Conflict, InvalidTransition, NotFound, ValidationError
from billing_engine.models import (
    ENDED_STATUSES,
    LIVE_STATUSES,
    Customer,
    PaymentMethod,
    PaymentMethodStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.periods import ensure_utc
from billing_engine.plans import get as plan_by_id_or_code
from billing_engine.rows import PlainSelect


def create(
    session: Session,
    *,
    customer_id: str,
    plan_id: str,
    payment_method_id: str | None,
    now: datetime,
    start_at: datetime | None = None,
    trial_days: int | None = None,
    actor: str = "admin",
    coupon: str | None = None,
    paused: bool = False,
    resumes_at: datetime | None = None,
) -> Subscription:
    """``coupon``: a coupon code applied at once (coupons.redeem); ``paused``: the
    subscription starts paused (until ``resumes_at``, or until resumed)."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id!r}", field="customer")
    plan = plan_by_id_or_code(session, plan_id)
    if not plan.active:
        raise Conflict(f"plan {plan.code!r} is not active", field="plan")
    start = ensure_utc(start_at, "start_at") if start_at is not None else now
    if start < now - timedelta(days=1):
        raise ValidationError("cannot start more than a day in the past", field="start_at")
    if start > now + timedelta(days=366):
        raise ValidationError("cannot start more than a year ahead", field="start_at")
    trial = plan.trial_days if trial_days is None else validation.int_range(trial_days, "trial_days", lo=0, hi=730)
    pm = _usable_payment_method(session, payment_method_id, customer.id, plan)

    if trial > 0:
        trial_end = start + timedelta(days=trial)
        sub = Subscription(
            customer_id=customer.id, plan_id=plan.id, payment_method_id=pm.id if pm else None,
            status=SubscriptionStatus.TRIALING, billing_anchor=trial_end,
            current_period_start=start, current_period_end=trial_end, next_period_index=0,
            trial_end=trial_end, created_at=now, updated_at=now,
        )
    else:
        sub = Subscription(
            customer_id=customer.id, plan_id=plan.id, payment_method_id=pm.id if pm else None,
            status=SubscriptionStatus.INCOMPLETE, billing_anchor=start,
            current_period_start=start, current_period_end=start, next_period_index=0,
            created_at=now, updated_at=now,
        )
    session.add(sub)
    session.flush()
    events.record(session, events.EventType.SUBSCRIPTION_CREATED, at=now, actor=actor,
                  subscription_id=sub.id, customer_id=customer.id,
                  payload={"plan_id": plan.id, "plan_code": plan.code, "status": sub.status,
                           "amount_minor": plan.amount_minor, "currency": plan.currency,
                           "trial_end": sub.trial_end, "billing_anchor": sub.billing_anchor})
    if coupon:
        from billing_engine import coupons

        coupons.redeem(session, sub, coupon, now=now, actor=actor)
    if paused or resumes_at is not None:
        from billing_engine import pauses

        pauses.pause(session, sub, now=now, resumes_at=resumes_at, actor=actor)
    _confirm(session, sub, plan, now=now)
    return sub


def _confirm(session: Session, sub: Subscription, plan: Plan, *, now: datetime) -> None:
    """The sign-up confirmation: the terms (amount, interval, first charge, trial end)
    and the cancel link — the record the customer keeps. For a trial it is also the
    first charge's reminder when it goes out inside the reminder window."""
    from billing_engine import notifications, reminders

    payload: dict[str, Any] = {
        "plan_name": plan.name, "amount_minor": plan.amount_minor, "currency": plan.currency,
        "interval": plan.interval, "interval_count": plan.interval_count, "charge_at": sub.current_period_end,
        "trial_end": sub.trial_end, "period_index": 0,
    }
    if sub.trial_end is not None:
        lead = reminders.reminder_lead(plan, trial=True, settings=None)
        if reminders.counts_as_reminder(now, sub.trial_end, lead):
            sub.reminded_period_index, sub.reminded_at = 0, now
            session.add(sub)
            payload["reminds_period_index"] = 0
    notifications.enqueue(session, notifications.Kind.SUBSCRIPTION_CONFIRMED, customer_id=sub.customer_id,
                          subscription_id=sub.id, dedupe_key=f"subscription_confirmed:{sub.id}", at=now,
                          payload=payload)


def _usable_payment_method(session: Session, pm_id: str | None, customer_id: str, plan: Plan) -> PaymentMethod:
    if not pm_id:
        raise ValidationError("a payment method with recorded consent is required", field="payment_method")
    pm = session.get(PaymentMethod, pm_id)
    if pm is None:
        raise NotFound(f"no payment method {pm_id!r}", field="payment_method")
    if pm.customer_id != customer_id:
        raise Conflict("the payment method belongs to another customer", field="payment_method")
    if pm.status != PaymentMethodStatus.ACTIVE:
        raise Conflict(f"the payment method is {pm.status}", field="payment_method")
    consents.require(session, pm.id, plan)
    return pm


def get(session: Session, subscription_id: str) -> Subscription:
    sub = session.get(Subscription, subscription_id)
    if sub is None:
        raise NotFound(f"no subscription {subscription_id!r}", field="subscription")
    return sub


def get_for_update(session: Session, subscription_id: str) -> Subscription:
    """:func:`get` for a change: the row locked (PostgreSQL) until the caller's transaction
    ends, and read as it is once the lock is ours. Two concurrent changes of one
    subscription (an admin's double click, a script and a person) then run one after the
    other, and the second sees the first: "already scheduled / canceled" instead of a
    second event and a second customer e-mail."""
    sub = session.get(Subscription, subscription_id, with_for_update=locks_rows(session), populate_existing=True)
    if sub is None:
        raise NotFound(f"no subscription {subscription_id!r}", field="subscription")
    return sub


def list_subscriptions(
    session: Session,
    *,
    status: str | None = None,
    customer_id: str | None = None,
    plan_id: str | None = None,
    limit: int = 100,
    after: str | None = None,
    ranges: listing.Ranges | None = None,
) -> list[Subscription]:
    q = _filtered(session, select(Subscription), status=status, customer_id=customer_id, plan_id=plan_id,
                  limit=limit, after=after, ranges=ranges)
    rows = list(session.exec(q))
    load_related(session, rows)
    return rows


def _filtered(session: Session, q: Any, *, status: str | None, customer_id: str | None, plan_id: str | None,
              limit: int, after: str | None, ranges: listing.Ranges | None) -> Any:
    """``q`` (a select of subscriptions) with the list's filters, order (by id) and limit."""
    q = listing.apply(q.order_by(col(Subscription.id)).limit(limit), Subscription, ranges)
    if status:
        if status not in {s.value for s in SubscriptionStatus}:
            raise ValidationError(
                f"must be one of {', '.join(s.value for s in SubscriptionStatus)}", field="status"
            )
        q = q.where(Subscription.status == status)
    customer_id, plan_id = filter_ids(session, customer_id, plan_id)
    if customer_id:
        q = q.where(Subscription.customer_id == customer_id)
    if plan_id:
        q = q.where(Subscription.plan_id == plan_id)
    if listing.cursor(after, "sub"):
        q = q.where(col(Subscription.id) > after)
    return q


def filter_ids(session: Session, customer: str | None, plan: str | None) -> tuple[str | None, str | None]:
    """The ids a list filter names: a customer by id or external reference, a plan by id or
    code. ``NotFound`` (field ``customer`` / ``plan``) for one that does not exist: a typo
    would otherwise read as "no subscriptions" (an empty page, a finished export)."""
    return (customers.get(session, customer).id if customer else None,
            plan_by_id_or_code(session, plan).id if plan else None)


# The columns of a subscription row named like the model's attributes, plus the customer's
# e-mail: a read-only row (no ORM object, no identity map) that :func:`summary` accepts.
_ROW_COLUMNS = [c.label(c.key) for c in Subscription.__table__.columns]  # type: ignore[attr-defined]
_ROW_SELECT: Any = sa_select(*_ROW_COLUMNS, col(Customer.email).label("customer_email"))


def _rows(session: Session, q: PlainSelect, params: dict[str, Any] | None = None) -> list[Any]:
    """The rows of ``q`` (over :data:`_ROW_SELECT`, joined to the customer) as named tuples
    (:mod:`billing_engine.rows`): attribute reads on them cost a twentieth of a SQLAlchemy
    ``Row``'s, and the summary makes ~50 per row."""
    return q.all(session.connection(), params)


def list_summaries(
    session: Session,
    *,
    status: str | None = None,
    customer_id: str | None = None,
    plan_id: str | None = None,
    limit: int = 100,
    after: str | None = None,
    ranges: listing.Ranges | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """:func:`list_subscriptions` with the :func:`summary` of each, for a whole page in a
    fixed number of queries (the page with its customers' e-mails, its plans, their price
    changes, its coupons, and -- only if some are past due -- their open invoices), reading
    plain rows instead of building ORM objects."""
    params: dict[str, Any] = {}
    if ranges is not None:
        ranges.check()
        params.update((k, v) for k, v in vars(ranges).items() if v is not None)
    if status:
        if status not in {s.value for s in SubscriptionStatus}:
            raise ValidationError(
                f"must be one of {', '.join(s.value for s in SubscriptionStatus)}", field="status"
            )
        params["status"] = status
    customer_id, plan_id = filter_ids(session, customer_id, plan_id)
    if customer_id:
        params["customer_id"] = customer_id
    if plan_id:
        params["plan_id"] = plan_id
    if listing.cursor(after, "sub"):
        params["after"] = after
    return summaries(session, _rows(session, _page_select(limit, frozenset(params)), params), now)


@lru_cache(maxsize=256)
def _page_select(limit: int, filters: frozenset[str]) -> PlainSelect:
    """The list's page query (:data:`_ROW_SELECT` joined to the customer) for this limit and
    these filters, with their values as named parameters: built and compiled once per shape
    (building the statement and its cache key per request cost ~10% of a page's CPU)."""
    s = Subscription.__table__.c  # type: ignore[attr-defined]
    q = _ROW_SELECT.join(Customer, col(Customer.id) == col(Subscription.customer_id)).order_by(s.id).limit(limit)
    for name, clause in (("created_gte", s.created_at >= bindparam("created_gte")),
                         ("created_lt", s.created_at < bindparam("created_lt")),
                         ("updated_gte", s.updated_at >= bindparam("updated_gte")),
                         ("updated_lt", s.updated_at < bindparam("updated_lt")),
                         ("status", s.status == bindparam("status")),
                         ("customer_id", s.customer_id == bindparam("customer_id")),
                         ("plan_id", s.plan_id == bindparam("plan_id")),
                         ("after", s.id > bindparam("after"))):
        if name in filters:
            q = q.where(clause)
    return PlainSelect(q, "SubscriptionRow")


_SHOW_SELECT = PlainSelect(_ROW_SELECT.join(Customer, col(Customer.id) == col(Subscription.customer_id)).where(
    col(Subscription.id) == bindparam("subscription_id")), "SubscriptionRow")


def show_summary(session: Session, subscription_id: str, now: datetime | None = None) -> dict[str, Any]:
    """:func:`summary` of one subscription by id (``NotFound`` like :func:`get`)."""
    rows = _rows(session, _SHOW_SELECT, {"subscription_id": subscription_id})
    if not rows:
        get(session, subscription_id)  # raises NotFound
    return summaries(session, rows, now)[0]


_PLANS_SELECT = PlainSelect(sa_select(*[c.label(c.key) for c in Plan.__table__.columns]).where(  # type: ignore[attr-defined]
    among_param(Plan.__table__.c.id, "ids")), "PlanRow")  # type: ignore[attr-defined]


def summaries(session: Session, rows: list[Any], now: datetime | None = None) -> list[dict[str, Any]]:
    """:func:`summary` of each row of :data:`_ROW_COLUMNS` (+ ``customer_email``), batched."""
    from billing_engine import pricing
    from billing_engine.models import Invoice, InvoiceStatus

    if not rows:
        return []
    plan_ids = {r.plan_id for r in rows} | {r.scheduled_plan_id for r in rows if r.scheduled_plan_id}
    plans: dict[str, Any] = {p.id: p for p in _PLANS_SELECT.all(session.connection(), {"ids": sorted(plan_ids)})}
    pricing.preload(session, rows)
    retrying = [r.id for r in rows if r.status == SubscriptionStatus.PAST_DUE and r.next_retry_at is not None]
    open_amounts: dict[tuple[str, int], int] = {}
    if retrying:
        for inv_sub, index, amount in session.connection().execute(
                select(col(Invoice.subscription_id), col(Invoice.period_index), col(Invoice.amount_minor))
                .where(col(Invoice.subscription_id).in_(retrying), Invoice.status == InvoiceStatus.OPEN)):
            open_amounts.setdefault((inv_sub, index), amount)
    out = []
    leads: dict[tuple[str, bool], timedelta] = {}
    for r in rows:
        plan = plans[r.plan_id]
        scheduled = plans.get(r.scheduled_plan_id) if r.scheduled_plan_id else None
        key = (r.id, r.next_period_index)
        nxt = _next_charge(session, r, plan, scheduled, partial(open_amounts.get, key))
        out.append(_summary(r, plan, r.customer_email, nxt, now, leads))
    return out


def load_related(session: Session, subs: list[Subscription]) -> None:
    """Load the customers and plans of ``subs`` in ONE query, so that :func:`summary` of a
    whole page asks the database nothing more (they come from the session's identity map)."""
    if not subs:
        return
    ids = {s.id for s in subs}
    # the session's identity map holds objects weakly: keep them alive for the session's life
    session.info.setdefault("related", []).extend(session.exec(select(Customer, Plan).select_from(Subscription)
                      .join(Customer, col(Customer.id) == col(Subscription.customer_id))
                      .join(Plan, col(Plan.id) == col(Subscription.plan_id))
                      .where(col(Subscription.id).in_(ids))))
    from billing_engine import pricing

    pricing.preload(session, subs)  # the page's price changes and coupons: two queries, not two per row


def next_charge(session: Session, sub: Subscription) -> tuple[datetime, int, str] | None:
    """When the next charge happens and how much (None if no further charge, or paused
    without a resume date): the price in force for that period less a coupon's discount."""
    from billing_engine.models import Invoice, InvoiceStatus

    if sub.status in ENDED_STATUSES or sub.cancel_at_period_end:
        return None
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    scheduled = (session.get(Plan, sub.scheduled_plan_id)
                 if sub.scheduled_plan_id and sub.status == SubscriptionStatus.ACTIVE else None)

    def open_amount() -> int | None:
        inv = session.exec(select(Invoice).where(Invoice.subscription_id == sub.id, Invoice.status == InvoiceStatus.OPEN,
                                                 Invoice.period_index == sub.next_period_index)).first()
        return inv.amount_minor if inv else None

    return _next_charge(session, sub, plan, scheduled, open_amount)


def _next_charge(session: Session, sub: Any, plan: Plan, scheduled: Plan | None,
                 open_amount: Callable[[], int | None]) -> tuple[datetime, int, str] | None:
    """:func:`next_charge` with the plan, the scheduled plan and the open invoice's amount
    (asked only for a past-due subscription) given: ``sub`` is a model or a plain row."""
    from billing_engine import pricing

    if sub.status in ENDED_STATUSES or sub.cancel_at_period_end:
        return None
    if sub.scheduled_plan_id and sub.status == SubscriptionStatus.ACTIVE:  # a plan change at period end
        plan = scheduled or plan
    if sub.status == SubscriptionStatus.PAST_DUE and sub.next_retry_at is not None:
        amount = open_amount()
        return sub.next_retry_at, amount if amount is not None else plan.amount_minor, plan.currency
    if sub.status == SubscriptionStatus.PAUSED or sub.pause_at_period_end:
        if sub.resumes_at is None:
            return None
        from billing_engine import pauses

        charge_at, quote = pauses.charge_after_resume(session, sub, plan, sub.resumes_at)
        return charge_at, quote.net_minor, plan.currency
    return sub.current_period_end, pricing.quote(session, sub, plan, sub.next_period_index).net_minor, plan.currency


def summary(session: Session, sub: Subscription, now: datetime | None = None) -> dict[str, Any]:
    """The subscription as shown to admins (CLI ``--json`` and the API): its fields plus
    the customer's e-mail, the plan's code and price, and the next charge."""
    plan = session.get(Plan, sub.plan_id)
    cust = session.get(Customer, sub.customer_id)
    assert plan is not None and cust is not None
    return _summary(sub, plan, cust.email, next_charge(session, sub), now)


def _summary(sub: Any, plan: Plan, customer_email: str, nxt: tuple[datetime, int, str] | None,
             now: datetime | None, leads: dict[tuple[str, bool], timedelta] | None = None) -> dict[str, Any]:
    return {
        "id": sub.id, "status": sub.status, "customer_id": sub.customer_id, "customer_email": customer_email,
        "plan_id": plan.id, "plan_code": plan.code, "amount_minor": plan.amount_minor, "currency": plan.currency,
        "payment_method_id": sub.payment_method_id, "billing_anchor": sub.billing_anchor,
        "current_period_start": sub.current_period_start, "current_period_end": sub.current_period_end,
        "trial_end": sub.trial_end, "cancel_at_period_end": sub.cancel_at_period_end,
        "canceled_at": sub.canceled_at, "ended_at": sub.ended_at, "cancellation_kind": sub.cancellation_kind,
        "cancellation_reason": sub.cancellation_reason, "cancellation_comment": sub.cancellation_comment,
        "canceled_by": sub.canceled_by, "next_retry_at": sub.next_retry_at, "failed_attempts": sub.failed_attempts,
        "next_charge_at": nxt[0] if nxt else None, "next_charge_amount_minor": nxt[1] if nxt else None,
        "paused_at": sub.paused_at, "resumes_at": sub.resumes_at, "pause_at_period_end": sub.pause_at_period_end,
        **reminder_status(sub, plan, now, leads=leads),
        "created_at": sub.created_at,
        "updated_at": sub.updated_at,
        "metadata": metadata.load(sub.metadata_json),
        "reactivated_from": sub.reactivated_from, "scheduled_plan_id": sub.scheduled_plan_id,
    }


def reminder_status(sub: Subscription, plan: Plan, now: datetime | None = None, *,
                    leads: dict[tuple[str, bool], timedelta] | None = None) -> dict[str, Any]:
    """The next charge's reminder: sent when, the charge not before when, and whether the
    charge at period end waits for it (``renewals.decide`` says ``wait reminder_pending``):
    sent too late for it, or (as of ``now``) not sent although its latest day has passed.
    ``leads``: a cache of the reminder leads by (plan id, in trial) for a page of rows."""
    from billing_engine import reminders

    trial = sub.status == SubscriptionStatus.TRIALING
    lead = leads.get((plan.id, trial)) if leads is not None else None
    if lead is None:
        lead = reminders.reminder_lead(plan, trial=trial, settings=None)
        if leads is not None:
            leads[(plan.id, trial)] = lead
    sent = sub.reminded_at if (sub.reminded_period_index or -1) >= sub.next_period_index else None
    late = sent + lead > sub.current_period_end if sent is not None else (
        now is not None and sub.current_period_end - lead < now)
    waits = sub.status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING) and not sub.cancel_at_period_end and late
    return {"reminder_sent_at": sent, "charge_not_before": sent + lead if sent is not None else None,
            "waits_for_reminder": waits}


def change_payment_method(
    session: Session, sub: Subscription, payment_method_id: str, *, now: datetime, actor: str = "admin"
) -> Subscription:
    """Switch the card; a subscription in dunning is retried at once on the new card."""
    if sub.status in ENDED_STATUSES:
        raise InvalidTransition(f"the subscription is {sub.status}", field="subscription")
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    pm = _usable_payment_method(session, payment_method_id, sub.customer_id, plan)
    old = sub.payment_method_id
    sub.payment_method_id = pm.id
    if sub.status == SubscriptionStatus.PAST_DUE:
        sub.next_retry_at = now
    sub.updated_at = now
    session.add(sub)
    events.record(session, events.EventType.SUBSCRIPTION_PAYMENT_METHOD_CHANGED, at=now, actor=actor,
                  subscription_id=sub.id, customer_id=sub.customer_id,
                  payload={"from": old, "to": pm.id, "immediate_retry": sub.status == SubscriptionStatus.PAST_DUE})
    return sub


def live_for_payment_method(session: Session, payment_method_id: str) -> list[Subscription]:
    return list(session.exec(select(Subscription).where(
        Subscription.payment_method_id == payment_method_id,
        col(Subscription.status).in_(list(LIVE_STATUSES)))))
