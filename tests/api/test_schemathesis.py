"""Property-based test of the whole admin API against its own OpenAPI document.

Schemathesis generates thousands of requests (valid and invalid) for every operation,
authenticated with the admin token, through the in-process ASGI transport, and checks
that none gets a 5xx and every response matches the documented status codes, content
types and schemas. The database (SQLite) is seeded with a plan, a customer, a card,
a paid subscription and a refund; generated ids are swapped for those real ids part of
the time so the state-changing paths (cancel, undo, refunds...) are exercised too.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.app import create_app
from api.auth import FailureThrottle
from api.limits import MAX_BODY_BYTES
from billing_engine import refunds
from billing_engine.cycle import run_cycle
from billing_engine.db import make_engine, transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Invoice
from billing_engine.settings import load_settings
from tests.api.conftest import TOKEN
from tests.factories import make_card, make_customer, make_plan, make_subscription

pytestmark = pytest.mark.filterwarnings("ignore")

MAX_EXAMPLES = 100
SEEDED: dict[str, list[str]] = {}
REQUESTS: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()
SERVER_ERRORS: Counter[str] = Counter()


def _seed(engine: Engine, gateway: FakeGateway, now: datetime) -> dict[str, list[str]]:
    with transaction(engine) as s:
        plan = make_plan(s, now)
        paid = make_subscription(s, now, plan=plan, email="paid@example.com")
        other = make_subscription(s, now, plan=plan, email="other@example.com")
        cust = make_customer(s, now, email="spare@example.com")
        spare_pm = make_card(s, now, cust, plan, token="pm_card_mastercard")
        ids = {
            "plan": [plan.id, plan.code], "customer": [paid.customer_id, other.customer_id, cust.id],
            "payment_method": [paid.payment_method_id or "", spare_pm.id],
            "subscription": [paid.id, other.id],
        }
    run_cycle(engine, gateway, now=now, settings=load_settings(admin_tokens=[TOKEN]))
    with Session(engine) as s:
        invoice_ids = [i.id for i in s.query(Invoice).all()]  # type: ignore[attr-defined]
    refunds.create(engine, gateway, invoice_id=invoice_ids[0], amount_minor=100, reason=None, now=now)
    with Session(engine) as s:
        ids["invoice"] = invoice_ids
        ids["refund"] = [r.id for r in refunds.list_refunds(s)]
        from billing_engine.models import PaymentAttempt

        ids["attempt"] = [a.id for a in s.query(PaymentAttempt).all()]  # type: ignore[attr-defined]
    return ids


@pytest.fixture
def api_app(sqlite_engine: Engine, now: datetime) -> Iterator[FastAPI]:
    gateway = FakeGateway()
    SEEDED.clear()
    SEEDED.update(_seed(sqlite_engine, gateway, now))
    settings_ = load_settings(admin_tokens=[TOKEN], database_url=str(sqlite_engine.url),
                              stripe_webhook_secret="whsec_schemathesis", mail_transport="none")
    app = create_app(settings=settings_, engine=sqlite_engine, gateway=gateway, clock=lambda: now)
    app.state.auth_throttle = FailureThrottle(limit=10**9)  # negative auth cases must not lock out the rest
    yield app


def _openapi() -> dict[str, Any]:
    """The app's own OpenAPI document (no database needed to build it)."""
    app = create_app(settings=load_settings(admin_tokens=[TOKEN]), engine=make_engine("sqlite://"),
                     gateway=FakeGateway())
    return app.openapi()


# Every documented route: the admin API, reports, the health check, the customer cancel
# pages (signed tokens) and the Stripe webhook (signed payloads).
MINE = r"^/(healthz|v1/|cancel/|webhooks/|dashboard)"
schema = schemathesis.openapi.from_dict(_openapi()).include(path_regex=MINE)


@schema.auth(refresh_interval=None, retry_on=[])
class AdminToken:
    """The admin bearer token; schemathesis leaves it off in its negative auth cases."""

    def get(self, case: Any, context: Any) -> str:
        return TOKEN

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"

# body fields that name another object, and the seeded ids to put there
_BODY_REFS = {"customer": "customer", "plan": "plan", "payment_method": "payment_method", "invoice_id": "invoice",
              "plan_id": "plan"}
_PATH_REFS = {"customer": "customer", "plan": "plan", "payment_method": "payment_method",
              "subscription": "subscription", "invoice": "invoice", "refund": "refund", "attempt": "attempt"}


def _use_real_ids(case: Any, rng: random.Random) -> None:
    """Half the time, point the request at objects that exist."""
    if rng.random() < 0.5:
        return
    for name in list(case.path_parameters or {}):
        if name in _PATH_REFS and SEEDED.get(_PATH_REFS[name]):
            case.path_parameters[name] = rng.choice(SEEDED[_PATH_REFS[name]])
    if isinstance(case.body, dict):
        for name, kind in _BODY_REFS.items():
            if name in case.body and SEEDED.get(kind):
                case.body[name] = rng.choice(SEEDED[kind])


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@pytest.fixture
def operation_traffic() -> Iterator[None]:
    """Around one operation's whole property test (hypothesis calls the test body once per
    example; a function-scoped fixture spans them all): it got real traffic. Checked per
    operation, so it holds however pytest-xdist spreads the operations over processes."""
    before = REQUESTS.copy()
    yield
    got = REQUESTS - before
    assert len(got) == 1, got  # one item = one operation
    ((label, n),) = got.items()
    assert n >= 5, f"{label}: only {n} requests"  # GET /healthz has little to vary
    assert not SERVER_ERRORS[label]


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_admin_api_never_errors_and_matches_its_schema(case: Any, api_app: FastAPI, operation_traffic: None) -> None:
    rng = random.Random(repr(case.body) + repr(case.path_parameters) + repr(case.query))
    if case.meta is not None and case.meta.generation.mode.is_positive:
        _use_real_ids(case, rng)
    REQUESTS[case.operation.label] += 1
    response = case.call(app=api_app)
    checks = CHECKS
    if response.status_code == 413:  # the body cap answers before validation: a rejection too
        assert len(response.request.body or b"") > MAX_BODY_BYTES
        checks = [c for c in CHECKS if c is not negative_data_rejection]
    case.validate_response(response, checks=checks)
    STATUSES[response.status_code] += 1
    SERVER_ERRORS[case.operation.label] += int(response.status_code >= 500)


def test_every_operation_is_a_property_test() -> None:
    """One property-test item per operation of the OpenAPI document (each checked for real
    traffic by ``operation_traffic``), so no operation escapes."""
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert len(labels) >= 40  # the admin API, not an empty document


def test_every_operation_was_exercised_without_a_server_error() -> None:
    """Runs after the property test (same module, same process): the traffic seen here.
    Under pytest-xdist this process may have run only some of the operations."""
    if not REQUESTS:
        pytest.skip("the schemathesis property test did not run in this process")
    total = sum(REQUESTS.values())
    print(f"\nschemathesis: {total} requests over {len(REQUESTS)} operations; statuses {dict(sorted(STATUSES.items()))}")
    operations = len(list(schema.get_all_operations()))
    assert 0 < len(REQUESTS) <= operations
    assert min(REQUESTS.values()) >= 5, REQUESTS  # GET /healthz has little to vary
    assert not [code for code in STATUSES if code >= 500]
