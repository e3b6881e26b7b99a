"""Coupons: a discount on a subscription's invoices.

A coupon takes a percentage (1-100) or a fixed amount (in one currency) off, for one period
(``once``), N periods (``repeating``) or ``forever``; it may be limited to some plans, to a
number of redemptions and to a last redemption date, and (by default) to once per customer.
Applied to a subscription (at subscribe time or later) it becomes a *redemption*; each
invoice billed while it applies carries ``discount_minor`` and ``redemption_id``
(gross = ``amount_minor + discount_minor``, net = ``amount_minor``, what is charged). A
period counts when its invoice is written, so a dunning retry never uses up another one.

Rounding: a percentage discount is rounded DOWN to the minor unit. The cap: no discount
exceeds the plan's ``max_discount_percent`` (or ``BILLING_MAX_DISCOUNT_PERCENT``, default
30 %) of the period's price; a coupon above the cap is refused when applied, and the cap is
applied again to every invoice (a price change cannot lift a discount over it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col
from sqlmodel import select as sselect

from billing_engine import events, validation
from billing_engine.db import among_param
from billing_engine.errors import Conflict, InvalidTransition, NotFound, ValidationError
from billing_engine.models import Coupon, CouponRedemption, Invoice, Plan, Subscription, SubscriptionStatus
from billing_engine.money import normalize_currency
from billing_engine.periods import ensure_utc
from billing_engine.pricing import Quote
from billing_engine.rows import PlainSelect
from billing_engine.settings import get_settings


class Kind(StrEnum):
    PERCENT = "percent"
    AMOUNT = "amount"


class Duration(StrEnum):
    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


COUPONS = Coupon.__table__  # type: ignore[attr-defined]
REDEMPTIONS = CouponRedemption.__table__  # type: ignore[attr-defined]
INVOICES = Invoice.__table__  # type: ignore[attr-defined]


_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_.-]{0,63}$")


def normalize_code(value: str, field: str = "code") -> str:
    """Coupon codes are case-insensitive, kept upper-case: ``welcome20`` is ``WELCOME20``."""
    v = (value or "").strip().upper()
    if not _CODE.match(v):
        raise ValidationError("must be 1-64 characters of letters, digits, '_', '.', '-'", field=field)
    return v


def cap_percent(plan: Any) -> int:
    cap = getattr(plan, "max_discount_percent", None)
    return int(cap) if cap is not None else get_settings().max_discount_percent


def discount(gross: int, *, kind: str, percent_off: int | None, amount_off_minor: int | None, cap: int) -> int:
    """THE discount of one period: percent rounded down, or the fixed amount; never more
    than ``cap`` percent of the gross (rounded down) nor than the gross."""
    raw = gross * int(percent_off or 0) // 100 if kind == Kind.PERCENT else int(amount_off_minor or 0)
    return max(0, min(raw, gross * cap // 100, gross))


def periods_of(duration: str, duration_periods: int | None) -> int | None:
    """How many periods a redemption discounts (None: forever)."""
    return {Duration.ONCE: 1, Duration.REPEATING: duration_periods}.get(Duration(duration))


def apply(gross: int, red: Any | None, plan: Any) -> Quote:
    """The quote of a period priced ``gross`` with the redemption row ``red`` (or None)."""
    if red is None or not _applies_to(red, plan):
        return Quote(gross_minor=gross)
    d = discount(gross, kind=red.kind, percent_off=red.percent_off, amount_off_minor=red.amount_off_minor,
                 cap=cap_percent(plan))
    if d <= 0:
        return Quote(gross_minor=gross)
    return Quote(gross_minor=gross, discount_minor=d, redemption_id=red.id, coupon_code=red.code)


def _applies_to(red: Any, plan: Any) -> bool:
    if red.kind == Kind.AMOUNT and red.currency != plan.currency:
        return False
    codes = _codes(red.plan_codes)
    return not codes or plan.code in codes


def _codes(value: str | None) -> list[str]:
    return [c for c in (value or "").split(",") if c]


def _active_select() -> Any:
    r, c, i = REDEMPTIONS, COUPONS, INVOICES
    used = select(func.count()).select_from(i).where(i.c.redemption_id == r.c.id).scalar_subquery()
    return (select(r.c.id, r.c.subscription_id, c.c.code, c.c.kind, c.c.percent_off, c.c.amount_off_minor,
                   c.c.currency, c.c.duration, c.c.duration_periods, c.c.plan_codes, used.label("used"))
            .join(c, c.c.id == r.c.coupon_id)
            .where(among_param(r.c.subscription_id, "subscription_ids"), r.c.removed_at.is_(None))
            .order_by(r.c.redeemed_at, r.c.id))


_ACTIVE_SELECT = PlainSelect(_active_select(), "RedemptionRow")  # built once: the list runs it per page, the run-cycle per batch


def active_for(session: Session, subscription_ids: Sequence[str]) -> dict[str, Any]:
    """The redemption still discounting each subscription (with its coupon's terms and the
    periods already discounted): ONE query for a whole batch."""
    if not subscription_ids:
        return {}
    out: dict[str, Any] = {}
    for row in _ACTIVE_SELECT.all(session.connection(), {"subscription_ids": list(subscription_ids)}):
        limit = periods_of(row.duration, row.duration_periods)
        if row.subscription_id not in out and (limit is None or int(row.used) < limit):
            out[row.subscription_id] = row
    return out


# --------------------------------------------------------------------------- admin verbs


def create(
    session: Session, *, code: str, now: datetime, percent_off: int | None = None, amount_off_minor: int | None = None,
    currency: str | None = None, duration: str = Duration.ONCE, duration_periods: int | None = None,
    plan_codes: Sequence[str] | None = None, max_redemptions: int | None = None, redeem_by: datetime | None = None,
    once_per_customer: bool = True, name: str = "", actor: str = "admin",
) -> Coupon:
    code = normalize_code(code)
    name = validation.text(name, "name", max_length=200)
    if (percent_off is None) == (amount_off_minor is None):
        raise ValidationError("give exactly one of percent_off and amount_off", field="percent_off")
    if percent_off is not None:
        validation.int_range(percent_off, "percent_off", lo=1, hi=100)
        kind, currency = Kind.PERCENT, None
    else:
        assert amount_off_minor is not None
        validation.int_range(amount_off_minor, "amount_off_minor", lo=1, hi=10**12)
        if not currency:
            raise ValidationError("an amount coupon needs a currency", field="currency")
        kind, currency = Kind.AMOUNT, normalize_currency(currency)
    try:
        dur = Duration(str(duration).strip().lower())
    except ValueError:
        raise ValidationError("must be one of once, repeating, forever", field="duration") from None
    if dur == Duration.REPEATING:
        if duration_periods is None:
            raise ValidationError("a repeating coupon needs the number of periods", field="duration_periods")
        validation.int_range(duration_periods, "duration_periods", lo=1, hi=1000)
    elif duration_periods is not None:
        raise ValidationError("only a repeating coupon takes a number of periods", field="duration_periods")
    if max_redemptions is not None:
        validation.int_range(max_redemptions, "max_redemptions", lo=1, hi=10**9)
    if redeem_by is not None:
        redeem_by = ensure_utc(redeem_by, "redeem_by")
        if redeem_by <= now:
            raise ValidationError("must be in the future", field="redeem_by")
    codes: list[str] = []
    for pc in plan_codes or ():
        plan = session.exec(sselect(Plan).where(Plan.code == pc.strip())).first()
        if plan is None:
            raise NotFound(f"no plan {pc!r}", field="plans")
        codes.append(plan.code)
    if session.exec(sselect(Coupon).where(Coupon.code == code)).first() is not None:
        raise Conflict(f"a coupon with code {code!r} already exists", field="code")
    coupon = Coupon(code=code, name=name, kind=kind, percent_off=percent_off, amount_off_minor=amount_off_minor,
                    currency=currency, duration=dur.value, duration_periods=duration_periods,
                    plan_codes=",".join(sorted(set(codes))) or None, max_redemptions=max_redemptions,
                    redeem_by=redeem_by, once_per_customer=once_per_customer, created_at=now)
    session.add(coupon)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(f"a coupon with code {code!r} already exists", field="code") from None
    events.record(session, events.EventType.COUPON_CREATED, at=now, actor=actor, payload=summary(coupon))
    return coupon


def get(session: Session, code_or_id: str) -> Coupon:
    c = session.get(Coupon, code_or_id) or session.exec(
        sselect(Coupon).where(Coupon.code == (code_or_id or "").strip().upper())).first()
    if c is None:
        raise NotFound(f"no coupon {code_or_id!r}", field="coupon")
    return c


def list_coupons(session: Session, *, active: bool | None = None) -> list[Coupon]:
    q = sselect(Coupon).order_by(col(Coupon.code))
    if active is not None:
        q = q.where(Coupon.active == active)
    return list(session.exec(q))


def deactivate(session: Session, code_or_id: str, *, now: datetime, actor: str = "admin") -> Coupon:
    """No new redemptions; the ones made keep discounting as agreed."""
    c = get(session, code_or_id)
    c.active = False
    session.add(c)
    events.record(session, events.EventType.COUPON_UPDATED, at=now, actor=actor,
                  payload={"coupon_id": c.id, "code": c.code, "active": False})
    return c


def redeem(session: Session, sub: Subscription, code_or_id: str, *, now: datetime, actor: str = "admin") -> CouponRedemption:
    """Apply a coupon to a subscription: it discounts the next invoices written (not one
    already open). Refused (clear error, nothing changed) when the coupon is inactive,
    expired, used up, not for this plan, over the plan's cap, already used by this customer,
    or the subscription is canceled or already carries a coupon."""
    c = session.exec(sselect(Coupon).where((Coupon.id == code_or_id) | (Coupon.code == (code_or_id or "").strip().upper()))
                     .with_for_update()).first()  # serialises redemptions of one coupon (max_redemptions)
    if c is None:
        raise NotFound(f"no coupon {code_or_id!r}", field="coupon")
    if sub.status == SubscriptionStatus.CANCELED:
        raise InvalidTransition("the subscription is canceled", field="subscription")
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    if not c.active:
        raise Conflict(f"coupon {c.code!r} is no longer active", field="coupon")
    if c.redeem_by is not None and now >= c.redeem_by:
        raise Conflict(f"coupon {c.code!r} expired on {c.redeem_by.date().isoformat()}", field="coupon")
    if c.max_redemptions is not None and c.times_redeemed >= c.max_redemptions:
        raise Conflict(f"coupon {c.code!r} has been used {c.times_redeemed} times, its limit", field="coupon")
    codes = _codes(c.plan_codes)
    if codes and plan.code not in codes:
        raise Conflict(f"coupon {c.code!r} is not valid for plan {plan.code!r}", field="coupon")
    if c.kind == Kind.AMOUNT and c.currency != plan.currency:
        raise Conflict(f"coupon {c.code!r} is in {c.currency}, the plan in {plan.currency}", field="coupon")
    cap = cap_percent(plan)
    raw = c.percent_off * 100 if c.kind == Kind.PERCENT and c.percent_off else None
    over = (raw is not None and raw > cap * 100) or (
        c.kind == Kind.AMOUNT and (c.amount_off_minor or 0) * 100 > plan.amount_minor * cap)
    if over:
        raise Conflict(f"coupon {c.code!r} gives more than the {cap}% discount cap of plan {plan.code!r}",
                       field="coupon")
    if c.once_per_customer and session.exec(sselect(CouponRedemption).where(
            CouponRedemption.coupon_id == c.id, CouponRedemption.customer_id == sub.customer_id)).first():
        raise Conflict(f"customer {sub.customer_id} has already used coupon {c.code!r}", field="coupon")
    if sub.id in active_for(session, [sub.id]):
        raise Conflict("the subscription already has a coupon; remove it first", field="subscription")
    red = CouponRedemption(coupon_id=c.id, subscription_id=sub.id, customer_id=sub.customer_id, redeemed_at=now,
                           actor=actor, created_at=now)
    c.times_redeemed += 1
    session.add(c)
    session.add(red)
    session.flush()
    events.record(session, events.EventType.COUPON_REDEEMED, at=now, actor=actor, subscription_id=sub.id,
                  customer_id=sub.customer_id, payload={"coupon_id": c.id, "code": c.code, "redemption_id": red.id,
                                                         "duration": c.duration, "periods": c.duration_periods})
    return red


def remove(session: Session, sub: Subscription, *, now: datetime, actor: str = "admin") -> CouponRedemption:
    """Stop the subscription's coupon: invoices written from now on are at full price."""
    red = session.exec(sselect(CouponRedemption).where(
        CouponRedemption.subscription_id == sub.id, col(CouponRedemption.removed_at).is_(None))).first()
    if red is None:
        raise InvalidTransition("the subscription has no coupon", field="subscription")
    red.removed_at = now
    session.add(red)
    events.record(session, events.EventType.COUPON_REMOVED, at=now, actor=actor, subscription_id=sub.id,
                  customer_id=sub.customer_id, payload={"redemption_id": red.id, "coupon_id": red.coupon_id})
    return red


def summary(c: Coupon) -> dict[str, Any]:
    return {"id": c.id, "code": c.code, "name": c.name, "kind": c.kind, "percent_off": c.percent_off,
            "amount_off_minor": c.amount_off_minor, "currency": c.currency, "duration": c.duration,
            "duration_periods": c.duration_periods, "plans": _codes(c.plan_codes), "max_redemptions": c.max_redemptions,
            "times_redeemed": c.times_redeemed, "redeem_by": c.redeem_by, "once_per_customer": c.once_per_customer,
            "active": c.active, "created_at": c.created_at}


def set_plan_cap(session: Session, plan_ref: str, percent: int | None, *, now: datetime, actor: str = "admin") -> Plan:
    """The largest discount a coupon may give on this plan (percent; None: the setting)."""
    from billing_engine import plans

    plan = plans.get(session, plan_ref)
    if percent is not None:
        validation.int_range(percent, "max_discount_percent", lo=0, hi=90)
    plan.max_discount_percent = percent
    session.add(plan)
    events.record(session, events.EventType.PLAN_UPDATED, at=now, actor=actor,
                  payload={"plan_id": plan.id, "max_discount_percent": percent})
    return plan
