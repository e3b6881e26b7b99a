"""The self-service page in a real browser (headless Debian Chromium + Playwright), at
desktop width and at 390 px: card update with the fake gateway and the immediate
retry of a past-due subscription; receipt download; cancel and undo. Screenshots go to
``test-artifacts/``. Without Chromium the tests skip locally and FAIL under CI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.app import create_app
from billing_engine import links
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Invoice, InvoiceStatus, PaymentAttempt, Subscription, SubscriptionStatus
from billing_engine.settings import Settings, load_settings
from tests.browser.test_cancel_flow import CHROMIUM, CHROMIUM_ARGS, PHONE, Clock, ServerThread, _require_chromium
from tests.factories import make_subscription
from tests.notifications.smtp_server import free_port

pytestmark = pytest.mark.browser

VIEWPORTS: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 900}},
    "phone": PHONE,
}


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    path = Path(request.config.rootpath) / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


class Site:
    def __init__(self, engine: Engine, now: datetime) -> None:
        self.engine = engine
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.settings: Settings = load_settings(
            secret_key="browser-self-" + "q" * 30, public_base_url=self.base, company_name="The Weekly",
            support_email="help@weekly.example", seller_name="Weekly Media GmbH",
            seller_address="Hauptstr. 1 | 10115 Berlin", seller_tax_id="DE123456789", mail_transport="none",
        )
        self.gateway = FakeGateway()
        self.clock = Clock(now)

    def subscription(self, now: datetime) -> Subscription:
        with transaction(self.engine) as s:
            sub_id = make_subscription(s, now, email="ada@example.com").id
        assert run_cycle(self.engine, self.gateway, now=now, settings=self.settings).succeeded == 1
        return self.sub(sub_id)

    def sub(self, sub_id: str) -> Subscription:
        with Session(self.engine) as s:
            sub = s.get(Subscription, sub_id)
            assert sub is not None
            return sub

    def link(self, customer_id: str) -> str:
        return links.make_account_url(self.settings, customer_id, self.clock.at)


@pytest.fixture
def site(sqlite_engine: Engine, now: datetime) -> Iterator[Site]:
    yield Site(sqlite_engine, now)


def _no_horizontal_scroll(page: Any, name: str) -> None:
    if name == "phone":
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"horizontal scrolling on a phone: {width}px"


@pytest.mark.parametrize("name", VIEWPORTS)
def test_card_update_then_the_past_due_subscription_is_paid_at_once(
    site: Site, now: datetime, artifacts: Path, name: str,
) -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    sub = site.subscription(now)
    renewal = sub.current_period_end + timedelta(hours=1)
    run_cycle(site.engine, site.gateway, now=renewal - timedelta(days=7), settings=site.settings)  # its reminder
    site.gateway.fail_next("insufficient_funds")
    assert run_cycle(site.engine, site.gateway, now=renewal, settings=site.settings).declined_soft == 1
    assert site.sub(sub.id).status == SubscriptionStatus.PAST_DUE
    site.clock.at = renewal + timedelta(hours=2)
    charges = len(site.gateway.ledger)
    app = create_app(settings=site.settings, engine=site.engine, gateway=site.gateway, clock=site.clock)
    with ServerThread(app, site.port), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(java_script_enabled=False, **VIEWPORTS[name])
            page = context.new_page()
            page.goto(site.link(sub.customer_id))
            expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
            expect(page.get_by_text("did not go through")).to_be_visible()
            _no_horizontal_scroll(page, name)
            page.screenshot(path=str(artifacts / f"self-service-past-due-{name}.png"), full_page=True)

            page.get_by_role("link", name="Update card").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Update your card")
            expect(page.get_by_text("I authorise Weekly Media GmbH")).to_be_visible()
            page.get_by_label("Mastercard, succeeds").check()
            _no_horizontal_scroll(page, name)
            page.screenshot(path=str(artifacts / f"self-service-card-form-{name}.png"), full_page=True)
            page.get_by_role("button", name="Agree and save card").click()

            expect(page.get_by_role("status")).to_have_text(re.compile("outstanding payment went through"))
            expect(page.get_by_text("Mastercard ending 4444")).to_be_visible()
            expect(page.get_by_text("did not go through")).to_have_count(0)
            page.screenshot(path=str(artifacts / f"self-service-card-updated-{name}.png"), full_page=True)
        finally:
            browser.close()
    after = site.sub(sub.id)
    assert after.status == SubscriptionStatus.ACTIVE and after.current_period_end > sub.current_period_end
    assert len(site.gateway.ledger) == charges + 1
    with Session(site.engine) as s:
        paid = s.exec(select(Invoice).where(Invoice.subscription_id == sub.id)
                      .order_by(col(Invoice.period_start))).all()
        assert [i.status for i in paid] == [InvoiceStatus.PAID, InvoiceStatus.PAID]
        tries = s.exec(select(PaymentAttempt.status).where(PaymentAttempt.invoice_id == paid[1].id)
                       .order_by(col(PaymentAttempt.attempt_number))).all()
        assert list(tries) == ["failed", "succeeded"]


@pytest.mark.parametrize("name", VIEWPORTS)
def test_receipt_page_and_pdf_download(site: Site, now: datetime, artifacts: Path, name: str) -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    sub = site.subscription(now)
    app = create_app(settings=site.settings, engine=site.engine, gateway=site.gateway, clock=site.clock)
    with ServerThread(app, site.port), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(accept_downloads=True, **VIEWPORTS[name])
            page = context.new_page()
            page.goto(site.link(sub.customer_id))
            expect(page.get_by_text("INV-000001")).to_be_visible()
            page.get_by_role("link", name="Receipt", exact=True).click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Receipt")
            for text in ("Weekly Media GmbH", "DE123456789", "INV-000001", "Visa ending 4242", "$17.00"):
                expect(page.get_by_text(text).first).to_be_visible()
            _no_horizontal_scroll(page, name)
            page.screenshot(path=str(artifacts / f"self-service-receipt-{name}.png"), full_page=True)
            with page.expect_download() as info:
                page.get_by_role("link", name="Download PDF").click()
            download = info.value
            assert download.suggested_filename == "receipt-INV-000001.pdf"
            target = artifacts / f"self-service-receipt-{name}.pdf"
            download.save_as(str(target))
            assert target.read_bytes().startswith(b"%PDF-") and target.stat().st_size > 2000
        finally:
            browser.close()


@pytest.mark.parametrize("name", VIEWPORTS)
def test_cancel_and_undo_from_the_self_service_page(site: Site, now: datetime, artifacts: Path, name: str) -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    sub = site.subscription(now)
    site.clock.at = now + timedelta(days=3)
    app = create_app(settings=site.settings, engine=site.engine, gateway=site.gateway, clock=site.clock)
    with ServerThread(app, site.port), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(java_script_enabled=False, **VIEWPORTS[name]).new_page()
            page.goto(site.link(sub.customer_id))
            expect(page.get_by_text("February 15, 2026: $17.00")).to_be_visible()
            _no_horizontal_scroll(page, name)
            page.screenshot(path=str(artifacts / f"self-service-account-{name}.png"), full_page=True)
            page.get_by_role("button", name="Cancel subscription").click()
            expect(page.get_by_role("status")).to_have_text(re.compile("Your subscription is canceled"))
            expect(page.get_by_text("access until February 15, 2026, no further charges")).to_be_visible()
            page.screenshot(path=str(artifacts / f"self-service-canceled-{name}.png"), full_page=True)
            after = site.sub(sub.id)
            assert after.cancel_at_period_end and after.cancellation_kind == "voluntary"
            assert after.canceled_by == "customer"

            page.get_by_role("button", name="Undo: keep my subscription").click()
            expect(page.get_by_role("status")).to_have_text("Welcome back. Your subscription continues.")
            expect(page.get_by_role("button", name="Cancel subscription")).to_be_visible()
            page.screenshot(path=str(artifacts / f"self-service-undone-{name}.png"), full_page=True)
        finally:
            browser.close()
    after = site.sub(sub.id)
    assert not after.cancel_at_period_end and after.cancellation_kind is None
    assert after.status == SubscriptionStatus.ACTIVE


@pytest.mark.parametrize("name", VIEWPORTS)
def test_pause_resume_and_subscribe_again_by_clicking(site: Site, now: datetime, artifacts: Path, name: str) -> None:
    """On a plan that lets customers pause: pause now, resume, cancel; after the end,
    "Subscribe again" charges once and links the new subscription to the old one."""
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    from billing_engine import edits

    sub = site.subscription(now)
    with transaction(site.engine) as s:
        edits.update_plan(s, "basic-monthly", now=now, customer_can_pause=True)
    site.clock.at = now + timedelta(days=2)
    app = create_app(settings=site.settings, engine=site.engine, gateway=site.gateway, clock=site.clock)
    with ServerThread(app, site.port), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(java_script_enabled=False, **VIEWPORTS[name])
            page = context.new_page()
            page.goto(site.link(sub.customer_id))
            page.get_by_label("Pause now").check()
            _no_horizontal_scroll(page, name)
            page.screenshot(path=str(artifacts / f"self-service-pause-form-{name}.png"), full_page=True)
            page.get_by_role("button", name="Pause subscription").click()
            expect(page.get_by_role("status")).to_have_text(re.compile("Your subscription is paused"))
            expect(page.get_by_text("Paused until you resume it")).to_be_visible()
            assert site.sub(sub.id).status == SubscriptionStatus.PAUSED

            page.get_by_role("button", name="Resume my subscription").click()
            expect(page.get_by_role("status")).to_have_text(re.compile("Your subscription continues"))
            assert site.sub(sub.id).status == SubscriptionStatus.ACTIVE

            page.get_by_role("button", name="Cancel subscription").click()
            expect(page.get_by_role("status")).to_have_text(re.compile("canceled"))
            assert run_cycle(site.engine, site.gateway, now=sub.current_period_end + timedelta(hours=1),
                             settings=site.settings).cancellations_effective == 1
            site.clock.at = sub.current_period_end + timedelta(days=10)
            page.goto(site.link(sub.customer_id))
            expect(page.get_by_text("I subscribe again to Basic Monthly")).to_be_visible()
            _no_horizontal_scroll(page, name)
            page.screenshot(path=str(artifacts / f"self-service-reactivate-{name}.png"), full_page=True)
            page.get_by_role("button", name="Subscribe again").click()
            expect(page.get_by_role("status")).to_have_text(re.compile("Welcome back!"))
            expect(page.get_by_role("button", name="Subscribe again")).to_have_count(0)
        finally:
            browser.close()
    with Session(site.engine) as s:
        new = s.exec(select(Subscription).where(Subscription.reactivated_from == sub.id)).one()
        assert new.status == SubscriptionStatus.ACTIVE
    assert [e.amount_minor for e in site.gateway.ledger] == [1700, 1700]
