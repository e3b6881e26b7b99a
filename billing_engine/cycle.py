"""The run-cycle: find due work, claim it, charge each period exactly once.

Per subscription (while this worker holds its lease):

1. an attempt left ``pending``/``unknown`` by a crash or a lost answer is reconciled
   with the gateway first (looked up, else re-sent with the SAME idempotency key);
2. a cancellation scheduled for period end takes effect (no charge);
3. a due period gets its invoice (unique per period) and a ``pending`` attempt with a
   deterministic idempotency key, COMMITTED before the gateway is called;
4. the answer is settled (``payments.settle``): paid and advanced, dunning, or
   canceled as involuntary churn.

A subscription that missed several periods (the cron job was down) is caught up
period by period, one invoice and one charge each, so no period is skipped and none
is charged twice.

Claiming: due rows are claimed in batches by stamping a wall-clock lease
(``lease_owner``/``lease_expires_at``). On PostgreSQL the claim uses
``SELECT ... FOR UPDATE SKIP LOCKED``, so any number of workers share the work; on
SQLite every write transaction is ``BEGIN IMMEDIATE`` and claims serialise. The
unique constraints on invoices and idempotency keys are the last line of defence.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import consents, notifications, payment_methods, payments, subscriptions
from billing_engine.db import transaction
from billing_engine.gateway.protocol import (
    ChargeResult,
    ChargeStatus,
    DeclineKind,
    GatewayError,
    PaymentGateway,
)
from billing_engine.invoices import for_period
from billing_engine.models import (
    AttemptStatus,
    CancellationKind,
    Customer,
    PaymentAttempt,
    PaymentMethod,
    PaymentMethodStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.money import format_minor
from billing_engine.periods import Interval, boundary, period_bounds
from billing_engine.settings import Settings, get_settings

log = logging.getLogger(__name__)

CHARGEABLE = (SubscriptionStatus.INCOMPLETE, SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE)
LEASE = timedelta(minutes=15)
MAX_STEPS_PER_SUBSCRIPTION = 500  # catch-up bound per run (e.g. a daily plan 500 days late)


@dataclass
class CycleSummary:
    at: datetime
    dry_run: bool = False
    due: int = 0
    charged: int = 0  # gateway charge calls made for new attempts
    succeeded: int = 0
    declined_soft: int = 0
    declined_hard: int = 0
    unknown: int = 0
    reconciled: int = 0
    canceled_involuntary: int = 0
    cancellations_effective: int = 0
    blocked: int = 0  # not charged: no consent / no usable card
    reminders_queued: int = 0
    notifications_sent: int = 0
    collected: dict[str, int] = field(default_factory=dict)  # currency -> minor units
    would_charge: list[dict[str, Any]] = field(default_factory=list)  # dry-run only
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = self.at.isoformat().replace("+00:00", "Z")
        d["collected_display"] = {c: format_minor(v, c) for c, v in sorted(self.collected.items())}
        return d


def _due_condition(now: datetime) -> Any:
    unresolved = select(PaymentAttempt.subscription_id).where(
        col(PaymentAttempt.status).in_([AttemptStatus.PENDING, AttemptStatus.UNKNOWN])
    )
    return or_(
        and_(col(Subscription.status).in_(list(CHARGEABLE)), col(Subscription.current_period_end) <= now),
        and_(col(Subscription.status) == SubscriptionStatus.PAST_DUE, col(Subscription.next_retry_at) <= now),
        col(Subscription.id).in_(unresolved),
    )


def due_for_renewal(session: Session, now: datetime, limit: int | None = None) -> list[Subscription]:
    """Subscriptions with work due at ``now`` (read only)."""
    q = select(Subscription).where(_due_condition(now)).order_by(col(Subscription.current_period_end), col(Subscription.id))
    if limit:
        q = q.limit(limit)
    return list(session.exec(q))


def claim_batch(
    engine: Engine, *, now: datetime, worker: str, batch_size: int, lease: timedelta = LEASE,
    after: tuple[datetime, str] | None = None,
) -> list[tuple[str, datetime]]:
    """Claim up to ``batch_size`` due subscriptions for ``worker`` (lease on wall-clock time).

    ``after`` is this run's cursor on (current_period_end, id): rows processed earlier in
    the same run that are still due (outcome unknown, not chargeable) are not re-claimed.
    Returns (id, current_period_end) pairs in cursor order."""
    wall = datetime.now(UTC)
    with transaction(engine) as s:
        q = (
            select(Subscription.id, Subscription.current_period_end)
            .where(_due_condition(now))
            .where(or_(col(Subscription.lease_expires_at).is_(None), col(Subscription.lease_expires_at) < wall))
            .order_by(col(Subscription.current_period_end), col(Subscription.id))
            .limit(batch_size)
        )
        if after is not None:
            q = q.where(or_(
                col(Subscription.current_period_end) > after[0],
                and_(col(Subscription.current_period_end) == after[0], col(Subscription.id) > after[1]),
            ))
        if engine.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        rows = [(r[0], r[1]) for r in s.exec(q)]
        ids = [r[0] for r in rows]
        if ids:
            s.execute(
                update(Subscription)
                .where(col(Subscription.id).in_(ids))
                .values(lease_owner=worker, lease_expires_at=wall + lease)
            )
    return rows


def _release(engine: Engine, sub_id: str, worker: str) -> None:
    with transaction(engine) as s:
        s.execute(
            update(Subscription)
            .where(col(Subscription.id) == sub_id, col(Subscription.lease_owner) == worker)
            .values(lease_owner=None, lease_expires_at=None)
        )


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _is_due(sub: Subscription, now: datetime) -> bool:
    if sub.status in CHARGEABLE:
        return sub.current_period_end <= now
    if sub.status == SubscriptionStatus.PAST_DUE:
        return sub.next_retry_at is not None and sub.next_retry_at <= now
    return False


def _blocked_reason(session: Session, sub: Subscription, plan: Plan, now: datetime) -> tuple[str, str] | None:
    """Why this subscription cannot be charged: (involuntary reason, message), or None."""
    pm = session.get(PaymentMethod, sub.payment_method_id) if sub.payment_method_id else None
    if pm is None or pm.status == PaymentMethodStatus.DETACHED:
        return "hard_decline:payment_method_detached", "no usable payment method"
    if payment_methods.is_expired(pm, now) or pm.status == PaymentMethodStatus.EXPIRED:
        return "card_expired", f"card ····{pm.last4} expired {pm.exp_month}/{pm.exp_year}"
    if consents.covering(session, pm.id, plan) is None:
        return "", "no recorded consent covering this plan"  # not charged, not canceled
    return None


@dataclass
class _Step:
    kind: str  # "charge" | "reconcile"
    attempt_id: str
    request: Any


def _next_step(session: Session, sub_id: str, *, now: datetime, worker: str, summary: CycleSummary) -> _Step | None:
    sub = session.get(Subscription, sub_id, with_for_update=session.bind.dialect.name == "postgresql")  # type: ignore[union-attr]
    if sub is None or sub.lease_owner != worker:
        return None
    pending = payments.unresolved(session, sub.id)
    if pending:
        attempt = pending[0]
        return _Step("reconcile", attempt.id, payments.charge_request(session, attempt))
    if sub.status == SubscriptionStatus.CANCELED:
        return None
    if sub.cancel_at_period_end and sub.current_period_end <= now:
        subscriptions.end(session, sub, kind=sub.cancellation_kind or CancellationKind.VOLUNTARY,
                          reason=sub.cancellation_reason, now=now, effective_at=sub.current_period_end,
                          actor=sub.canceled_by or "customer")
        summary.cancellations_effective += 1
        return None
    if not _is_due(sub, now):
        return None
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    blocked = _blocked_reason(session, sub, plan, now)
    if blocked is not None:
        reason, message = blocked
        summary.blocked += 1
        if reason:
            subscriptions.end(session, sub, kind=CancellationKind.INVOLUNTARY, reason=reason, now=now,
                              effective_at=now, actor="system:cycle")
            notifications.enqueue(session, notifications.Kind.CANCELED_INVOLUNTARY, customer_id=sub.customer_id,
                                  subscription_id=sub.id, dedupe_key=f"canceled:{sub.id}", at=now,
                                  payload={"reason": reason, "message": message})
            summary.canceled_involuntary += 1
        else:
            summary.errors.append(f"{sub.id}: not charged: {message}")
        return None
    invoice = for_period(session, sub, plan, sub.next_period_index, now=now)
    pm = session.get(PaymentMethod, sub.payment_method_id)
    assert pm is not None
    attempt = payments.start_attempt(session, sub, invoice, pm, now=now)
    return _Step("charge", attempt.id, payments.charge_request(session, attempt))


def _call_gateway(gateway: PaymentGateway, step: _Step) -> ChargeResult:
    try:
        if step.kind == "reconcile":
            found = gateway.find_charge(step.request.idempotency_key, metadata=step.request.metadata)
            if found is not None:
                return found
        return gateway.charge(step.request)
    except GatewayError as exc:
        # the processor refused the request itself (invalid token, bad config):
        # nothing was charged; treated as a soft failure so dunning decides.
        return ChargeResult(status=ChargeStatus.DECLINED, decline_code="gateway_error",
                            decline_kind=DeclineKind.SOFT, message=str(exc)[:900])


def process_subscription(
    engine: Engine, gateway: PaymentGateway, sub_id: str, *, now: datetime, settings: Settings,
    worker: str, summary: CycleSummary,
) -> None:
    counted_due = False
    for _ in range(MAX_STEPS_PER_SUBSCRIPTION):
        with transaction(engine) as s:
            step = _next_step(s, sub_id, now=now, worker=worker, summary=summary)
        if step is None:
            return
        if not counted_due:
            summary.due += 1
            counted_due = True
        if step.kind == "charge":
            summary.charged += 1
        result = _call_gateway(gateway, step)
        with transaction(engine) as s:
            attempt = s.get(PaymentAttempt, step.attempt_id)
            assert attempt is not None
            outcome = payments.settle(s, attempt, result, now=now, schedule_days=settings.dunning_schedule_days)
        if step.kind == "reconcile" and outcome != payments.Outcome.UNKNOWN:
            summary.reconciled += 1
        if outcome == payments.Outcome.SUCCEEDED:
            summary.succeeded += 1
            summary.collected[attempt.currency] = summary.collected.get(attempt.currency, 0) + attempt.amount_minor
        elif outcome == payments.Outcome.DECLINED_SOFT:
            summary.declined_soft += 1
        elif outcome == payments.Outcome.DECLINED_HARD:
            summary.declined_hard += 1
            summary.canceled_involuntary += 1
        elif outcome == payments.Outcome.EXHAUSTED:
            summary.declined_soft += 1
            summary.canceled_involuntary += 1
        elif outcome == payments.Outcome.UNKNOWN:
            summary.unknown += 1
            return  # reconciled on a later run
        if outcome in (payments.Outcome.DECLINED_SOFT,):
            return  # next try per the dunning schedule
    summary.errors.append(f"{sub_id}: stopped after {MAX_STEPS_PER_SUBSCRIPTION} steps; run again to continue")


def queue_reminders(engine: Engine, *, now: datetime, settings: Settings, batch: int = 500) -> int:
    """Renewal / trial-end reminders and card-expiry notices, each queued once.

    Per plan, only subscriptions whose next charge falls within the plan's reminder
    lead and that were not yet reminded for that period are read (an indexed range on
    ``(status, current_period_end)``), so a daily run stays cheap at any size."""
    queued = 0
    with Session(engine) as s:
        all_plans = list(s.exec(select(Plan)))
    for plan in all_plans:
        for status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING):
            lead = reminder_lead(plan, trial=status == SubscriptionStatus.TRIALING, settings=settings)
            if lead is None:
                continue
            while True:
                with transaction(engine) as s:
                    subs = list(s.exec(
                        select(Subscription)
                        .where(Subscription.plan_id == plan.id, Subscription.status == status)
                        .where(col(Subscription.current_period_end) > now)
                        .where(col(Subscription.current_period_end) <= now + lead)
                        .where(col(Subscription.cancel_at_period_end).is_(False))
                        .where(or_(col(Subscription.reminded_period_index).is_(None),
                                   col(Subscription.reminded_period_index) < col(Subscription.next_period_index)))
                        .limit(batch)
                    ))
                    for sub in subs:
                        queued += _remind(s, sub, plan, now=now)
                if len(subs) < batch:
                    break
    return queued


def _remind(s: Session, sub: Subscription, plan: Plan, *, now: datetime) -> int:
    trial = sub.status == SubscriptionStatus.TRIALING
    kind = notifications.Kind.TRIAL_ENDING if trial else notifications.Kind.RENEWAL_REMINDER
    sub.reminded_period_index = sub.next_period_index
    s.add(sub)
    n = notifications.enqueue(
        s, kind, customer_id=sub.customer_id, subscription_id=sub.id,
        dedupe_key=f"reminder:{sub.id}:{sub.next_period_index}", at=now,
        payload={"charge_at": sub.current_period_end, "amount_minor": plan.amount_minor,
                 "currency": plan.currency, "plan_name": plan.name, "trial": trial},
    )
    queued = int(n is not None)
    pm = s.get(PaymentMethod, sub.payment_method_id) if sub.payment_method_id else None
    if pm is not None and pm.exp_year and pm.exp_month:
        first_invalid_day, _ = period_bounds(datetime(pm.exp_year, pm.exp_month, 1, tzinfo=UTC), Interval.MONTH, 1, 1)
        if first_invalid_day <= sub.current_period_end:  # the card is no longer valid at the next charge
            n = notifications.enqueue(
                s, notifications.Kind.CARD_EXPIRING, customer_id=sub.customer_id, subscription_id=sub.id,
                dedupe_key=f"card_expiring:{pm.id}:{pm.exp_year}-{pm.exp_month}", at=now,
                payload={"payment_method_id": pm.id, "brand": pm.brand, "last4": pm.last4,
                         "exp_month": pm.exp_month, "exp_year": pm.exp_year, "charge_at": sub.current_period_end},
            )
            queued += int(n is not None)
    return queued


def reminder_lead(plan: Plan, *, trial: bool, settings: Settings) -> timedelta | None:
    """How long before the charge the reminder goes out (None: no reminder).

    Per plan (``reminder_days``) or the default; never off for yearly plans and trial
    ends; at most half a period, so a weekly plan is reminded 3.5 days ahead and a
    daily plan 12 hours ahead."""
    days = plan.reminder_days if plan.reminder_days is not None else settings.reminder_days_before
    if days <= 0:
        if not (plan.interval == "year" or trial):
            return None
        days = max(settings.reminder_days_before, 1)
    lead = timedelta(days=days)
    if trial:
        period = timedelta(days=plan.trial_days) if plan.trial_days > 0 else lead * 2
    else:
        start = datetime(2001, 1, 1, tzinfo=UTC)  # a non-leap reference for the shortest period
        period = boundary(start, Interval(plan.interval), plan.interval_count, 1) - start
    return min(lead, period / 2)


def run_cycle(
    engine: Engine,
    gateway: PaymentGateway,
    *,
    now: datetime,
    settings: Settings | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    batch_size: int = 50,
    worker: str | None = None,
    lease: timedelta = LEASE,
    deliver: Callable[[Engine, datetime], int] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> CycleSummary:
    """Run one billing cycle as of ``now``. Safe to run in parallel and to re-run."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    settings = settings or get_settings()
    summary = CycleSummary(at=now, dry_run=dry_run)
    if dry_run:
        with Session(engine) as s:
            subs = due_for_renewal(s, now, limit)
            summary.due = len(subs)
            for sub in subs:
                plan = s.get(Plan, sub.plan_id)
                cust = s.get(Customer, sub.customer_id)
                assert plan is not None and cust is not None
                action = "charge"
                if payments.unresolved(s, sub.id):
                    action = "reconcile"
                elif sub.cancel_at_period_end and sub.current_period_end <= now:
                    action = "end (canceled at period end)"
                summary.would_charge.append({
                    "subscription_id": sub.id, "customer_email": cust.email, "plan": plan.code,
                    "action": action, "amount_minor": plan.amount_minor, "currency": plan.currency,
                    "amount": format_minor(plan.amount_minor, plan.currency),
                    "status": sub.status, "due_at": sub.next_retry_at if sub.status == SubscriptionStatus.PAST_DUE else sub.current_period_end,
                })
        return summary

    worker = worker or new_worker_id()
    processed = 0
    cursor: tuple[datetime, str] | None = None
    while limit is None or processed < limit:
        want = batch_size if limit is None else min(batch_size, limit - processed)
        rows = claim_batch(engine, now=now, worker=worker, batch_size=want, lease=lease, after=cursor)
        if not rows:
            break
        cursor = (rows[-1][1], rows[-1][0])
        for sub_id, _end in rows:
            try:
                process_subscription(engine, gateway, sub_id, now=now, settings=settings, worker=worker, summary=summary)
            except Exception as exc:  # one bad row must not stop the run
                log.exception("run-cycle: %s failed", sub_id)
                summary.errors.append(f"{sub_id}: {type(exc).__name__}: {exc}")
            finally:
                _release(engine, sub_id, worker)
            processed += 1
            if on_progress:
                on_progress(processed, 0)
    summary.reminders_queued = queue_reminders(engine, now=now, settings=settings)
    if deliver is not None:
        try:
            summary.notifications_sent = deliver(engine, now)
        except Exception as exc:  # e-mail trouble never fails a billing run
            summary.errors.append(f"notifications: {type(exc).__name__}: {exc}")
    return summary
