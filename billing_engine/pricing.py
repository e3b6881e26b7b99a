"""What a period costs: the plan's price in force for that period, minus a coupon's discount.

Price changes (``billing plan reprice``): the plan's list price changes at once for new
subscribers; an existing subscriber pays the new price from their first period that
starts on or after ``effective_at`` (= the announcement + the notice, at least
:data:`MIN_NOTICE_DAYS`). The one rule, :func:`in_force`, is a pure function of the
plan's price changes, the subscription's creation time and the period's start, so the
run-cycle (a batch of snapshots, :func:`changes_for` = one query per batch), the dry run,
a catch-up of several missed periods and a reminder all bill each period at the same
price.

Consent: a price increase is consented by the notice. :func:`reprice` records, for every
subscriber with a card, a consent row (channel ``price_notice``, the notice text, the new
amount): a customer who does not cancel before the new price applies agrees to it; one
who cancels is never charged it (the cancellation ends the subscription at the end of a
period billed at the old price). A price decrease needs no new consent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from billing_engine import events, i18n, notifications, plans, terms, validation
from billing_engine.db import among_param
from billing_engine.errors import Conflict
from billing_engine.models import (
    LIVE_STATUSES,
    Consent,
    Customer,
    Event,
    Notification,
    Plan,
    PriceChange,
    Subscription,
    new_id,
)
from billing_engine.money import format_minor
from billing_engine.periods import Interval, boundary, period_bounds
from billing_engine.rows import PlainSelect

MIN_NOTICE_DAYS = 7
MAX_NOTICE_DAYS = 365
PRICE_CHANGES = PriceChange.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, kw_only=True)
class Quote:
    """What one period is billed: gross (the price in force), the discount, the net charged."""

    gross_minor: int
    discount_minor: int = 0
    redemption_id: str | None = None
    coupon_code: str | None = None

    @property
    def net_minor(self) -> int:
        return self.gross_minor - self.discount_minor


def in_force(plan: Any, changes: Sequence[Any], *, subscribed_at: datetime, period_start: datetime) -> int:
    """THE price of a period starting at ``period_start`` of a subscription created at
    ``subscribed_at``: the newest change (by announcement) that applies to it -- announced
    no later than it subscribed, or effective no later than the period starts -- else the
    price before the first change (``changes`` in announcement order)."""
    if not changes:
        return int(plan.amount_minor)
    amount = int(changes[0].old_amount_minor)
    for c in changes:
        if c.announced_at <= subscribed_at or c.effective_at <= period_start:
            amount = int(c.amount_minor)
    return amount


_CHANGES_SELECT = PlainSelect(PRICE_CHANGES.select().where(among_param(PRICE_CHANGES.c.plan_id, "plan_ids")).order_by(
    PRICE_CHANGES.c.announced_at, PRICE_CHANGES.c.id), "PriceChangeRow")  # built once (the list runs it per page)


def changes_for(session: Session, plan_ids: Iterable[str]) -> dict[str, list[Any]]:
    """The price changes of these plans, oldest announcement first: ONE query for a batch."""
    ids = sorted(set(plan_ids))
    out: dict[str, list[Any]] = {pid: [] for pid in ids}
    if not ids:
        return out
    for r in _CHANGES_SELECT.all(session.connection(), {"plan_ids": ids}):
        out[r.plan_id].append(r)
    return out


def period_start(sub: Any, plan: Any, index: int) -> datetime:
    """``bounds(sub, plan, index)[0]``, without computing the end."""
    return boundary(sub.billing_anchor, Interval(plan.interval), plan.interval_count,
                    index - int(sub.anchor_period_index or 0))


def bounds(sub: Any, plan: Any, index: int) -> tuple[datetime, datetime]:
    """Period ``index`` of ``sub``: counted from its anchor (``anchor_period_index`` is the
    period that starts at ``billing_anchor``; 0 unless a resume re-anchored it)."""
    return period_bounds(sub.billing_anchor, Interval(plan.interval), plan.interval_count,
                         index - int(sub.anchor_period_index or 0))


PRELOAD = "pricing_preload"


def preload(session: Session, subs: Sequence[Any]) -> None:
    """Load the price changes of ``subs``' plans and their active coupons in two queries,
    for :func:`quote` of each of them in this session (a page of a list)."""
    from billing_engine import coupons

    if subs:
        session.info[PRELOAD] = (changes_for(session, {s.plan_id for s in subs}),
                                 {s.id for s in subs}, coupons.active_for(session, [s.id for s in subs]))


def quote(session: Session, sub: Any, plan: Any, index: int) -> Quote:
    """The quote of period ``index`` of one subscription (outside the batch pipeline)."""
    from billing_engine import coupons

    loaded = session.info.get(PRELOAD)
    if loaded is not None and plan.id in loaded[0] and sub.id in loaded[1]:
        changes, red = loaded[0][plan.id], loaded[2].get(sub.id)
    else:
        changes, red = changes_for(session, [plan.id])[plan.id], coupons.active_for(session, [sub.id]).get(sub.id)
    if not changes:  # the common case: the plan's price, no period arithmetic (a list page quotes every row)
        gross = int(plan.amount_minor)
    else:
        gross = in_force(plan, changes, subscribed_at=sub.created_at, period_start=period_start(sub, plan, index))
    return coupons.apply(gross, red, plan)


def first_period_from(sub: Any, plan: Any, at: datetime, *, limit: int = 2000) -> datetime:
    """The start of the first period to bill (``next_period_index`` on) starting at or after ``at``."""
    i = int(sub.next_period_index)
    for _ in range(limit):
        start = period_start(sub, plan, i)
        if start >= at:
            return start
        i += 1
    return at  # pragma: no cover - a notice longer than 2,000 periods


@dataclass(frozen=True, kw_only=True)
class RepriceResult:
    change: PriceChange
    plan: Plan
    notified: int


def reprice(
    session: Session, plan_ref: str, *, amount_minor: int, now: datetime, notice_days: int | None = None,
    default_notice_days: int = 30, actor: str = "admin", chunk: int = 2000, default_locale: str | None = None,
) -> RepriceResult:
    """Change a plan's price: new subscribers at once, existing ones from their first period
    starting after the notice. Every live subscriber gets an e-mail (old and new price, the
    date, the cancel link) and, for an increase, a consent row recorded by the notice: the
    e-mail's own notice text (:func:`notice_text`) in the customer's language (their
    ``locale``, else ``default_locale``, else the ``BILLING_DEFAULT_LOCALE`` setting), which
    the e-mail is then written in."""
    plan = plans.get(session, plan_ref)
    validation.int_range(amount_minor, "amount_minor", lo=0, hi=10**12)
    days = default_notice_days if notice_days is None else notice_days
    validation.int_range(days, "notice_days", lo=MIN_NOTICE_DAYS, hi=MAX_NOTICE_DAYS)
    if amount_minor == plan.amount_minor:
        raise Conflict(f"plan {plan.code!r} already costs {format_minor(amount_minor, plan.currency)} "
                       f"{plan.currency}", field="amount_minor")
    effective = now + timedelta(days=days)
    old = plan.amount_minor
    change = PriceChange(plan_id=plan.id, old_amount_minor=old, amount_minor=amount_minor, currency=plan.currency,
                         notice_days=days, announced_at=now, effective_at=effective, actor=actor, created_at=now)
    plan.amount_minor = amount_minor
    session.add(plan)
    session.add(change)
    session.flush()
    if default_locale is None:
        from billing_engine.settings import get_settings

        default_locale = get_settings().default_locale
    notified = _notify_subscribers(session, plan, change, now=now, actor=actor, chunk=chunk,
                                   default_locale=default_locale)
    change.subscribers_notified = notified
    session.add(change)
    events.record(session, events.EventType.PLAN_REPRICED, at=now, actor=actor, payload={
        "plan_id": plan.id, "code": plan.code, "price_change_id": change.id, "old_amount_minor": old,
        "amount_minor": amount_minor, "currency": plan.currency, "notice_days": days, "effective_at": effective,
        "subscribers_notified": notified})
    return RepriceResult(change=change, plan=plan, notified=notified)


@dataclass(frozen=True, kw_only=True)
class Notice:
    """The facts of one subscriber's price-change notice: what its e-mail and its consent say."""

    plan_name: str
    old_amount_minor: int
    amount_minor: int
    currency: str
    interval: str
    interval_count: int
    first_at: datetime  # the first renewal at the new price

    @classmethod
    def from_payload(cls, payload: dict[str, Any], plan: Any) -> Notice | None:
        """The notice of a ``price_change`` e-mail's payload (``plan``: the cadence of a row
        queued before the payload carried it); None when the payload lacks the facts."""
        first_at = notifications._parse_dt(payload.get("effective_at"))
        try:
            interval = str(payload.get("interval") or plan.interval)
            count = int(payload.get("interval_count") or plan.interval_count or 1)
            return cls(plan_name=str(payload.get("plan_name") or plan.name),
                       old_amount_minor=int(payload["old_amount_minor"]), amount_minor=int(payload["amount_minor"]),
                       currency=str(payload.get("currency") or plan.currency), interval=interval,
                       interval_count=count, first_at=first_at) if first_at is not None else None
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def notice_prices(tr: i18n.Translator, n: Notice) -> tuple[str, str]:
    """The old and the new price with their cadence ("$17.00 every month": babel's amount for
    the customer's locale, as on the account pages: :meth:`i18n.Translator.money`)."""
    every = terms.every(tr, n.interval, n.interval_count)
    old, new = (tr.gettext("%(amount)s %(every)s", amount=tr.money(a, n.currency), every=every)
                for a in (n.old_amount_minor, n.amount_minor))
    return old, new


