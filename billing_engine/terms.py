"""What a customer is told about access and charges: computed once, here.

:func:`of` reads a subscription and its plan at an instant and returns the facts
(:class:`Terms`): the price, the next charge, whether a cancellation now ends access at
once (the plan's ``cancel_immediately``, an unpaid subscription, a period already over)
or at period end, and until when access lasts. :func:`sentences` turns them into the
sentences every e-mail and the cancel page show, in the customer's language — so the
reminder and the cancel page can no longer disagree (issue #16: a weekly plan's reminder
said "you keep access until 15 January" while its cancel page said "your access ends
now"). Pure: no database, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billing_engine.i18n import Translator

UNPAID = ("incomplete", "past_due")


@dataclass(frozen=True, kw_only=True)
class Terms:
    plan_name: str
    amount_minor: int
    currency: str
    interval: str
    interval_count: int
    status: str
    trialing: bool
    past_due: bool
    canceled: bool
    cancel_scheduled: bool  # canceled, access lasts until period end
    next_charge_at: datetime | None  # None: no further charge
    next_charge_amount_minor: int | None
    access_until: datetime | None  # the end of what is paid for (or of the trial)
    cancel_ends_now: bool  # a cancellation at this instant ends access at once
    ended_at: datetime | None


def of(sub: Any, plan: Any, at: datetime, *, next_charge_at: datetime | None = None,
       next_amount_minor: int | None = None) -> Terms:
    """The facts of ``sub`` (row or ORM object) under ``plan`` at ``at``.

    ``next_charge_at`` / ``next_amount_minor``: the charge's instant and amount when known
    better than the period end and the list price (a dunning retry, a charge waiting for
    its reminder, a coupon, a price change, a pause: ``subscriptions.next_charge``)."""
    canceled = sub.status in ("canceled", "incomplete_expired")
    scheduled = bool(sub.cancel_at_period_end) and not canceled
    charges = not canceled and not scheduled and (sub.status != "paused" or next_charge_at is not None)
    if charges and next_charge_at is None:
        next_charge_at = sub.next_retry_at if sub.status == "past_due" and sub.next_retry_at else sub.current_period_end
    return Terms(
        plan_name=plan.name, amount_minor=plan.amount_minor, currency=plan.currency, interval=plan.interval,
        interval_count=int(plan.interval_count or 1), status=sub.status, trialing=sub.status == "trialing",
        past_due=sub.status == "past_due", canceled=canceled, cancel_scheduled=scheduled,
        next_charge_at=next_charge_at if charges else None,
        next_charge_amount_minor=(plan.amount_minor if next_amount_minor is None else next_amount_minor)
        if charges else None,
        access_until=sub.ended_at if canceled else sub.current_period_end,
        cancel_ends_now=bool(plan.cancel_immediately) or sub.status in UNPAID or sub.current_period_end <= at,
        ended_at=sub.ended_at,
    )


def every(tr: Translator, interval: str, count: int) -> str:
    """"every week", "every 3 months" in the customer's language."""
    if interval == "day":
        return tr.ngettext("every day", "every %(num)d days", count)
    if interval == "week":
        return tr.ngettext("every week", "every %(num)d weeks", count)
    if interval == "year":
        return tr.ngettext("every year", "every %(num)d years", count)
    return tr.ngettext("every month", "every %(num)d months", count)


def sentences(t: Terms, tr: Translator) -> dict[str, Any]:
    """The sentences about price, next charge and cancelling, for e-mails and pages."""
    _ = tr.gettext
    price = _("%(amount)s %(every)s", amount=tr.money(t.amount_minor, t.currency),
              every=every(tr, t.interval, t.interval_count))
    next_date = tr.date(t.next_charge_at)
    next_amount = tr.money(t.next_charge_amount_minor, t.currency) if t.next_charge_amount_minor is not None else ""
    if t.cancel_ends_now:
        access = _("If you cancel, your access ends at once.")
    elif t.trialing:
        access = _("If you cancel, you keep your trial until %(date)s.", date=tr.date(t.access_until))
    else:
        access = _("If you cancel, you keep access until %(date)s.", date=tr.date(t.access_until))
    if_cancel = [_("You will not be charged again.")]
    if t.cancel_ends_now:
        if_cancel.append(_("Your access ends now."))
    else:
        if_cancel.append(_("You keep access until %(date)s.", date=tr.date(t.access_until)) if not t.trialing
                         else _("You keep your trial until %(date)s.", date=tr.date(t.access_until)))
        if_cancel.append(_("You can change your mind until then."))
    return {
        "price": price,
        "next_charge_date": next_date,
        "next_charge_amount": next_amount,
        "next_charge": _("%(date)s: %(amount)s", date=next_date, amount=next_amount) if next_date else "",
        "next_charge_line": (_("Next charge: %(amount)s on %(date)s, then %(price)s until you cancel.",
                               amount=next_amount, date=next_date, price=price) if next_date else
                             _("No further charges.")),
        "cancel_before": (_("Cancel before %(date)s and you will not be charged again.", date=next_date)
                          if next_date else ""),
        "access_if_canceled": access,
        "if_cancel": if_cancel,
        "access_until": tr.date(t.access_until),
        "cancel_ends_now": t.cancel_ends_now,
    }
