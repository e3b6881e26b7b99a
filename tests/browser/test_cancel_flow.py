"""From the reminder e-mail to a canceled subscription: one click in a real browser.

Headless Debian Chromium (``/usr/bin/chromium``) driven by Playwright, against the app
served by uvicorn on 127.0.0.1, with a real SMTP server receiving the e-mails. Without
Chromium the test skips locally and FAILS under CI.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from api.app import create_app
from billing_engine import notifications
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Event, Subscription, SubscriptionStatus
from billing_engine.settings import load_settings
from tests.factories import Clock, make_subscription
from tests.notifications.smtp_server import SmtpServer, free_port, text_of

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} not found: install Debian's chromium package to run the browser tests"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        if os.environ.get("CI"):
            pytest.fail(f"playwright is not installed: {exc}")
        pytest.skip(f"playwright is not installed: {exc}")


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1:port in a background thread."""

    def __init__(self, app: FastAPI, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="off", access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    path = Path(request.config.rootpath) / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


def _state(engine: Engine, sub_id: str) -> tuple[object, ...]:
    with Session(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        n_events = s.exec(select(func.count()).select_from(Event).where(Event.subscription_id == sub_id)).one()
        return (sub.status, sub.cancel_at_period_end, sub.cancellation_kind, sub.cancellation_reason, n_events)


def _sub(engine: Engine, sub_id: str) -> Subscription:
    with Session(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        return sub


def test_one_click_from_the_reminder_email_cancels_and_the_next_cycle_charges_nothing(
    sqlite_engine: Engine, now: datetime, smtp: SmtpServer, artifacts: Path
) -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    engine = sqlite_engine
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(
        secret_key="browser-secret-" + "b" * 30, public_base_url=base, smtp_host=smtp.host, smtp_port=smtp.port,
        mail_from="The Weekly <billing@weekly.example>", support_email="help@weekly.example",
        company_name="The Weekly",
    )
    gateway = FakeGateway()

    def deliver(eng: Engine, at: datetime) -> int:
        return notifications.deliver_pending(eng, at, settings)

    # a paying customer: first charge today, a reminder 7 days before the renewal
    with transaction(engine) as s:
        sub_id = make_subscription(s, now, email="ada@example.com").id
    assert run_cycle(engine, gateway, now=now, settings=settings, deliver=deliver).succeeded == 1
    reminder_at = datetime(2026, 2, 8, 9, 0, tzinfo=now.tzinfo)
    summary = run_cycle(engine, gateway, now=reminder_at, settings=settings, deliver=deliver)
    assert summary.reminders_queued == 1 and summary.charged == 0
    [reminder] = smtp.inbox.of_kind("renewal_reminder")
    body = text_of(reminder)
    assert "We will charge $17.00" in body and "February 15, 2026" in body

    # the link, taken from the received e-mail
    match = re.search(rf"{re.escape(base)}/cancel/[A-Za-z0-9_.\-]+", body)
    assert match, body
    link = match.group(0)
    assert reminder["List-Unsubscribe"] == f"<{link}>"
    charges_before = len(gateway.ledger)

    clock = Clock(reminder_at + timedelta(hours=2))
    app = create_app(settings=settings, engine=engine, gateway=gateway, clock=clock)
    with ServerThread(app, port):
        # a mail scanner fetches the link: nothing changes
        before = _state(engine, sub_id)
        with httpx.Client(headers={"User-Agent": "Mozilla/5.0 (compatible; LinkScanner/1.0)"}) as scanner:
            assert scanner.get(link).status_code == 200
            assert scanner.head(link).status_code == 200
        assert _state(engine, sub_id) == before

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                # phone first (read only): the page, and the button reachable by keyboard
                phone = browser.new_context(**PHONE)
                ppage = phone.new_page()
                ppage.goto(link)
                expect(ppage.get_by_role("heading", level=1)).to_have_text("Cancel your subscription")
                ppage.screenshot(path=str(artifacts / "cancel-page-phone.png"), full_page=True)
                for _ in range(10):
                    ppage.keyboard.press("Tab")
                    if ppage.evaluate("document.activeElement.tagName") == "BUTTON":
                        break
                assert ppage.evaluate("document.activeElement.textContent").strip() == "Cancel subscription"
                width = ppage.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, f"horizontal scrolling on a phone: {width}px"
                assert _state(engine, sub_id) == before

                # the customer opens the link and clicks the one button
                context = browser.new_context(viewport={"width": 1024, "height": 800})
                page = context.new_page()
                page.goto(link)
                assert page.evaluate("document.documentElement.lang") == "en"
                expect(page.get_by_role("heading", level=1)).to_have_text("Cancel your subscription")
                expect(page.get_by_text("February 15, 2026: $17.00")).to_be_visible()
                expect(page.get_by_role("button")).to_have_count(1)
                page.screenshot(path=str(artifacts / "cancel-page.png"), full_page=True)
                page.get_by_role("button", name="Cancel subscription").click()

                expect(page.get_by_role("heading", level=1)).to_have_text("Your subscription is canceled")
                expect(page.get_by_role("status")).to_have_text("Done. Your subscription is canceled.")
                expect(page.get_by_role("button", name="Undo: keep my subscription")).to_be_visible()
                page.screenshot(path=str(artifacts / "cancel-confirmed.png"), full_page=True)
                sub = _sub(engine, sub_id)
                assert sub.cancel_at_period_end and sub.status == SubscriptionStatus.ACTIVE
                assert sub.cancellation_kind == "voluntary" and sub.canceled_by == "customer"
                assert sub.cancellation_reason is None  # the reason never blocks the cancellation

                # the optional reason, after cancelling
                page.get_by_label("It costs too much").check()
                page.get_by_label("Anything else?").fill("Great paper, but my budget is tight.")
                page.get_by_role("button", name="Send feedback").click()
                expect(page.get_by_role("status")).to_have_text("Thank you for telling us.")
                sub = _sub(engine, sub_id)
                assert sub.cancellation_reason == "too_expensive"
                assert sub.cancellation_comment == "Great paper, but my budget is tight."

                ppage.goto(link)
                expect(ppage.get_by_role("heading", level=1)).to_have_text("Your subscription is canceled")
                ppage.screenshot(path=str(artifacts / "cancel-confirmed-phone.png"), full_page=True)
            finally:
                browser.close()

    # the durable-medium confirmation arrives by e-mail
    assert deliver(engine, clock.at) >= 1
    [confirmation] = smtp.inbox.of_kind("cancellation_confirmed")
    text = text_of(confirmation)
    assert "Access until:  February 15, 2026" in text and "You will not be charged again." in text

    # after the period ends, the run-cycle ends the subscription and charges nothing
    after_end = datetime(2026, 2, 15, 10, 0, tzinfo=now.tzinfo)
    summary = run_cycle(engine, gateway, now=after_end, settings=settings, deliver=deliver)
    assert summary.charged == 0 and summary.cancellations_effective == 1
    assert len(gateway.ledger) == charges_before
    sub = _sub(engine, sub_id)
    assert sub.status == SubscriptionStatus.CANCELED
    assert sub.ended_at == datetime(2026, 2, 15, 9, 0, tzinfo=now.tzinfo)
    assert sub.cancellation_kind == "voluntary" and sub.cancellation_reason == "too_expensive"
    assert run_cycle(engine, gateway, now=after_end + timedelta(days=40), settings=settings).charged == 0
    assert len(gateway.ledger) == charges_before
