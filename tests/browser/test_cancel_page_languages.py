"""The cancel page in every language, in a real browser (headless Debian Chromium):
English, Russian, Hebrew (laid out right to left) and Hungarian. Screenshots go to
test-artifacts/cancel-page-<lang>.png."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from api.app import create_app
from billing_engine import customers, links, subscriptions
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.settings import load_settings
from tests.browser.test_cancel_flow import CHROMIUM, CHROMIUM_ARGS, Clock, ServerThread, _require_chromium
from tests.factories import make_card, make_plan
from tests.notifications.smtp_server import free_port

pytestmark = pytest.mark.browser

HEADINGS = {"en": "Cancel your subscription", "ru": "Отмена подписки", "he": "ביטול המינוי שלך",
            "hu": "Előfizetése lemondása"}
BUTTONS = {"en": "Cancel subscription", "ru": "Отменить подписку", "he": "ביטול המינוי",
           "hu": "Előfizetés lemondása"}


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    path = Path(request.config.rootpath) / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


def test_the_cancel_page_in_each_language_with_hebrew_right_to_left(sqlite_engine: Engine, now: datetime,
                                                                       artifacts: Path) -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(secret_key="lang-secret-" + "l" * 30, public_base_url=base, mail_transport="none",
                             company_name="The Ledger", support_email="help@ledger.example",
                             company_address="1 Example Street, Springfield")
    gateway = FakeGateway()
    subs: dict[str, str] = {}
    with transaction(sqlite_engine) as s:
        plan = make_plan(s, now, amount_minor=2500, currency="EUR")
        for lang in HEADINGS:
            c = customers.create(s, email=f"{lang}@example.com", name=f"Reader {lang}", locale=lang, now=now)
            pm = make_card(s, now, c, plan)
            subs[lang] = subscriptions.create(s, customer_id=c.id, plan_id=plan.id, payment_method_id=pm.id,
                                              now=now).id
    assert run_cycle(sqlite_engine, gateway, now=now, settings=settings).succeeded == 4
    at = now + timedelta(days=3)
    app = create_app(settings=settings, engine=sqlite_engine, gateway=gateway, clock=Clock(at))
    with ServerThread(app, port), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 900})
            for lang, sub_id in subs.items():
                page.goto(links.make_cancel_url(settings, sub_id, at))
                expect(page.get_by_role("heading", level=1)).to_have_text(HEADINGS[lang])
                expect(page.get_by_role("button")).to_have_text(BUTTONS[lang])
                assert page.evaluate("document.documentElement.lang") == lang
                direction = page.evaluate("getComputedStyle(document.querySelector('main')).direction")
                assert direction == ("rtl" if lang == "he" else "ltr")
                body = page.inner_text("main")
                assert "25" in body and ("€" in body or "EUR" in body)  # the price, formatted for the locale
                if lang == "ru":
                    assert "25,00\xa0€" in body or "25,00 €" in body
                page.screenshot(path=str(artifacts / f"cancel-page-{lang}.png"), full_page=True)
        finally:
            browser.close()
    for lang in HEADINGS:
        assert (artifacts / f"cancel-page-{lang}.png").stat().st_size > 10_000
