"""The self-service page: one signed link per customer; subscriptions, next charge,
invoices and receipts; cancel, undo and a card update that retries a past-due
subscription at once (fake gateway)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.app import create_app
from api.routers.cancel_pages import SECURITY_HEADERS
from billing_engine import card_updates, links, receipts
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import (
    CardUpdate,
    Consent,
    Event,
    Invoice,
    InvoiceStatus,
    PaymentAttempt,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.settings import Settings, load_settings
from tests.factories import Clock, make_plan, make_subscription, remind_ahead

BASE = "https://news.example"


@pytest.fixture
def settings() -> Settings:
    return load_settings(secret_key="self-service-" + "s" * 30, public_base_url=BASE, company_name="The Weekly",
                         support_email="help@news.example", seller_name="Weekly Media GmbH",
                         seller_address="Hauptstr. 1 | 10115 Berlin | Germany", seller_tax_id="DE123456789",
                         invoice_number_prefix="WM-")


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now + timedelta(days=3))


@pytest.fixture
def client(engine: Engine, settings: Settings, gateway: FakeGateway, clock: Clock) -> Iterator[TestClient]:
    app = create_app(settings=settings, engine=engine, gateway=gateway, clock=clock)
    with TestClient(app, base_url=BASE, follow_redirects=False, client=("203.0.113.9", 50000)) as c:
        yield c


def _paid(engine: Engine, now: datetime, settings: Settings, gateway: FakeGateway, email: str = "ada@example.com") -> Subscription:
    with transaction(engine) as s:
        plan = s.exec(select(Plan).where(Plan.code == "basic-monthly")).first() or make_plan(s, now)
        sub_id = make_subscription(s, now, email=email, plan=plan).id
    assert run_cycle(engine, gateway, now=now, settings=settings).succeeded >= 1
    return _sub(engine, sub_id)


def _past_due(engine: Engine, now: datetime, settings: Settings, gateway: FakeGateway) -> tuple[Subscription, datetime]:
    sub = _paid(engine, now, settings, gateway)
    renewal = sub.current_period_end + timedelta(hours=1)
    gateway.fail_next("insufficient_funds")
    remind_ahead(engine, renewal, settings)  # the renewal's reminder
    summary = run_cycle(engine, gateway, now=renewal, settings=settings)
    assert summary.declined_soft == 1
    sub = _sub(engine, sub.id)
    assert sub.status == SubscriptionStatus.PAST_DUE
    return sub, renewal


def _sub(engine: Engine, sub_id: str) -> Subscription:
    with Session(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        return sub


def _path(settings: Settings, customer_id: str, at: datetime) -> str:
    return links.make_account_url(settings, customer_id, at).removeprefix(BASE)


def _count(engine: Engine, model: type, *where: object) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(model).where(*where)).one())  # type: ignore[arg-type]


def test_the_page_shows_subscription_next_charge_card_and_receipt(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub = _paid(engine, now, settings, gateway)
    events_before = _count(engine, Event)
    r = client.get(_path(settings, sub.customer_id, now))
    assert r.status_code == 200, r.text
    for name, value in SECURITY_HEADERS.items():
        assert r.headers[name] == value
    html = r.text
    assert "<script" not in html
    assert "Basic Monthly" in html and "$17.00 every month" in html
    assert "February 15, 2026: $17.00" in html  # the next charge, date and amount
    assert "Visa ending 4242" in html
    assert "WM-000001" in html and "Download PDF" in html
    assert _count(engine, Event) == events_before  # a GET changes nothing


def test_a_token_never_reaches_another_customers_subscription_or_receipt(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime,
) -> None:
    ada = _paid(engine, now, settings, gateway, email="ada@example.com")
    bob = _paid(engine, now, settings, gateway, email="bob@example.com")
    with Session(engine) as s:
        bob_invoice = s.exec(select(Invoice).where(Invoice.subscription_id == bob.id)).one()
    path = _path(settings, ada.customer_id, now)
    assert client.post(f"{path}/subscriptions/{bob.id}/cancel").status_code == 404
    assert client.get(f"{path}/receipts/{bob_invoice.id}").status_code == 404
    assert client.get(f"{path}/receipts/{bob_invoice.id}.pdf").status_code == 404
    assert client.get(f"{path}/subscriptions/{bob.id}/card").status_code == 404
    assert not _sub(engine, bob.id).cancel_at_period_end


def test_forged_expired_and_cancel_tokens_do_not_open_the_page(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub = _paid(engine, now, settings, gateway)
    path = _path(settings, sub.customer_id, now)
    assert client.get(path[:-3] + "abc").status_code == 404
    cancel_token = links.make_cancel_token(settings, sub.id, now)
    assert client.get(f"/account/{cancel_token}").status_code == 404  # another purpose (salt)
    old = _path(settings, sub.customer_id, clock.at - timedelta(days=settings.cancel_link_max_age_days + 1))
    r = client.get(old)
    assert r.status_code == 400 and "expired" in r.text
    assert client.post(f"{old}/subscriptions/{sub.id}/cancel").status_code == 400
    assert not _sub(engine, sub.id).cancel_at_period_end


def test_a_link_signed_with_a_rotated_out_key_still_opens_the_page(
    engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub = _paid(engine, now, settings, gateway)
    old_path = _path(settings, sub.customer_id, now)
    rotated = load_settings(secret_keys="new-key-" + "n" * 30 + ",self-service-" + "s" * 30, public_base_url=BASE)
    app = create_app(settings=rotated, engine=engine, gateway=gateway, clock=clock)
    with TestClient(app, base_url=BASE) as c:
        assert c.get(old_path).status_code == 200


def test_cancel_then_undo_from_the_page(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime,
) -> None:
    sub = _paid(engine, now, settings, gateway)
    path = _path(settings, sub.customer_id, now)
    r = client.post(f"{path}/subscriptions/{sub.id}/cancel")
    assert r.status_code == 303 and r.headers["location"].endswith("?done=canceled")
    after = _sub(engine, sub.id)
    assert after.cancel_at_period_end and after.cancellation_kind == "voluntary" and after.canceled_by == "customer"
    page = client.get(r.headers["location"]).text
    assert "Undo: keep my subscription" in page and "no further charges" in page
    assert client.post(f"{path}/subscriptions/{sub.id}/cancel").status_code == 303  # repeating is harmless
    r = client.post(f"{path}/subscriptions/{sub.id}/undo")
    assert r.status_code == 303 and r.headers["location"].endswith("?done=undone")
    after = _sub(engine, sub.id)
    assert not after.cancel_at_period_end and after.cancellation_kind is None
    assert "Cancel subscription" in client.get(r.headers["location"]).text


def test_card_update_retries_a_past_due_subscription_at_once_on_the_same_invoice(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub, renewal = _past_due(engine, now, settings, gateway)
    clock.at = renewal + timedelta(hours=2)  # long before the dunning schedule's next try
    path = _path(settings, sub.customer_id, clock.at)
    with Session(engine) as s:
        [open_invoice] = s.exec(select(Invoice).where(Invoice.subscription_id == sub.id,
                                                      Invoice.status == InvoiceStatus.OPEN)).all()
    page = client.get(f"{path}/subscriptions/{sub.id}/card")
    assert page.status_code == 200 and "I authorise Weekly Media GmbH to charge" in page.text
    charges = len(gateway.ledger)

    r = client.post(f"{path}/subscriptions/{sub.id}/card", data={"test_token": "pm_card_mastercard"},
                    headers={"User-Agent": "Mozilla/5.0 (self-service test)"})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=card_paid"), r.text

    after = _sub(engine, sub.id)
    assert after.status == SubscriptionStatus.ACTIVE and after.current_period_end > sub.current_period_end
    assert len(gateway.ledger) == charges + 1  # one charge, at once
    with Session(engine) as s:
        invoices = s.exec(select(Invoice).where(Invoice.subscription_id == sub.id,
                                                Invoice.period_start == open_invoice.period_start)).all()
        assert [i.id for i in invoices] == [open_invoice.id]  # the same invoice, not a second one
        assert invoices[0].status == InvoiceStatus.PAID and invoices[0].number == "WM-000002"
        attempts = s.exec(select(PaymentAttempt).where(PaymentAttempt.invoice_id == open_invoice.id)
                          .order_by(col(PaymentAttempt.attempt_number))).all()
        assert [a.status for a in attempts] == ["failed", "succeeded"]
        assert attempts[1].payment_method_id == after.payment_method_id != sub.payment_method_id
        consent = s.exec(select(Consent).where(Consent.payment_method_id == after.payment_method_id)).one()
        assert consent.ip_address == "203.0.113.9"  # the request's address
        assert consent.user_agent == "Mozilla/5.0 (self-service test)"
        assert consent.terms_version == card_updates.TERMS_VERSION
        assert consent.terms_text is not None and "$17.00 every month" in consent.terms_text
        assert (consent.amount_minor, consent.currency, consent.interval) == (1700, "USD", "month")
        assert consent.gateway_setup_id
        update = s.exec(select(CardUpdate)).one()
        assert update.status == "completed" and update.payment_method_id == after.payment_method_id
    assert "outstanding payment went through" in client.get(r.headers["location"]).text
    # a replayed form adds a card again but never charges the paid period twice
    client.post(f"{path}/subscriptions/{sub.id}/card", data={"test_token": "pm_card_mastercard"})
    assert len(gateway.ledger) == charges + 1


def test_a_declined_new_card_keeps_dunning_and_says_so(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub, renewal = _past_due(engine, now, settings, gateway)
    clock.at = renewal + timedelta(hours=2)
    path = _path(settings, sub.customer_id, clock.at)
    r = client.post(f"{path}/subscriptions/{sub.id}/card",
                    data={"test_token": "pm_card_chargeDeclinedInsufficientFunds"})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=card_declined")
    after = _sub(engine, sub.id)
    assert after.status == SubscriptionStatus.PAST_DUE and after.next_retry_at is not None
    assert after.next_retry_at > clock.at
    assert _count(engine, Invoice, col(Invoice.subscription_id) == sub.id) == 2  # still one per period


def test_a_card_number_is_refused_and_nothing_is_stored(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub, renewal = _past_due(engine, now, settings, gateway)
    clock.at = renewal + timedelta(hours=2)
    path = _path(settings, sub.customer_id, clock.at)
    r = client.post(f"{path}/subscriptions/{sub.id}/card", data={"test_token": "4242424242424242"})
    assert r.status_code == 422 and "card number" in r.text
    assert _count(engine, CardUpdate) == 0
    assert _sub(engine, sub.id).payment_method_id == sub.payment_method_id


def test_receipt_page_and_pdf(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime,
) -> None:
    sub = _paid(engine, now, settings, gateway)
    with Session(engine) as s:
        invoice = s.exec(select(Invoice).where(Invoice.subscription_id == sub.id)).one()
    path = _path(settings, sub.customer_id, now)
    r = client.get(f"{path}/receipts/{invoice.id}")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    for text in ("Weekly Media GmbH", "Hauptstr. 1", "10115 Berlin", "DE123456789", "WM-000001", "$17.00",
                 "January 15, 2026 to February 15, 2026", "Visa ending 4242"):
        assert text in r.text, text
    pdf = client.get(f"{path}/receipts/{invoice.id}.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    assert re.search(r'attachment; filename="receipt-WM-000001\.pdf"', pdf.headers["content-disposition"])
    assert pdf.headers["X-Content-Type-Options"] == "nosniff"
    # what the PDF says (laid out by WeasyPrint from the same receipt)
    from weasyprint import HTML

    with Session(engine) as s:
        receipt = receipts.for_invoice(s, invoice.id, customer_id=sub.customer_id, settings=settings)
    [page] = HTML(string=receipts.render_html(receipt)).render().pages
    text = " ".join(_texts(page._page_box))
    for fact in ("Weekly Media GmbH", "Hauptstr. 1", "Tax ID: DE123456789", "WM-000001", "Basic Monthly",
                 "January 15, 2026 to February 15, 2026", "Visa ending 4242", "$17.00", "ada@example.com"):
        assert fact in text, fact


def _texts(box: object) -> list[str]:
    out = [box.text] if isinstance(getattr(box, "text", None), str) else []  # type: ignore[attr-defined]
    for child in getattr(box, "children", None) or []:
        out.extend(_texts(child))
    return out


def test_a_crafted_banner_in_the_query_string_is_not_shown(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime,
) -> None:
    sub = _paid(engine, now, settings, gateway)
    path = _path(settings, sub.customer_id, now)
    page = client.get(f"{path}?done=canceled").text
    assert "Your subscription is canceled" not in page and 'role="status"' not in page
    assert "went through" in client.get(f"{path}?done=card_paid").text  # true: nothing is due
