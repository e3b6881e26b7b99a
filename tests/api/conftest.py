"""API test fixtures: the app over the test database, the FakeGateway and a frozen clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.app import create_app
from billing_engine.gateway.fake import FakeGateway
from billing_engine.settings import load_settings

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TERMS = "You authorise us to charge this card each period until you cancel."


class Clock:
    """The app's "now"; tests move it forward."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now)


def make_client(engine: Engine, gateway: FakeGateway, clock: Clock, tokens: list[str] | None = None) -> TestClient:
    settings = load_settings(admin_tokens=[TOKEN] if tokens is None else tokens,
                             database_url=engine.url.render_as_string(hide_password=False))
    app = create_app(settings=settings, engine=engine, gateway=gateway, clock=clock)
    return TestClient(app, raise_server_exceptions=True)


@pytest.fixture
def client(engine: Engine, gateway: FakeGateway, clock: Clock) -> Iterator[TestClient]:
    with make_client(engine, gateway, clock) as c:
        c.headers.update(AUTH)
        yield c


@pytest.fixture
def anon(engine: Engine, gateway: FakeGateway, clock: Clock) -> Iterator[TestClient]:
    """A client without credentials."""
    with make_client(engine, gateway, clock) as c:
        yield c


# --------------------------------------------------------------------------- builders over the API


def consent(amount_minor: int = 1700, currency: str = "USD", **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "ip_address": "203.0.113.7", "user_agent": "Mozilla/5.0 (test)", "terms_version": "2026-01",
        "terms_text": TERMS, "amount_minor": amount_minor, "currency": currency, "interval": "month",
    }
    data.update(kw)
    return data


def create_plan(c: TestClient, code: str = "basic-monthly", **kw: Any) -> dict[str, Any]:
    body = {"code": code, "name": "Basic", "amount_minor": 1700, "currency": "USD", "interval": "month"} | kw
    r = c.post("/v1/plans", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def create_customer(c: TestClient, email: str = "ada@example.com", **kw: Any) -> dict[str, Any]:
    r = c.post("/v1/customers", json={"email": email, "name": "Ada"} | kw)
    assert r.status_code == 201, r.text
    return r.json()


def add_card(c: TestClient, customer_id: str, token: str = "pm_card_visa", **consent_kw: Any) -> dict[str, Any]:
    r = c.post(f"/v1/customers/{customer_id}/payment-methods", json={"token": token, "consent": consent(**consent_kw)})
    assert r.status_code == 201, r.text
    return r.json()


def subscribe(c: TestClient, *, plan: str = "basic-monthly", email: str = "ada@example.com",
              token: str = "pm_card_visa", **kw: Any) -> dict[str, Any]:
    cust = create_customer(c, email)
    pm = add_card(c, cust["id"], token)
    # the run-cycle makes the first charge in the tests built on this helper (as before subscribe charged)
    body = {"customer": cust["id"], "plan": plan, "payment_method": pm["id"], "defer_first_charge": True} | kw
    r = c.post("/v1/subscriptions", json=body)
    assert r.status_code == 201, r.text
    return r.json()
