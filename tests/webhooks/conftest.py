"""The app with a Stripe webhook secret, on both database backends, with a frozen clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.app import create_app
from billing_engine.gateway import FakeGateway
from billing_engine.settings import load_settings

from .stripe_events import SECRET, body_of, sign

Post = Callable[..., httpx.Response]


def make_client(db_url: str, engine: Engine, now: datetime, *, secret: str | None = SECRET) -> TestClient:
    settings = load_settings(database_url=db_url, stripe_webhook_secret=secret, admin_tokens=["t"])
    app = create_app(settings=settings, engine=engine, gateway=FakeGateway(), clock=lambda: now)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(db_url: str, engine: Engine, now: datetime) -> Iterator[TestClient]:
    with make_client(db_url, engine, now) as c:
        yield c


@pytest.fixture
def post(client: TestClient) -> Post:
    """POST an event (dict) or a raw body, signed now unless ``header`` is given."""

    def _post(event: dict[str, Any] | str, *, header: str | None | bool = True) -> httpx.Response:
        body = event if isinstance(event, str) else body_of(event)
        headers = {"Content-Type": "application/json"}
        if header is True:
            headers["Stripe-Signature"] = sign(body)
        elif isinstance(header, str):
            headers["Stripe-Signature"] = header
        return client.post("/webhooks/stripe", content=body.encode(), headers=headers)

    return _post
