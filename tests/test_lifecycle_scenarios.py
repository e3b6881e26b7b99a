"""Subscribe (good and declining card), money-back guarantee (inside and outside the window),
reactivation and edits, as time-travel scenarios."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import cancellations, edits, first_charge, guarantees, reactivations
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.errors import Conflict, InvalidTransition, ValidationError
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Event, Invoice, Notification, Refund, Subscription
from billing_engine.reports.mrr import mrr_report
from billing_engine.reports.params import ReportQuery
from billing_engine.reports.revenue import revenue_report
from billing_engine.settings import load_settings
from tests.factories import make_card, make_customer, make_plan, remind_ahead

SETTINGS = load_settings()
JAN5 = datetime(2026, 1, 5, 12, tzinfo=UTC)


def _world(engine: Engine, *, guarantee_days: int | None = 30) -> tuple[str, str, FakeGateway]:
    with transaction(engine) as s:
        plan = make_plan(s, JAN5, code="pro", amount_minor=2500)
        edits.update_plan(s, "pro", now=JAN5, guarantee_days=guarantee_days)
        cust = make_customer(s, JAN5)
        pm = make_card(s, JAN5, cust, plan)
        cust_id, pm_id = cust.id, pm.id
    gw = FakeGateway()
    res = first_charge.subscribe(engine, gw, customer=cust_id, plan="pro", payment_method=pm_id, now=JAN5)
    assert res.first_charge.status == "succeeded"
    return res.subscription_id, cust_id, gw


def _mails(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return [n.kind for n in s.exec(select(Notification).order_by(col(Notification.created_at), col(Notification.id)))]


def test_a_refund_within_the_guarantee_window_returns_everything_and_ends_it(engine: Engine) -> None:
    sub_id, _, gw = _world(engine)
    feb5 = datetime(2026, 2, 5, 12, tzinfo=UTC)
    remind_ahead(engine, feb5, SETTINGS)  # the renewal's reminder
    assert run_cycle(engine, gw, now=feb5, settings=SETTINGS).succeeded == 1  # second payment, day 31
    with pytest.raises(Conflict) as late:  # 30 days from the first payment (Jan 5) ended on Feb 4
        guarantees.refund(engine, gw, subscription_id=sub_id, now=feb5)
    assert "guarantee ended at 2026-02-04T12:00:00+00:00" in str(late.value) and late.value.field == "subscription"
    assert [e.kind for e in gw.ledger] == ["charge", "charge"]


def test_guarantee_refund_inside_the_window_and_the_revenue_line(engine: Engine) -> None:
    sub_id, _, gw = _world(engine)
    day20 = JAN5 + timedelta(days=20)
    res = guarantees.refund(engine, gw, subscription_id=sub_id, now=day20)
    assert (res.amount_minor, res.currency, res.deadline) == (2500, "USD", JAN5 + timedelta(days=30))
    assert [(e.kind, e.amount_minor) for e in gw.ledger] == [("charge", 2500), ("refund", 2500)]
    with Session(engine) as s:
        sub = s.get_one(Subscription, sub_id)
        assert (sub.status, sub.cancellation_kind, sub.ended_at) == ("canceled", "voluntary", day20)
        assert [r.guarantee for r in s.exec(select(Refund))] == [True]
    assert _mails(engine) == ["subscription_confirmed", "receipt", "cancellation_confirmed", "refund"]
    with pytest.raises(Conflict, match="already refunded"):
        guarantees.refund(engine, gw, subscription_id=sub_id, now=day20)
    assert len(gw.ledger) == 2
    assert run_cycle(engine, gw, now=datetime(2026, 3, 1, tzinfo=UTC), settings=SETTINGS).charged == 0
    rep = revenue_report(engine, ReportQuery(start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 2, 1, tzinfo=UTC)))
    [row] = rep.rows
    assert (row["gross_minor"], row["refunds_minor"], row["guarantee_refunds_minor"], row["net_minor"]) == \
        (2500, 2500, 2500, 0)


def test_a_plan_without_guarantee_refuses_a_guarantee_refund(engine: Engine) -> None:
    sub_id, _, gw = _world(engine, guarantee_days=None)
    with pytest.raises(Conflict, match="no money-back guarantee"):
        guarantees.refund(engine, gw, subscription_id=sub_id, now=JAN5 + timedelta(days=1))
    assert len(gw.ledger) == 1


def test_reactivation_links_the_new_subscription_and_reports_reactivation(engine: Engine) -> None:
    sub_id, _, gw = _world(engine, guarantee_days=None)
    with pytest.raises(InvalidTransition):
        reactivations.reactivate(engine, gw, subscription_id=sub_id, now=JAN5 + timedelta(days=1))
    with transaction(engine) as s:
        cancellations.cancel(s, s.get_one(Subscription, sub_id), reason="too_expensive", now=JAN5 + timedelta(days=3))
    feb5 = datetime(2026, 2, 5, 12, tzinfo=UTC)
    assert run_cycle(engine, gw, now=feb5, settings=SETTINGS).cancellations_effective == 1
    mar10 = datetime(2026, 3, 10, tzinfo=UTC)
    res = reactivations.reactivate(engine, gw, subscription_id=sub_id, now=mar10)
    assert res.first_charge.status == "succeeded" and res.subscription_id != sub_id
    with Session(engine) as s:
        new = s.get_one(Subscription, res.subscription_id)
        assert (new.status, new.reactivated_from, new.current_period_start) == ("active", sub_id, mar10)
        types = [e.type for e in s.exec(select(Event).where(Event.subscription_id == new.id).order_by(col(Event.id)))]
        assert types[-1] == "subscription.reactivated" and "subscription.activated" in types
        assert [i.amount_minor for i in s.exec(select(Invoice).where(Invoice.subscription_id == new.id))] == [2500]
    assert [e.amount_minor for e in gw.ledger] == [2500, 2500]
    with pytest.raises(Conflict):  # one live subscription at a time
        reactivations.reactivate(engine, gw, subscription_id=sub_id, now=mar10)
    rows = mrr_report(engine, ReportQuery(start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 4, 1, tzinfo=UTC))).rows
    assert [(r["new_minor"], r["churn_minor"], r["reactivation_minor"], r["mrr_end_minor"]) for r in rows] == \
        [(2500, 0, 0, 2500), (0, 2500, 0, 0), (0, 0, 2500, 2500)]
    assert _mails(engine) == ["subscription_confirmed", "receipt", "cancellation_confirmed",
                              "subscription_confirmed", "receipt"]


def test_customer_edits_are_audited_and_metadata_limits_name_the_field(engine: Engine) -> None:
    with transaction(engine) as s:
        plan = make_plan(s, JAN5)
        cust = make_customer(s, JAN5)
        pm = make_card(s, JAN5, cust, plan)
        edits.update_customer(s, cust.id, now=JAN5, email="ada@new.example.com", name="Ada L.",
                              metadata_={"crm": "42"}, default_payment_method=pm.id)
        ev = s.exec(select(Event).where(Event.type == "customer.updated")).one()
        assert json.loads(ev.payload) == {
            "before": {"email": "ada@example.com", "name": "Ada", "metadata": {}, "default_payment_method_id": None},
            "after": {"email": "ada@new.example.com", "name": "Ada L.", "metadata": {"crm": "42"},
                      "default_payment_method_id": pm.id}}
        with pytest.raises(ValidationError) as long_value:
            edits.update_customer(s, cust.id, now=JAN5, metadata_={"note": "x" * 501})
        assert long_value.value.field == "metadata.note"
        with pytest.raises(ValidationError) as many:
            edits.update_customer(s, cust.id, now=JAN5, metadata_={f"k{i}": "v" for i in range(51)})
        assert many.value.field == "metadata"
        with pytest.raises(ValidationError) as long_key:
            edits.update_customer(s, cust.id, now=JAN5, metadata_={"k" * 41: "v"})
        assert long_key.value.field.startswith("metadata.")
        edits.update_customer(s, cust.id, now=JAN5, metadata_={"crm": ""})  # deletes the key
        cust_id = cust.id
    gw = FakeGateway()
    res = first_charge.subscribe(engine, gw, customer=cust_id, plan="basic-monthly", payment_method=None, now=JAN5,
                                 metadata_={"source": "import"})
    assert res.first_charge.status == "succeeded"  # charged on the default card
    with Session(engine) as s:
        sub = s.get_one(Subscription, res.subscription_id)
        assert (sub.payment_method_id, json.loads(sub.metadata_json or "{}")) == (pm.id, {"source": "import"})
        assert s.exec(select(Notification.to_email)).all() == ["ada@new.example.com"] * 2  # the sign-up terms and the receipt


def test_subscribe_with_a_good_card_and_with_a_declining_card_invoices_mails_and_report_lines(engine: Engine) -> None:
    """Done-when: the good card is charged at once (active); the declining one gets a clear
    error, keeps nothing, is not churn, and its retry charges nothing twice."""
    with transaction(engine) as s:
        plan = make_plan(s, JAN5, code="pro", amount_minor=2500)
        ada, bob = make_customer(s, JAN5), make_customer(s, JAN5, email="bob@example.com", name="Bob")
        good, bad = make_card(s, JAN5, ada, plan), make_card(s, JAN5, bob, plan,
                                                             token="pm_card_chargeDeclinedInsufficientFunds")
        ids = (ada.id, good.id, bob.id, bad.id)
    gw = FakeGateway()
    ok = first_charge.subscribe(engine, gw, customer=ids[0], plan="pro", payment_method=ids[1], now=JAN5)
    no = first_charge.subscribe(engine, gw, customer=ids[2], plan="pro", payment_method=ids[3], now=JAN5)
    again = first_charge.subscribe(engine, gw, customer=ids[2], plan="pro", payment_method=ids[3], now=JAN5)
    assert (ok.first_charge.status, no.first_charge.status, again.first_charge.status) == \
        ("succeeded", "declined", "declined")
    assert "insufficient_funds" in str(first_charge.declined_error(no))
    with Session(engine) as s:
        rows = s.exec(select(Invoice.subscription_id, Invoice.amount_minor, Invoice.status)
                      .order_by(col(Invoice.created_at), col(Invoice.id))).all()
        assert sorted((sid == ok.subscription_id, amount, status) for sid, amount, status in rows) == \
            [(False, 2500, "void"), (False, 2500, "void"), (True, 2500, "paid")]
        statuses = {s.get_one(Subscription, i).status for i in (no.subscription_id, again.subscription_id)}
        assert statuses == {"incomplete_expired"}
    assert [(e.kind, e.amount_minor) for e in gw.ledger] == [("charge", 2500)]
    assert _mails(engine) == ["subscription_confirmed", "receipt"]  # Bob gets nothing: nothing was started
    q = ReportQuery(start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 2, 1, tzinfo=UTC))
    [mrr] = mrr_report(engine, q).rows
    assert (mrr["new_minor"], mrr["churn_minor"], mrr["mrr_end_minor"]) == (2500, 0, 2500)
    [rev] = revenue_report(engine, q).rows
    assert (rev["gross_minor"], rev["refunds_minor"], rev["net_minor"]) == (2500, 0, 2500)


def test_a_guarantee_request_outside_the_window_moves_no_money_mails_nothing_and_reports_no_refund(
    engine: Engine,
) -> None:
    sub_id, _, gw = _world(engine)
    day31 = JAN5 + timedelta(days=31)
    with pytest.raises(Conflict) as late:
        guarantees.refund(engine, gw, subscription_id=sub_id, now=day31)
    assert "guarantee ended at 2026-02-04T12:00:00+00:00" in str(late.value)
    with Session(engine) as s:
        sub = s.get_one(Subscription, sub_id)
        assert (sub.status, sub.ended_at) == ("active", None)
        assert s.exec(select(Refund)).first() is None
        assert s.exec(select(Event).where(Event.type == "refund.guarantee_granted")).first() is None
    assert [e.kind for e in gw.ledger] == ["charge"]
    assert _mails(engine) == ["subscription_confirmed", "receipt"]
    rep = revenue_report(engine, ReportQuery(start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 2, 1, tzinfo=UTC)))
    [row] = rep.rows
    assert (row["gross_minor"], row["refunds_minor"], row["guarantee_refunds_minor"], row["net_minor"]) == \
        (2500, 0, 0, 2500)