def notice_text(tr: i18n.Translator, n: Notice) -> str:
    """THE words of the price-change notice in ``tr``'s language: the paragraph the e-mail
    carries (templates/email/price_change.*) and the consent recorded for it (channel
    ``price_notice``): one text, so the evidence is what the customer was sent."""
    date = tr.date(n.first_at)
    return " ".join((
        tr.gettext("The price of your %(plan)s subscription changes from %(old_amount)s to %(amount)s %(every)s.",
                   plan=n.plan_name, old_amount=tr.money(n.old_amount_minor, n.currency),
                   amount=tr.money(n.amount_minor, n.currency),
                   every=terms.every(tr, n.interval, n.interval_count)),
        tr.gettext("Your first charge at the new price is on %(date)s; until then nothing changes.", date=date),
        tr.gettext("You don't need to do anything to keep it: if you do not cancel before %(date)s, you agree to "
                   "the new price.", date=date),
        tr.gettext("If you cancel before %(date)s, you will never be charged the new price.", date=date),
    ))


def _notify_subscribers(session: Session, plan: Plan, change: PriceChange, *, now: datetime, actor: str,
                        chunk: int, default_locale: str | None) -> int:
    """Set-based: per chunk of live subscribers, one read, then bulk inserts of the notice
    e-mails, the per-subscription events and (for an increase) the consents. The e-mail's
    payload names the language (``locale``) its consent text was recorded in: the e-mail is
    written in it (notifications.build_context), so the two cannot differ."""
    from billing_engine.charging import bulk_insert

    subs_t, cust_t = Subscription.__table__, Customer.__table__  # type: ignore[attr-defined]
    increase = change.amount_minor > change.old_amount_minor
    old_s, new_s = (f"{format_minor(a, plan.currency)} {plan.currency}" for a in (change.old_amount_minor, change.amount_minor))
    notified, after = 0, ""
    texts: dict[tuple[str, datetime], str] = {}  # the subscribers share a few (language, date)

    def text_for(tr: i18n.Translator, first_at: datetime) -> str:
        key = (str(tr.locale), first_at)
        if key not in texts:
            texts[key] = notice_text(tr, Notice(
                plan_name=plan.name, old_amount_minor=change.old_amount_minor, amount_minor=change.amount_minor,
                currency=plan.currency, interval=plan.interval, interval_count=int(plan.interval_count or 1),
                first_at=first_at))
        return texts[key]

    while True:
        page = list(session.connection().execute(
            select(subs_t, cust_t.c.email, cust_t.c.locale.label("customer_locale"))
            .join(cust_t, cust_t.c.id == subs_t.c.customer_id)
            .where(subs_t.c.plan_id == plan.id, subs_t.c.status.in_([str(s) for s in LIVE_STATUSES]),
                   subs_t.c.created_at < change.announced_at, subs_t.c.id > after)
            .order_by(subs_t.c.id).limit(chunk)))
        if not page:
            return notified
        after = page[-1].id
        mails, evs, cons = [], [], []
        for sub in page:
            first_at = first_period_from(sub, plan, change.effective_at)
            payload = {"price_change_id": change.id, "old_amount_minor": change.old_amount_minor,
                       "amount_minor": change.amount_minor, "currency": plan.currency, "old_amount": old_s,
                       "new_amount": new_s, "effective_at": first_at, "plan_name": plan.name}
            tr = i18n.for_customer(sub.customer_locale, default_locale)
            mails.append(notifications.row(notifications.Kind.PRICE_CHANGE, customer_id=sub.customer_id,
                                           to_email=sub.email, dedupe_key=f"price_change:{change.id}:{sub.id}",
                                           at=now, subscription_id=sub.id, payload=payload | {
                                               "interval": plan.interval, "interval_count": plan.interval_count,
                                               "locale": str(tr.locale)}))
            evs.append(events.row(events.EventType.SUBSCRIPTION_PRICE_CHANGE_NOTICE, at=now, actor=actor,
                                  subscription_id=sub.id, customer_id=sub.customer_id, payload=payload))
            if increase and sub.payment_method_id:
                text = text_for(tr, first_at)
                cons.append({
                    "id": new_id("cns"), "customer_id": sub.customer_id, "payment_method_id": sub.payment_method_id,
                    "plan_id": plan.id, "accepted_at": now, "ip_address": "", "user_agent": "price notice e-mail",
                    "channel": "price_notice", "terms_version": f"price-change:{change.id}",
                    "terms_sha256": _sha256(text), "terms_text": text, "amount_minor": change.amount_minor,
                    "currency": plan.currency, "interval": plan.interval, "interval_count": plan.interval_count,
                    "gateway_setup_id": None, "created_at": now, "revoked_at": None,
                })
        bulk_insert(session, Notification.__table__, mails)  # type: ignore[attr-defined]
        bulk_insert(session, Event.__table__, evs)  # type: ignore[attr-defined]
        bulk_insert(session, Consent.__table__, cons)  # type: ignore[attr-defined]
        notified += len(page)


