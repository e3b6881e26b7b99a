"""Time-travel scenarios of what a renewal charges and whether it charges: a price change
with notice, a cancellation after the notice, a pause across two renewals then a resume,
and a coupon for three periods. Each asserts the invoices, the money in the fake gateway's
ledger, the e-mails in the outbox and the report lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import cancellations, coupons, notifications, pauses, pricing, reminders, subscriptions
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.events import EventType
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Consent, Event, Invoice, Notification, Subscription
from billing_engine.reports import ReportQuery, churn_report, mrr_report, reconcile, revenue_report
from billing_engine.settings import load_settings
from tests.factories import make_card, make_customer, make_plan, make_subscription

SETTINGS = load_settings()
JAN1 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
YEAR = ReportQuery(start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 7, 1, tzinfo=UTC))


def _cycle(engine: Engine, gw: FakeGateway, *, now: datetime, **kw: Any) -> Any:
    """A run-cycle at ``now``, after the reminder pass of a week before (every renewal is
    announced a lead time ahead: the trust rule of billing_engine.reminders)."""
    reminders.queue(engine, now=now - timedelta(days=7), settings=SETTINGS)
    return run_cycle(engine, gw, now=now, settings=SETTINGS, **kw)


def _run(engine: Engine, gw: FakeGateway, *days: datetime, **kw: Any) -> None:
    for d in days:
        _cycle(engine, gw, now=d, **kw)


def _invoices(engine: Engine, sub_id: str) -> list[tuple[str, int, int, str]]:
    """(period start day, net charged, discount, status) per invoice, in period order."""
    with Session(engine) as s:
        rows = s.exec(select(Invoice).where(Invoice.subscription_id == sub_id).order_by(col(Invoice.period_start)))
        return [(i.period_start.date().isoformat(), i.amount_minor, i.discount_minor, i.status) for i in rows]


def _mails(engine: Engine, sub_id: str, kind: str | None = None) -> list[Notification]:
    with Session(engine) as s:
        q = select(Notification).where(Notification.subscription_id == sub_id)
        if kind:
            q = q.where(Notification.kind == kind)
        return list(s.exec(q.order_by(col(Notification.created_at), col(Notification.id))))


def _events(engine: Engine, sub_id: str) -> list[str]:
    with Session(engine) as s:
        return [e.type for e in s.exec(select(Event).where(Event.subscription_id == sub_id).order_by(col(Event.id)))]


def _sub(engine: Engine, sub_id: str) -> Subscription:
    with Session(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        return sub


def _month(report: Any, month: int, **match: str) -> dict[str, Any]:
    rows = [r for r in report.rows if r["period_start"].month == month
            and all(r.get(k) == v for k, v in match.items())]
    assert len(rows) == 1, rows
    return dict(rows[0])


def _charges(gw: FakeGateway) -> list[int]:
    return [e.amount_minor for e in gw.ledger if e.kind == "charge"]


def _subscribe(engine: Engine, now: datetime, *, plan_code: str = "basic-monthly", **kw: Any) -> str:
    with transaction(engine) as s:
        return make_subscription(s, now, plan=make_plan(s, now, code=plan_code), **kw).id


# --------------------------------------------------------------------------- price change


def test_price_change_with_notice_then_renewal_at_the_new_price(engine: Engine) -> None:
    sub_id = _subscribe(engine, JAN1)
    gw = FakeGateway()
    _run(engine, gw, JAN1)
    with transaction(engine) as s:
        res = pricing.reprice(s, "basic-monthly", amount_minor=2900, notice_days=30, now=JAN1 + timedelta(days=9))
    assert res.notified == 1
    assert res.change.effective_at == datetime(2026, 2, 9, 10, 0, tzinfo=UTC)
    # the notice: old and new price, the date of the first charge at the new price, the cancel link
    [mail] = _mails(engine, sub_id, "price_change")
    payload = json.loads(mail.payload)
    assert (payload["old_amount"], payload["new_amount"]) == ("17.00 USD", "29.00 USD")
    assert payload["effective_at"].startswith("2026-03-01")  # Feb 1 is inside the notice: still 17.00
    # consent for the new amount, recorded by the notice
    with Session(engine) as s:
        notice = s.exec(select(Consent).where(Consent.channel == "price_notice")).one()
        assert (notice.amount_minor, notice.terms_version) == (2900, f"price-change:{res.change.id}")
        # the evidence is the e-mail's notice paragraph, word for word (was: its own English
        # wording with an ISO date and the change id, which no customer was ever sent)
        assert notice.terms_text == (
            "The price of your Basic Monthly subscription changes from $17.00 to $29.00 every month. "
            "Your first charge at the new price is on March 1, 2026; until then nothing changes. "
            "You don't need to do anything to keep it: if you do not cancel before March 1, 2026, you agree to the "
            "new price. If you cancel before March 1, 2026, you will never be charged the new price.")
        sent = notifications.compose(s, mail, SETTINGS, JAN1 + timedelta(days=9))
        assert f"\n{notice.terms_text}\n" in str(sent.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert EventType.SUBSCRIPTION_PRICE_CHANGE_NOTICE in _events(engine, sub_id)

    # the dry run on Mar 1 shows the new price
    dry = _cycle(engine, gw, now=datetime(2026, 2, 1, 10, tzinfo=UTC), dry_run=True)
    assert [(a["action"], a["amount_minor"]) for a in dry.would_charge] == [("charge", 1700)]
    _run(engine, gw, datetime(2026, 2, 1, 10, tzinfo=UTC))
    dry = _cycle(engine, gw, now=datetime(2026, 3, 1, 10, tzinfo=UTC), dry_run=True)
    assert [(a["action"], a["amount_minor"]) for a in dry.would_charge] == [("charge", 2900)]
    _run(engine, gw, datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 4, 1, 10, tzinfo=UTC))

    assert _invoices(engine, sub_id) == [("2026-01-01", 1700, 0, "paid"), ("2026-02-01", 1700, 0, "paid"),
                                         ("2026-03-01", 2900, 0, "paid"), ("2026-04-01", 2900, 0, "paid")]
    assert _charges(gw) == [1700, 1700, 2900, 2900]
    receipts = [json.loads(n.payload)["amount_minor"] for n in _mails(engine, sub_id, "receipt")]
    assert receipts == [1700, 1700, 2900, 2900]
    # reports: March shows the price change as expansion; a new subscriber pays 29.00 at once
    mrr = mrr_report(engine, YEAR)
    assert _month(mrr, 3)["expansion_minor"] == 1200 and _month(mrr, 3)["contraction_minor"] == 0
    assert _month(mrr, 4)["mrr_end_minor"] == 2900
    assert _month(revenue_report(engine, YEAR), 3)["gross_minor"] == 2900
    assert reconcile(engine, YEAR.start, YEAR.end) == []


def test_a_price_decrease_shows_as_contraction_and_new_subscribers_pay_the_new_price_at_once(engine: Engine) -> None:
    old = _subscribe(engine, JAN1)
    gw = FakeGateway()
    _run(engine, gw, JAN1)
    with transaction(engine) as s:
        pricing.reprice(s, "basic-monthly", amount_minor=1200, notice_days=7, now=JAN1 + timedelta(days=3))
    with transaction(engine) as s:
        from billing_engine.models import Plan

        plan = s.exec(select(Plan).where(Plan.code == "basic-monthly")).one()
        new = make_subscription(s, JAN1 + timedelta(days=4), plan=plan, email="bo@example.com").id
    _run(engine, gw, JAN1 + timedelta(days=4), datetime(2026, 2, 1, 10, tzinfo=UTC))
    assert [a for _, a, _, _ in _invoices(engine, old)] == [1700, 1200]
    assert [a for _, a, _, _ in _invoices(engine, new)] == [1200]
    with Session(engine) as s:  # a decrease needs no new consent
        assert s.exec(select(Consent).where(Consent.channel == "price_notice")).first() is None
    assert _month(mrr_report(engine, YEAR), 2)["contraction_minor"] == 500


def test_late_run_bills_each_missed_period_at_the_price_in_force_for_it(engine: Engine) -> None:
    sub_id = _subscribe(engine, JAN1)
    gw = FakeGateway()
    _run(engine, gw, JAN1)
    with transaction(engine) as s:
        pricing.reprice(s, "basic-monthly", amount_minor=2900, now=JAN1 + timedelta(days=9))  # default 30 days
    _run(engine, gw, datetime(2026, 4, 2, 10, tzinfo=UTC))  # no run in Feb and Mar: one late run catches up
    assert _invoices(engine, sub_id) == [("2026-01-01", 1700, 0, "paid"), ("2026-02-01", 1700, 0, "paid"),
                                         ("2026-03-01", 2900, 0, "paid"), ("2026-04-01", 2900, 0, "paid")]
    assert _charges(gw) == [1700, 1700, 2900, 2900]


def test_a_customer_who_cancels_after_the_price_notice_is_never_charged_the_new_price(engine: Engine) -> None:
    sub_id = _subscribe(engine, JAN1)
    gw = FakeGateway()
    _run(engine, gw, JAN1)
    with transaction(engine) as s:
        pricing.reprice(s, "basic-monthly", amount_minor=2900, notice_days=30, now=JAN1 + timedelta(days=9))
    _run(engine, gw, datetime(2026, 2, 1, 10, tzinfo=UTC))
    with transaction(engine) as s:  # after the notice, even after its end (Feb 9), before the renewal
        cancellations.cancel(s, subscriptions.get(s, sub_id), reason="too_expensive",
                             now=datetime(2026, 2, 20, tzinfo=UTC))
    for day in range(0, 60, 3):
        _run(engine, gw, datetime(2026, 2, 20, 10, tzinfo=UTC) + timedelta(days=day))
    assert _invoices(engine, sub_id) == [("2026-01-01", 1700, 0, "paid"), ("2026-02-01", 1700, 0, "paid")]
    assert _charges(gw) == [1700, 1700] and 2900 not in _charges(gw)
    sub = _sub(engine, sub_id)
    assert (sub.status, sub.ended_at, sub.cancellation_kind) == ("canceled", datetime(2026, 3, 1, 10, tzinfo=UTC),
                                                                 "voluntary")
    assert len(_mails(engine, sub_id, "price_change")) == 1
    assert len(_mails(engine, sub_id, "cancellation_confirmed")) == 1
    march = _month(churn_report(engine, YEAR), 3)
    assert (march["churned"], march["voluntary"], march["active_end"]) == (1, 1, 0)


def test_notice_shorter_than_seven_days_is_refused_and_changes_nothing(engine: Engine) -> None:
    _subscribe(engine, JAN1)
    import pytest

    from billing_engine.errors import Conflict, ValidationError

    with pytest.raises(ValidationError) as e, transaction(engine) as s:
        pricing.reprice(s, "basic-monthly", amount_minor=2900, notice_days=6, now=JAN1)
    assert e.value.field == "notice_days"
    with pytest.raises(Conflict), transaction(engine) as s:
        pricing.reprice(s, "basic-monthly", amount_minor=1700, now=JAN1)
    with Session(engine) as s:
        assert s.exec(select(Notification).where(Notification.kind == "price_change")).first() is None


# --------------------------------------------------------------------------- pause / resume


def test_pause_across_two_renewals_then_resume(engine: Engine) -> None:
    sub_id = _subscribe(engine, JAN1)
    gw = FakeGateway()
    _run(engine, gw, JAN1)
    with transaction(engine) as s:
        pauses.pause(s, subscriptions.get(s, sub_id), now=datetime(2026, 1, 15, tzinfo=UTC))
    # Feb 1 and Mar 1 pass: nothing charged, no reminder; the dry run has nothing to do
    day = datetime(2026, 1, 15, 10, tzinfo=UTC)
    while day < datetime(2026, 3, 20, tzinfo=UTC):
        _run(engine, gw, day)
        day += timedelta(days=2)
    assert _cycle(engine, gw, now=day, dry_run=True).would_charge == []
    assert _charges(gw) == [1700]
    assert _sub(engine, sub_id).status == "paused"
    assert _mails(engine, sub_id, "renewal_reminder") == []
    assert len(_mails(engine, sub_id, "subscription_paused")) == 1
    # paused is not churn: February and March count it apart
    churn = churn_report(engine, YEAR)
    feb = _month(churn, 2)
    assert (feb["active_start"], feb["paused_start"], feb["churned"], feb["paused_end"]) == (0, 1, 0, 1)

    resume_at = datetime(2026, 3, 20, 9, tzinfo=UTC)
    with transaction(engine) as s:
        pauses.resume(s, subscriptions.get(s, sub_id), now=resume_at)
    sub = _sub(engine, sub_id)
    assert (sub.status, sub.billing_anchor, sub.current_period_end) == ("active", resume_at, resume_at)
    _run(engine, gw, resume_at, datetime(2026, 4, 20, 9, tzinfo=UTC))
    # the schedule restarts at the resume: [Mar 20, Apr 20), then Apr 20; Feb and Mar are never billed
    assert _invoices(engine, sub_id) == [("2026-01-01", 1700, 0, "paid"), ("2026-03-20", 1700, 0, "paid"),
                                         ("2026-04-20", 1700, 0, "paid")]
    assert _charges(gw) == [1700, 1700, 1700]
    assert _sub(engine, sub_id).current_period_end == datetime(2026, 5, 20, 9, tzinfo=UTC)
    assert len(_mails(engine, sub_id, "subscription_resumed")) == 1
    assert len(_mails(engine, sub_id, "receipt")) == 3
    evs = _events(engine, sub_id)
    assert evs.index(EventType.SUBSCRIPTION_PAUSED) < evs.index(EventType.SUBSCRIPTION_RESUMED)
    march = _month(churn_report(engine, YEAR), 4)
    assert (march["active_start"], march["paused_start"]) == (1, 0)
    assert reconcile(engine, YEAR.start, YEAR.end) == []


def _daily(engine: Engine, gw: FakeGateway, start: datetime, end: datetime) -> None:
    """A daily cron: one plain run-cycle a day (it queues the reminders itself)."""
    day = start
    while day <= end:
        run_cycle(engine, gw, now=day, settings=SETTINGS)
        day += timedelta(days=1)


def test_after_a_restart_the_renewal_is_reminded_a_week_before_its_own_date_and_charged_on_it(engine: Engine) -> None:
    """The schedule after a resume is the re-anchored one (pricing.bounds with
    anchor_period_index), for the reminder pass and the charge alike: a daily cron."""
    sub_id = _subscribe(engine, JAN1)
    gw = FakeGateway()
    _run(engine, gw, JAN1)
    with transaction(engine) as s:
        pauses.pause(s, subscriptions.get(s, sub_id), now=datetime(2026, 1, 15, 9, tzinfo=UTC))
    resume_at = datetime(2026, 3, 20, 9, tzinfo=UTC)
    with transaction(engine) as s:
        pauses.resume(s, subscriptions.get(s, sub_id), now=resume_at)
    _daily(engine, gw, resume_at, datetime(2026, 5, 21, 9, tzinfo=UTC))
    assert _invoices(engine, sub_id) == [("2026-01-01", 1700, 0, "paid"), ("2026-03-20", 1700, 0, "paid"),
                                         ("2026-04-20", 1700, 0, "paid"), ("2026-05-20", 1700, 0, "paid")]
    reminded = _mails(engine, sub_id, "renewal_reminder")
    assert [(n.created_at, json.loads(n.payload)["charge_at"]) for n in reminded] == [
        (datetime(2026, 4, 13, 9, tzinfo=UTC), "2026-04-20 09:00:00+00:00"),
        (datetime(2026, 5, 13, 9, tzinfo=UTC), "2026-05-20 09:00:00+00:00")]
    with Session(engine) as s:
        paid = [i.paid_at for i in s.exec(select(Invoice).where(Invoice.subscription_id == sub_id)
                                          .order_by(col(Invoice.period_start)))]
    assert paid[2:] == [datetime(2026, 4, 20, 9, tzinfo=UTC), datetime(2026, 5, 20, 9, tzinfo=UTC)]
    assert _charges(gw) == [1700] * 4


def test_a_late_run_after_a_restart_reminds_every_missed_period_of_the_new_schedule_at_once(engine: Engine) -> None:
    """Runs missed after a resume: ONE reminder covers every period of the re-anchored
    schedule due by the charge (Apr 20 and May 20), and the catch-up charges both a
    lead time later -- not one period per week."""
    sub_id = _subscribe(engine, JAN1)
    gw = FakeGateway()
    _run(engine, gw, JAN1)
    with transaction(engine) as s:
        pauses.pause(s, subscriptions.get(s, sub_id), now=datetime(2026, 1, 15, 9, tzinfo=UTC))
    resume_at = datetime(2026, 3, 20, 9, tzinfo=UTC)
    with transaction(engine) as s:
        pauses.resume(s, subscriptions.get(s, sub_id), now=resume_at)
    run_cycle(engine, gw, now=resume_at, settings=SETTINGS)  # the restart's own charge, no reminder needed
    late = datetime(2026, 5, 25, 9, tzinfo=UTC)  # no run for two months
    run_cycle(engine, gw, now=late, settings=SETTINGS)  # sends the reminder; the charges wait a week
    [mail] = _mails(engine, sub_id, "renewal_reminder")
    payload = json.loads(mail.payload)
    assert (payload["charges"], payload["charge_at"]) == (2, "2026-06-01 09:00:00+00:00")
    run_cycle(engine, gw, now=late + timedelta(days=7), settings=SETTINGS)
    assert _invoices(engine, sub_id) == [("2026-01-01", 1700, 0, "paid"), ("2026-03-20", 1700, 0, "paid"),
                                         ("2026-04-20", 1700, 0, "paid"), ("2026-05-20", 1700, 0, "paid")]
    assert _charges(gw) == [1700] * 4


def test_pause_at_period_end_with_a_resume_date_resumes_by_itself(engine: Engine) -> None:
    sub_id = _subscribe(engine, JAN1)
    gw = FakeGateway()
    _run(engine, gw, JAN1)
    resumes = datetime(2026, 3, 10, 12, tzinfo=UTC)
    with transaction(engine) as s:
        pauses.pause(s, subscriptions.get(s, sub_id), now=datetime(2026, 1, 10, tzinfo=UTC), at_period_end=True,
                     resumes_at=resumes)
    assert _sub(engine, sub_id).status == "active"  # until the paid period ends
    dry = _cycle(engine, gw, now=datetime(2026, 2, 1, 10, tzinfo=UTC), dry_run=True)
    assert [(a["action"], a["amount_minor"]) for a in dry.would_charge] == [("pause", 0)]
    summary = _cycle(engine, gw, now=datetime(2026, 2, 1, 10, tzinfo=UTC))
    assert (summary.paused, summary.charged) == (1, 0)
    assert _sub(engine, sub_id).paused_at == datetime(2026, 2, 1, 10, tzinfo=UTC)
    dry = _cycle(engine, gw, now=datetime(2026, 3, 11, tzinfo=UTC), dry_run=True)
    assert [a["action"] for a in dry.would_charge] == ["resume"]
    summary = _cycle(engine, gw, now=datetime(2026, 3, 11, tzinfo=UTC))  # a day late
    assert (summary.resumed, summary.succeeded) == (1, 1)
    assert _invoices(engine, sub_id) == [("2026-01-01", 1700, 0, "paid"), ("2026-03-10", 1700, 0, "paid")]
    assert _sub(engine, sub_id).current_period_end == datetime(2026, 4, 10, 12, tzinfo=UTC)
    assert _mails(engine, sub_id, "renewal_reminder") == []  # no reminder for the renewal that paused


def test_resume_inside_the_paid_period_keeps_the_schedule(engine: Engine) -> None:
    sub_id = _subscribe(engine, JAN1)
    gw = FakeGateway()
    _run(engine, gw, JAN1)
    with transaction(engine) as s:
        pauses.pause(s, subscriptions.get(s, sub_id), now=datetime(2026, 1, 5, tzinfo=UTC))
    with transaction(engine) as s:
        pauses.resume(s, subscriptions.get(s, sub_id), now=datetime(2026, 1, 20, tzinfo=UTC))
    _run(engine, gw, datetime(2026, 2, 1, 10, tzinfo=UTC))
    assert _invoices(engine, sub_id) == [("2026-01-01", 1700, 0, "paid"), ("2026-02-01", 1700, 0, "paid")]


def test_a_subscription_can_start_paused_and_a_paused_one_can_be_canceled(engine: Engine) -> None:
    gw = FakeGateway()
    with transaction(engine) as s:
        plan = make_plan(s, JAN1)
        cust = make_customer(s, JAN1)
        pm = make_card(s, JAN1, cust, plan)
        sub_id = subscriptions.create(s, customer_id=cust.id, plan_id=plan.id, payment_method_id=pm.id, now=JAN1,
                                      paused=True, resumes_at=datetime(2026, 2, 1, tzinfo=UTC)).id
    _run(engine, gw, JAN1, JAN1 + timedelta(days=10))
    assert _charges(gw) == [] and _sub(engine, sub_id).status == "paused"
    _run(engine, gw, datetime(2026, 2, 1, 1, tzinfo=UTC))
    assert _invoices(engine, sub_id) == [("2026-02-01", 1700, 0, "paid")]
    with transaction(engine) as s:
        pauses.pause(s, subscriptions.get(s, sub_id), now=datetime(2026, 2, 10, tzinfo=UTC))
        cancellations.cancel(s, subscriptions.get(s, sub_id), now=datetime(2026, 2, 11, tzinfo=UTC))
    assert _sub(engine, sub_id).cancel_at_period_end
    _run(engine, gw, datetime(2026, 3, 2, tzinfo=UTC))
    sub = _sub(engine, sub_id)
    assert (sub.status, sub.ended_at) == ("canceled", datetime(2026, 3, 1, tzinfo=UTC))
    assert _charges(gw) == [1700]


def test_a_past_due_subscription_cannot_be_paused(engine: Engine) -> None:
    import pytest

    from billing_engine.errors import InvalidTransition

    sub_id = _subscribe(engine, JAN1, token="pm_card_chargeDeclinedInsufficientFunds")
    _run(engine, FakeGateway(), JAN1)
    assert _sub(engine, sub_id).status == "past_due"
    with pytest.raises(InvalidTransition, match="settle its open invoice"), transaction(engine) as s:
        pauses.pause(s, subscriptions.get(s, sub_id), now=JAN1 + timedelta(days=1))
    assert (_sub(engine, sub_id).status, _sub(engine, sub_id).paused_at) == ("past_due", None)


# --------------------------------------------------------------------------- coupons


def test_coupon_for_three_periods(engine: Engine) -> None:
    gw = FakeGateway()
    with transaction(engine) as s:
        plan = make_plan(s, JAN1)
        coupons.create(s, code="WELCOME20", percent_off=20, duration="repeating", duration_periods=3,
                       plan_codes=["basic-monthly"], now=JAN1)
        cust = make_customer(s, JAN1)
        pm = make_card(s, JAN1, cust, plan)
        sub_id = subscriptions.create(s, customer_id=cust.id, plan_id=plan.id, payment_method_id=pm.id, now=JAN1,
                                      coupon="WELCOME20").id
    dry = _cycle(engine, gw, now=JAN1, dry_run=True)
    assert [(a["amount_minor"], a["gross_minor"], a["discount_minor"], a["coupon"]) for a in dry.would_charge] == [
        (1360, 1700, 340, "WELCOME20")]
    for m in range(1, 6):
        _run(engine, gw, datetime(2026, m, 1, 10, tzinfo=UTC), datetime(2026, m, 26, 10, tzinfo=UTC))
    assert _invoices(engine, sub_id) == [
        ("2026-01-01", 1360, 340, "paid"), ("2026-02-01", 1360, 340, "paid"), ("2026-03-01", 1360, 340, "paid"),
        ("2026-04-01", 1700, 0, "paid"), ("2026-05-01", 1700, 0, "paid")]
    assert _charges(gw) == [1360, 1360, 1360, 1700, 1700]
    assert [json.loads(n.payload)["amount_minor"] for n in _mails(engine, sub_id, "receipt")] == [
        1360, 1360, 1360, 1700, 1700]
    reminders = [json.loads(n.payload)["amount_minor"] for n in _mails(engine, sub_id, "renewal_reminder")]
    assert reminders == [1360, 1360, 1700, 1700, 1700]  # each quotes what its renewal will charge
    rev = revenue_report(engine, YEAR)
    assert [(_month(rev, m)["gross_minor"], _month(rev, m)["discounts_minor"]) for m in range(1, 6)] == [
        (1360, 340), (1360, 340), (1360, 340), (1700, 0), (1700, 0)]
    assert _month(mrr_report(engine, YEAR), 4)["expansion_minor"] == 340  # the discount ends
    assert reconcile(engine, YEAR.start, YEAR.end) == []
    assert EventType.COUPON_REDEEMED in _events(engine, sub_id)


def test_coupon_rules_are_enforced(engine: Engine) -> None:
    import pytest

    from billing_engine.errors import Conflict

    with transaction(engine) as s:
        make_plan(s, JAN1, code="gold", amount_minor=5000)
        coupons.create(s, code="BIG", percent_off=50, duration="forever", now=JAN1)
        coupons.create(s, code="ONE", amount_off_minor=500, currency="USD", duration="once", max_redemptions=1,
                       redeem_by=JAN1 + timedelta(days=30), now=JAN1)
        coupons.create(s, code="GOLDONLY", percent_off=10, duration="once", plan_codes=["gold"], now=JAN1)
    a = _subscribe(engine, JAN1)
    with transaction(engine) as s:
        plan_id = subscriptions.get(s, a).plan_id
        b = make_subscription(s, JAN1, plan=s.get(__import__("billing_engine.models", fromlist=["Plan"]).Plan, plan_id),
                              email="bo@example.com").id
    for code, sub_id, why in (("BIG", a, "cap"), ("GOLDONLY", a, "not valid for plan")):
        with pytest.raises(Conflict, match=why), transaction(engine) as s:
            coupons.redeem(s, subscriptions.get(s, sub_id), code, now=JAN1)
    with transaction(engine) as s:
        coupons.redeem(s, subscriptions.get(s, a), "ONE", now=JAN1)
    with pytest.raises(Conflict, match="limit"), transaction(engine) as s:
        coupons.redeem(s, subscriptions.get(s, b), "ONE", now=JAN1)
    with transaction(engine) as s:  # the plan's own cap lifts the 30 % default
        from billing_engine.models import Plan

        p = s.exec(select(Plan).where(Plan.code == "basic-monthly")).one()
        p.max_discount_percent = 50
        coupons.redeem(s, subscriptions.get(s, b), "BIG", now=JAN1)
    gw = FakeGateway()
    _run(engine, gw, JAN1, datetime(2026, 2, 1, 10, tzinfo=UTC))
    assert _invoices(engine, a) == [("2026-01-01", 1200, 500, "paid"), ("2026-02-01", 1700, 0, "paid")]
    assert _invoices(engine, b) == [("2026-01-01", 850, 850, "paid"), ("2026-02-01", 850, 850, "paid")]
    with transaction(engine) as s:
        c = coupons.create(s, code="LATE", percent_off=10, duration="once", redeem_by=JAN1 + timedelta(days=1),
                           now=JAN1)
        assert c.once_per_customer
    with pytest.raises(Conflict, match="expired"), transaction(engine) as s:
        coupons.redeem(s, subscriptions.get(s, a), "LATE", now=JAN1 + timedelta(days=2))


def test_the_pause_e_mail_names_the_price_the_resume_will_charge(engine: Engine) -> None:
    """A price change announced before a pause: the pause e-mail's "the next charge is then"
    is the price in force when the subscription resumes (the old one for a resume before
    the change applies to it, the new one after), not the plan's list price."""
    with transaction(engine) as s:
        plan = make_plan(s, JAN1, code="basic-monthly")
        sub_id, other = (make_subscription(s, JAN1, plan=plan, email=f"{who}@example.com").id
                         for who in ("ada", "bob"))
    gw = FakeGateway()
    _run(engine, gw, JAN1)
    with transaction(engine) as s:
        pricing.reprice(s, "basic-monthly", amount_minor=2900, now=datetime(2026, 1, 5, tzinfo=UTC), notice_days=30)
    for sid, resumes in ((sub_id, datetime(2026, 2, 2, 12, tzinfo=UTC)), (other, datetime(2026, 3, 10, 12, tzinfo=UTC))):
        with transaction(engine) as s:
            pauses.pause(s, subscriptions.get(s, sid), now=datetime(2026, 1, 10, tzinfo=UTC), resumes_at=resumes)
    before, after = (json.loads(_mails(engine, sid, "subscription_paused")[0].payload) for sid in (sub_id, other))
    assert (before["amount_minor"], after["amount_minor"]) == (1700, 2900)
    with Session(engine) as s:
        text = str(notifications.compose(s, _mails(engine, sub_id, "subscription_paused")[0], SETTINGS,
                                         JAN1).get_body(("plain",)).get_content())
    assert "the next charge is then $17.00" in text
    _cycle(engine, gw, now=datetime(2026, 2, 3, tzinfo=UTC))  # resumes Feb 2 and charges what the e-mail said
    assert _invoices(engine, sub_id)[-1][:2] == ("2026-02-02", 1700)
