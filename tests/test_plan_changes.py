"""Plan changes, as time-travel scenarios: exact invoices, charges, e-mails and MRR lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import consents, first_charge, plan_changes, proration
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.errors import Conflict, ConsentRequired, PaymentDeclined, ValidationError
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Invoice, Notification, PaymentMethod, Subscription
from billing_engine.reports import reconcile
from billing_engine.reports.mrr import mrr_report
from billing_engine.reports.params import ReportQuery
from billing_engine.settings import load_settings
from tests.factories import consent_for, make_card, make_customer, make_plan, remind_ahead

SETTINGS = load_settings(secret_keys=["plan-change-test-key-0123456789abcdef"])
MAR1 = datetime(2026, 3, 1, tzinfo=UTC)  # March has 31 days: 2,678,400 seconds
MAR16 = datetime(2026, 3, 16, tzinfo=UTC)  # 16 days (1,382,400 s) of March left
APR1 = datetime(2026, 4, 1, tzinfo=UTC)


def _world(engine: Engine, *, token: str = "pm_card_visa") -> tuple[str, FakeGateway]:
    """basic (10.00/month), pro (30.00/month), lite (4.00/month), pro-yearly (300.00/year),
    euro (10.00 EUR/month); a customer on basic, charged at subscribe on Mar 1."""
    with transaction(engine) as s:
        make_plan(s, MAR1, code="basic", amount_minor=1000)
        pro = make_plan(s, MAR1, code="pro", amount_minor=3000)
        make_plan(s, MAR1, code="lite", amount_minor=400)
        yearly = make_plan(s, MAR1, code="pro-yearly", amount_minor=30000, interval="year")
        make_plan(s, MAR1, code="euro", amount_minor=1000, currency="EUR")
        cust = make_customer(s, MAR1)
        pm = make_card(s, MAR1, cust, pro)  # consent up to 30.00 a month covers basic, pro and lite
        consents.record(s, customer_id=cust.id, payment_method=pm, data=consent_for(yearly, MAR1), now=MAR1)
        cust_id, pm_id = cust.id, pm.id
        if token != "pm_card_visa":
            s.get(PaymentMethod, pm_id).token = token  # type: ignore[union-attr]
    gw = FakeGateway()
    res = first_charge.subscribe(engine, gw, customer=cust_id, plan="basic", payment_method=pm_id, now=MAR1)
    assert res.first_charge.status == "succeeded"
    return res.subscription_id, gw


def _invoices(engine: Engine, sub_id: str) -> list[tuple[str, str, int, str]]:
    with Session(engine) as s:
        return [(i.kind, _code(s, i.plan_id), i.amount_minor, i.status)
                for i in s.exec(select(Invoice).where(Invoice.subscription_id == sub_id)
                                .order_by(col(Invoice.period_start)))]


def _code(s: Session, plan_id: str) -> str:
    from billing_engine.models import Plan

    return s.get_one(Plan, plan_id).code


def _sub(engine: Engine, sub_id: str) -> Subscription:
    with Session(engine) as s:
        return s.get_one(Subscription, sub_id)


def _mails(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return [n.kind for n in s.exec(select(Notification).order_by(col(Notification.created_at), col(Notification.id)))]


def _mrr(engine: Engine, start: datetime, end: datetime) -> list[dict[str, object]]:
    rep = mrr_report(engine, ReportQuery(start=start, end=end, period="month"))
    return [{k: r[k] for k in ("period_start", "new_minor", "expansion_minor", "contraction_minor", "mrr_end_minor")}
            for r in rep.rows]


def test_proration_rule_is_exact_in_minor_units() -> None:
    old = type("P", (), {"interval": "month", "interval_count": 1, "amount_minor": 1000, "currency": "USD"})()
    new = type("P", (), {"interval": "month", "interval_count": 1, "amount_minor": 3000, "currency": "USD"})()
    q = proration.quote(at=MAR16 + timedelta(microseconds=900), period_start=MAR1, period_end=APR1, paid_minor=1000,
                        old=old, new=new)
    # 1000 x 16/31 = 516.13 -> 516 ; 3000 x 16/31 = 1548.39 -> 1548 (each rounded once, half to even)
    assert (q.credit_minor, q.charge_minor, q.net_minor) == (516, 1548, 1032)
    assert (q.unused_seconds, q.period_seconds, q.at) == (1_382_400, 2_678_400, MAR16)
    half = proration.quote(at=MAR1 + timedelta(seconds=2_678_400 // 2), period_start=MAR1, period_end=APR1,
                           paid_minor=1001, old=old, new=old)
    assert half.credit_minor == 500  # 500.5 -> 500 (half to even)
    none = proration.quote(at=MAR16, period_start=MAR1, period_end=APR1, paid_minor=1000, old=old, new=new,
                           behavior=proration.ProrationBehavior.NONE)
    assert (none.credit_minor, none.charge_minor) == (0, 0)


def test_upgrade_mid_period_charges_the_difference_now_then_renews_at_the_new_price(engine: Engine) -> None:
    sub_id, gw = _world(engine)
    with Session(engine) as s:
        pv = plan_changes.preview(s, s.get_one(Subscription, sub_id), "pro", now=MAR16, settings=SETTINGS)
    d = pv.as_dict()
    assert (d["direction"], d["timing"], d["credit_minor"], d["charge_minor"], d["amount_due_now_minor"]) == \
        ("upgrade", "now", 516, 1548, 1032)
    # the token holds those amounts: used five minutes later, the same 10.32 is charged
    res = plan_changes.change(engine, gw, subscription_id=sub_id, plan=None, preview_token=pv.token,
                              now=MAR16 + timedelta(minutes=5), settings=SETTINGS)
    assert res.status == "changed"
    sub = _sub(engine, sub_id)
    assert sub.current_period_end == APR1 and sub.mrr_minor == 3000
    assert _invoices(engine, sub_id) == [("period", "basic", 1000, "paid"), ("proration", "pro", 1032, "paid")]
    assert [e.amount_minor for e in gw.ledger] == [1000, 1032]
    # a retry with the same token charges nothing
    with pytest.raises(Conflict, match="already made"):
        plan_changes.change(engine, gw, subscription_id=sub_id, plan=None, preview_token=pv.token,
                            now=MAR16 + timedelta(minutes=6), settings=SETTINGS)
    remind_ahead(engine, APR1, SETTINGS)  # the renewal's reminder
    assert run_cycle(engine, gw, now=APR1, settings=SETTINGS).succeeded == 1
    assert _invoices(engine, sub_id)[-1] == ("period", "pro", 3000, "paid")
    assert [e.amount_minor for e in gw.ledger] == [1000, 1032, 3000]
    assert _mails(engine) == ["subscription_confirmed", "receipt", "receipt", "renewal_reminder", "receipt"]
    rows = _mrr(engine, MAR1, datetime(2026, 5, 1, tzinfo=UTC))
    assert [(r["new_minor"], r["expansion_minor"], r["contraction_minor"], r["mrr_end_minor"]) for r in rows] == \
        [(1000, 2000, 0, 3000), (0, 0, 0, 3000)]
    assert reconcile(engine, MAR1, datetime(2026, 5, 1, tzinfo=UTC)) == []  # the reports agree with the oracle


def test_an_expired_preview_or_a_declined_upgrade_changes_nothing(engine: Engine) -> None:
    sub_id, gw = _world(engine)
    with Session(engine) as s:
        pv = plan_changes.preview(s, s.get_one(Subscription, sub_id), "pro", now=MAR16, settings=SETTINGS)
    with pytest.raises(Conflict, match="expired"):
        plan_changes.change(engine, gw, subscription_id=sub_id, plan=None, preview_token=pv.token,
                            now=MAR16 + timedelta(minutes=16), settings=SETTINGS)
    # one character of the signature changed (not its last: base64's last character carries
    # spare bits, so a change there can decode to the same signature)
    forged = pv.token[:-10] + ("A" if pv.token[-10] != "A" else "B") + pv.token[-9:]
    with pytest.raises(ValidationError) as bad:
        plan_changes.change(engine, gw, subscription_id=sub_id, plan=None, preview_token=forged,
                            now=MAR16, settings=SETTINGS)
    assert bad.value.field == "preview_token"
    gw.fail_next("insufficient_funds")
    with pytest.raises(PaymentDeclined) as exc:
        plan_changes.change(engine, gw, subscription_id=sub_id, plan="pro", now=MAR16, settings=SETTINGS)
    assert "insufficient_funds" in str(exc.value) and exc.value.http_status == 402
    sub = _sub(engine, sub_id)
    assert _code_of(engine, sub.plan_id) == "basic" and sub.status == "active"
    assert _invoices(engine, sub_id) == [("period", "basic", 1000, "paid"), ("proration", "pro", 1032, "void")]
    assert [e.amount_minor for e in gw.ledger] == [1000]
    remind_ahead(engine, APR1, SETTINGS)  # the renewal's reminder
    assert run_cycle(engine, gw, now=APR1, settings=SETTINGS).succeeded == 1  # renews on basic
    assert [e.amount_minor for e in gw.ledger] == [1000, 1000]


def _code_of(engine: Engine, plan_id: str) -> str:
    with Session(engine) as s:
        return _code(s, plan_id)


def test_downgrade_waits_for_period_end_and_the_renewal_bills_the_new_plan(engine: Engine) -> None:
    sub_id, gw = _world(engine)
    res = plan_changes.change(engine, gw, subscription_id=sub_id, plan="lite", now=MAR16, settings=SETTINGS)
    assert res.status == "scheduled" and res.preview.direction == "downgrade"
    sub = _sub(engine, sub_id)
    assert _code_of(engine, sub.plan_id) == "basic" and sub.scheduled_plan_id is not None
    assert run_cycle(engine, gw, now=MAR16 + timedelta(days=1), settings=SETTINGS).charged == 0
    remind_ahead(engine, APR1, SETTINGS)  # the renewal's reminder
    assert run_cycle(engine, gw, now=APR1, settings=SETTINGS).succeeded == 1
    sub = _sub(engine, sub_id)
    assert _code_of(engine, sub.plan_id) == "lite" and sub.scheduled_plan_id is None and sub.mrr_minor == 400
    assert _invoices(engine, sub_id) == [("period", "basic", 1000, "paid"), ("period", "lite", 400, "paid")]
    assert [e.amount_minor for e in gw.ledger] == [1000, 400]
    assert _mails(engine) == ["subscription_confirmed", "receipt", "renewal_reminder", "receipt"]
    rows = _mrr(engine, MAR1, datetime(2026, 5, 1, tzinfo=UTC))
    assert [(r["new_minor"], r["expansion_minor"], r["contraction_minor"], r["mrr_end_minor"]) for r in rows] == \
        [(1000, 0, 0, 1000), (0, 0, 600, 400)]
    assert reconcile(engine, MAR1, datetime(2026, 5, 1, tzinfo=UTC)) == []


def test_immediate_downgrade_refunds_the_unused_difference(engine: Engine) -> None:
    sub_id, gw = _world(engine)
    res = plan_changes.change(engine, gw, subscription_id=sub_id, plan="lite", now=MAR16, timing="now",
                              settings=SETTINGS)
    # credit 1000 x 16/31 = 516 ; charge 400 x 16/31 = 206.45 -> 206 ; net -310: refunded
    assert res.status == "changed" and res.refund_id is not None
    assert (res.preview.quote.credit_minor, res.preview.quote.charge_minor) == (516, 206)  # type: ignore[union-attr]
    assert [(e.kind, e.amount_minor) for e in gw.ledger] == [("charge", 1000), ("refund", 310)]
    assert _invoices(engine, sub_id) == [("period", "basic", 1000, "paid"), ("proration", "lite", 0, "paid")]
    assert _mails(engine) == ["subscription_confirmed", "receipt", "refund"]


def test_interval_change_monthly_to_yearly_starts_a_yearly_period_now(engine: Engine) -> None:
    sub_id, gw = _world(engine)
    res = plan_changes.change(engine, gw, subscription_id=sub_id, plan="pro-yearly", now=MAR16, settings=SETTINGS)
    assert res.status == "changed" and res.preview.direction == "upgrade"
    sub = _sub(engine, sub_id)
    assert (sub.billing_anchor, sub.current_period_start, sub.current_period_end) == \
        (MAR16, MAR16, datetime(2027, 3, 16, tzinfo=UTC))
    # 300.00 for the year from now, minus the unused 16/31 of March's 10.00 (5.16)
    assert [e.amount_minor for e in gw.ledger] == [1000, 29484]
    assert run_cycle(engine, gw, now=APR1 + timedelta(days=60), settings=SETTINGS).charged == 0
    remind_ahead(engine, datetime(2027, 3, 16, tzinfo=UTC), SETTINGS)  # the renewal's reminder
    assert run_cycle(engine, gw, now=datetime(2027, 3, 16, tzinfo=UTC), settings=SETTINGS).succeeded == 1
    assert [e.amount_minor for e in gw.ledger] == [1000, 29484, 30000]
    assert _invoices(engine, sub_id) == [("period", "basic", 1000, "paid"), ("proration", "pro-yearly", 29484, "paid"),
                                         ("period", "pro-yearly", 30000, "paid")]
    rows = _mrr(engine, MAR1, datetime(2026, 4, 1, tzinfo=UTC))
    assert [(r["new_minor"], r["expansion_minor"], r["mrr_end_minor"]) for r in rows] == [(1000, 1500, 2500)]
    assert reconcile(engine, MAR1, datetime(2027, 4, 1, tzinfo=UTC)) == []


def test_changes_across_currencies_or_without_consent_are_refused_with_the_field(engine: Engine) -> None:
    sub_id, gw = _world(engine)
    with pytest.raises(ValidationError) as exc:
        plan_changes.change(engine, gw, subscription_id=sub_id, plan="euro", now=MAR16, settings=SETTINGS)
    assert exc.value.field == "plan" and "USD -> EUR" in str(exc.value)
    with transaction(engine) as s:
        make_plan(s, MAR1, code="max", amount_minor=9000)
    with pytest.raises(ConsentRequired):
        plan_changes.change(engine, gw, subscription_id=sub_id, plan="max", now=MAR16, settings=SETTINGS)
    assert [e.amount_minor for e in gw.ledger] == [1000]


def test_an_interval_change_after_a_pause_restart_starts_its_own_schedule(engine: Engine) -> None:
    """A resume re-anchors the schedule (anchor_period_index = the period it restarted at);
    a later change to a yearly plan starts a new schedule whose period 1 is a year after the
    change, not a period counted from the old restart."""
    from billing_engine import pauses, subscriptions

    sub_id, gw = _world(engine)
    with transaction(engine) as s:
        pauses.pause(s, subscriptions.get(s, sub_id), now=MAR16)
    may10 = datetime(2026, 5, 10, tzinfo=UTC)
    with transaction(engine) as s:
        pauses.resume(s, subscriptions.get(s, sub_id), now=may10)
    assert run_cycle(engine, gw, now=may10, settings=SETTINGS).succeeded == 1  # the restart: [May 10, Jun 10)
    may20 = datetime(2026, 5, 20, tzinfo=UTC)
    res = plan_changes.change(engine, gw, subscription_id=sub_id, plan="pro-yearly", now=may20, settings=SETTINGS)
    assert res.status == "changed"
    sub = _sub(engine, sub_id)
    assert (sub.billing_anchor, sub.current_period_end, sub.next_period_index, sub.anchor_period_index) == \
        (may20, datetime(2027, 5, 20, tzinfo=UTC), 1, 0)
    assert run_cycle(engine, gw, now=datetime(2026, 8, 1, tzinfo=UTC), settings=SETTINGS).charged == 0
    remind_ahead(engine, datetime(2027, 5, 20, tzinfo=UTC), SETTINGS)
    assert run_cycle(engine, gw, now=datetime(2027, 5, 20, tzinfo=UTC), settings=SETTINGS).succeeded == 1
    with Session(engine) as s:
        last = s.exec(select(Invoice).where(Invoice.subscription_id == sub_id)
                      .order_by(col(Invoice.period_start).desc())).first()
        assert last is not None
        assert (last.period_start, last.period_end, last.amount_minor) == \
            (datetime(2027, 5, 20, tzinfo=UTC), datetime(2028, 5, 20, tzinfo=UTC), 30000)
    assert [e.amount_minor for e in gw.ledger][-1] == 30000 and len(gw.ledger) == 4