# --------------------------------------------------------------------------- acceptance


@dataclass(frozen=True, kw_only=True)
class Pending:
    """A price change announced to a subscriber that its next charge does not pay yet."""

    change: Any  # price_changes row
    first_at: datetime  # the first renewal at the new price
    accepted_at: datetime | None  # the customer's explicit acceptance (None: the notice stands)


def acceptance_version(change: Any) -> str:
    return f"price-change:{change.id}"


def pending(session: Session, sub: Any, plan: Any) -> Pending | None:
    """The newest price change of ``plan`` announced after ``sub`` subscribed whose new
    price no period billed so far paid (None: nothing pending): the current period started
    before it took effect."""
    if sub.status not in LIVE_STATUSES:
        return None
    changes = [c for c in changes_for(session, [plan.id])[plan.id] if c.announced_at > sub.created_at]
    if not changes:
        return None
    c = changes[-1]
    if c.effective_at <= sub.current_period_start:
        return None
    from sqlmodel import col
    from sqlmodel import select as sselect

    accepted = session.exec(sselect(Consent.accepted_at).where(
        Consent.customer_id == sub.customer_id, Consent.channel == "web",
        Consent.terms_version == acceptance_version(c)).order_by(col(Consent.accepted_at))).first()
    return Pending(change=c, first_at=first_period_from(sub, plan, c.effective_at), accepted_at=accepted)


