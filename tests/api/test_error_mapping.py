"""Every engine error and every gateway error maps to one problem+json answer, in one
place: a new endpoint that lets one escape can never answer 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.app import create_app
from billing_engine import errors, links
from billing_engine.gateway.fake import FakeGateway
from billing_engine.gateway.protocol import GatewayAuthError, GatewayError, GatewayUnreachable, IdempotencyConflict
from billing_engine.imports.csv_source import ImportInvalid
from billing_engine.settings import load_settings


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_all_subclasses(sub)]
    return out


ERRORS: list[tuple[Exception, int]] = [
    (errors.ValidationError("must be positive", field="amount_minor"), 422),
    (errors.NotFound("no plan 'x'", field="plan"), 404),
    (errors.Conflict("already canceled", field="subscription"), 409),
    (errors.ConsentRequired(field="payment_method"), 409),
    (errors.InvalidTransition(field="status"), 409),
    (errors.PaymentDeclined("the card was declined (insufficient_funds)", field="payment_method"), 402),
    (errors.PaymentRequiresAction(field="payment_method"), 402),
    (errors.ConfigurationError("BILLING_STRIPE_API_KEY is required"), 500),
    (errors.GatewayUnavailable(), 503),
    (GatewayUnreachable("connection reset"), 503),
    (links.InvalidCancelLink(), 404),
    (links.ExpiredCancelLink(subscription_id="sub_1", issued_at=None), 400),
    (GatewayError("Invalid API Key provided: sk_test_****"), 502),
    (IdempotencyConflict("key reused with other parameters"), 502),
    (GatewayAuthError("401: Invalid API Key provided"), 502),
    (errors.DatabaseUnavailable("database error while settling a batch"), 503),
    (ImportInvalid([]), 422),
]


def test_the_table_covers_every_error_class() -> None:
    covered = {type(e) for e, _ in ERRORS}
    missing = [c for c in [*_all_subclasses(errors.BillingError), *_all_subclasses(GatewayError)]
               if c.__module__.startswith("billing_engine") and c not in covered
               and c.__name__ != "WebhookSignatureInvalid"]  # answered by the webhook endpoint itself
    assert not missing


@pytest.fixture
def raising_client(engine: Engine) -> TestClient:
    settings = load_settings(admin_tokens=["t"], database_url=engine.url.render_as_string(hide_password=False))
    app = create_app(settings=settings, engine=engine, gateway=FakeGateway())

    @app.get("/test-raise/{n}")
    def boom(n: int) -> None:
        raise ERRORS[n][0]

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("n", range(len(ERRORS)), ids=[type(e).__name__ for e, _ in ERRORS])
def test_an_escaping_error_answers_its_problem(raising_client: TestClient, n: int) -> None:
    exc, status = ERRORS[n]
    r = raising_client.get(f"/test-raise/{n}")
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["detail"]
    if isinstance(exc, errors.BillingError) and status < 500:
        assert body["field"] == exc.field
    if status == 502:
        assert body["code"] == "gateway_error"
        assert "configuration" in body["detail"]
