"""Admin endpoints need the bearer token; nothing changes without it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Plan
from tests.api.conftest import AUTH, Clock, create_plan, make_client

PLAN = {"code": "basic", "name": "Basic", "amount_minor": 700, "currency": "USD"}


def _plan_count(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(Plan)).one())


def test_create_without_token_is_401_and_creates_nothing(anon: TestClient, engine: Engine) -> None:
    r = anon.post("/v1/plans", json=PLAN)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["status"] == 401 and "Authorization: Bearer" in r.json()["detail"]
    assert _plan_count(engine) == 0


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer", "test-admin-token-0123456789",
                                    "Bearer test-admin-token-012345678"])
def test_wrong_token_is_401_and_creates_nothing(anon: TestClient, engine: Engine, header: str) -> None:
    r = anon.post("/v1/plans", json=PLAN, headers={"Authorization": header})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert _plan_count(engine) == 0


def test_every_admin_endpoint_refuses_anonymous_requests(anon: TestClient) -> None:
    """Every documented /v1 operation that declares the admin token answers 401 without it."""
    doc = anon.get("/openapi.json").json()
    checked = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if not any("AdminToken" in sec for sec in op.get("security", [])):
                continue
            url = path.replace("{", "").replace("}", "")
            r = anon.request(method.upper(), url, json={})
            assert r.status_code == 401, (method, url, r.status_code)
            checked += 1
    assert checked >= 24


def test_malformed_body_without_token_is_401_not_a_validation_error(anon: TestClient) -> None:
    r = anon.post("/v1/plans", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401


def test_no_configured_token_means_admin_api_is_off(engine: Engine, gateway: FakeGateway, clock: Clock) -> None:
    with make_client(engine, gateway, clock, tokens=[]) as c:
        r = c.post("/v1/plans", json=PLAN, headers=AUTH)
        assert r.status_code == 503
        assert "BILLING_ADMIN_TOKENS" in r.json()["detail"]
        assert c.get("/v1/plans", headers={"Authorization": "Bearer "}).status_code == 503
    assert _plan_count(engine) == 0


def test_any_of_several_tokens_is_accepted(engine: Engine, gateway: FakeGateway, clock: Clock) -> None:
    with make_client(engine, gateway, clock, tokens=["first-token", "second-token"]) as c:
        assert c.get("/v1/plans", headers={"Authorization": "Bearer second-token"}).status_code == 200
        assert c.get("/v1/plans", headers={"Authorization": "bearer first-token"}).status_code == 200


@pytest.mark.parametrize("sent", ["ops:ops-secret-0123456789", "ops:ops-secret-0123456789:admin"])
def test_the_whole_name_secret_entry_is_refused_with_a_hint(engine: Engine, gateway: FakeGateway, clock: Clock,
                                                             sent: str) -> None:
    """deploy/billing.env.example writes BILLING_ADMIN_TOKENS=ops:<secret>; an admin who then
    sends `Bearer $BILLING_ADMIN_TOKENS` got a bare "invalid admin token"."""
    with make_client(engine, gateway, clock, tokens=["ops:ops-secret-0123456789:admin", "fin:fin-secret-012345:read"]) as c:
        r = c.post("/v1/plans", json=PLAN, headers={"Authorization": f"Bearer {sent}"})
        assert r.status_code == 401 and "send only the secret of 'ops'" in r.json()["detail"]
        assert "ops-secret" not in r.json()["detail"]
        # a wrong secret under a real name gets no hint (it would confirm the name to a guesser)
        r = c.post("/v1/plans", json=PLAN, headers={"Authorization": "Bearer ops:guess"})
        assert r.status_code == 401 and r.json()["detail"] == "invalid admin token"
        assert c.get("/v1/plans", headers={"Authorization": "Bearer ops-secret-0123456789"}).status_code == 200
    assert _plan_count(engine) == 0


def test_health_needs_no_token_and_checks_the_database(anon: TestClient) -> None:
    r = anon.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok"}


def test_openapi_documents_bearer_auth_and_problem_responses(anon: TestClient) -> None:
    doc = anon.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["AdminToken"]["scheme"] == "bearer"
    op = doc["paths"]["/v1/plans"]["post"]
    assert {"201", "401", "409", "422"} <= set(op["responses"])
    assert "application/problem+json" in op["responses"]["401"]["content"]
    assert anon.get("/docs").status_code == 200
    assert create_plan is not None