def acceptance_text(plan: Any, change: Any, first_at: datetime, tr: i18n.Translator | None = None) -> str:
    """The words next to the customer's "Accept the new price" button, stored as the consent,
    in the language of the page (``tr``; English when not given)."""
    tr = tr or i18n.translator()
    return tr.gettext(
        "I accept the new price of %(plan)s: %(amount)s %(every)s (instead of %(old_amount)s), from the first "
        "renewal on or after %(date)s, until I cancel.",
        plan=plan.name, amount=tr.money(change.amount_minor, plan.currency),
        every=terms.every(tr, plan.interval, int(plan.interval_count or 1)),
        old_amount=tr.money(change.old_amount_minor, plan.currency),
        date=tr.date(first_at))


def accept(session: Session, sub: Any, *, ip_address: str, user_agent: str, now: datetime,
           actor: str = "customer", tr: i18n.Translator | None = None) -> Any:
    """The customer accepts the pending price change explicitly (the self-service page):
    a consent row (channel ``web``, their IP / user agent, the exact text shown, the new
    amount) and a ``subscription.price_change_accepted`` event. ``tr``: the language the page
    showed the text in (the text stored is the one shown). Accepting twice records nothing
    new. Returns the consent (None when it was already accepted)."""
    from billing_engine import consents
    from billing_engine.models import PaymentMethod

    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    p = pending(session, sub, plan)
    if p is None:
        raise Conflict("there is no price change waiting for your answer", field="subscription")
    if p.accepted_at is not None:
        return None
    pm = session.get(PaymentMethod, sub.payment_method_id) if sub.payment_method_id else None
    if pm is None:
        raise Conflict("there is no card on file for this subscription", field="payment_method")
    text = acceptance_text(plan, p.change, p.first_at, tr)
    c = consents.record(session, customer_id=sub.customer_id, payment_method=pm, now=now, actor=actor,
                        data=consents.ConsentInput(
                            accepted_at=now, ip_address=ip_address, user_agent=user_agent or "unknown",
                            terms_version=acceptance_version(p.change), terms_text=text,
                            amount_minor=p.change.amount_minor, currency=plan.currency, interval=plan.interval,
                            interval_count=plan.interval_count, channel="web", plan_id=plan.id))
    events.record(session, events.EventType.SUBSCRIPTION_PRICE_CHANGE_ACCEPTED, at=now, actor=actor,
                  subscription_id=sub.id, customer_id=sub.customer_id,
                  payload={"price_change_id": p.change.id, "consent_id": c.id, "amount_minor": p.change.amount_minor,
                           "old_amount_minor": p.change.old_amount_minor, "currency": plan.currency,
                           "effective_at": p.first_at})
    return c


def _sha256(text: str) -> str:
    from billing_engine.consents import terms_hash

    return terms_hash(text)


def history(session: Session, plan_ref: str) -> list[PriceChange]:
    plan = plans.get(session, plan_ref)
    from sqlmodel import col
    from sqlmodel import select as sselect

    return list(session.exec(sselect(PriceChange).where(PriceChange.plan_id == plan.id)
                             .order_by(col(PriceChange.announced_at), col(PriceChange.id))))


def summary(c: PriceChange) -> dict[str, Any]:
    return {"id": c.id, "plan_id": c.plan_id, "old_amount_minor": c.old_amount_minor, "amount_minor": c.amount_minor,
            "currency": c.currency, "notice_days": c.notice_days, "announced_at": c.announced_at,
            "effective_at": c.effective_at, "subscribers_notified": c.subscribers_notified, "actor": c.actor}
