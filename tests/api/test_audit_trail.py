"""Issue #13, audit trail: each admin action names the token that did it, has a wall-clock
``recorded_at`` beside its business time, and run-cycles, cancel links, e-mail sends,
dashboard logins and refused credentials are in the events table. A read-only (finance)
token reads reports and the dashboard, nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.app import create_app
from billing_engine.errors import ConfigurationError
from billing_engine.events import EventType
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Event, Plan
from billing_engine.settings import load_settings
from tests.api.conftest import Clock, create_plan, subscribe

OPS = "ops-secret-0123456789abcdef0123"
FIN = "fin-secret-0123456789abcdef0123"
TOKENS = [f"ops:{OPS}", f"finance:{FIN}:read"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app_client(engine: Engine, clock: Clock) -> Iterator[TestClient]:
    settings = load_settings(admin_tokens=TOKENS, secret_key="s" * 40,
                             database_url=engine.url.render_as_string(hide_password=False))
    with TestClient(create_app(settings=settings, engine=engine, gateway=FakeGateway(), clock=clock)) as c:
        yield c


@pytest.fixture
def ops(app_client: TestClient) -> TestClient:
    app_client.headers.update(bearer(OPS))
    return app_client


def events_of(engine: Engine, type: str) -> list[Event]:
    with Session(engine) as s:
        return list(s.exec(select(Event).where(Event.type == type).order_by(col(Event.id))))


def test_events_name_the_token_and_keep_the_wall_clock_beside_business_time(
        ops: TestClient, engine: Engine, clock: Clock) -> None:
    before = datetime.now(UTC)
    create_plan(ops)
    [ev] = events_of(engine, EventType.PLAN_CREATED)
    assert ev.actor == "admin:api:ops"
    assert ev.occurred_at == clock.now  # business time: the app's clock (frozen in 2026-01)
    assert before - timedelta(seconds=1) <= ev.recorded_at <= datetime.now(UTC) + timedelta(seconds=1)


def test_run_cycle_is_recorded_with_its_at_and_counts(ops: TestClient, engine: Engine, clock: Clock) -> None:
    create_plan(ops)
    subscribe(ops)
    at = (clock.now + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    assert ops.post("/v1/run-cycle", json={"at": at, "send_emails": False}).status_code == 200
    assert ops.post("/v1/run-cycle", json={"dry_run": True}).status_code == 200  # a dry run changes nothing
    [ev] = events_of(engine, EventType.RUN_CYCLE_COMPLETED)
    payload = json.loads(ev.payload)
    assert ev.actor == "admin:api:ops" and payload["at"] == (clock.now + timedelta(minutes=1)).isoformat()
    assert (payload["due"], payload["succeeded"], payload["collected"]) == (1, 1, {"USD": 1700})


def test_cancel_link_and_email_send_are_recorded_without_the_link(ops: TestClient, engine: Engine) -> None:
    create_plan(ops)
    sub = subscribe(ops)
    r = ops.post(f"/v1/subscriptions/{sub['id']}/cancel-link")
    assert r.status_code == 201, r.text
    [minted] = events_of(engine, EventType.CANCEL_LINK_MINTED)
    assert (minted.actor, minted.subscription_id) == ("admin:api:ops", sub["id"])
    token = r.json()["url"].rsplit("/", 1)[-1]
    assert token not in minted.payload and "url" not in json.loads(minted.payload)
    assert ops.post("/v1/notifications/send").status_code == 200
    [sent] = events_of(engine, EventType.NOTIFICATIONS_SENT)
    assert sent.actor == "admin:api:ops" and "sent" in json.loads(sent.payload)


def test_a_wrong_token_is_recorded_with_the_address_never_the_token(app_client: TestClient, engine: Engine) -> None:
    wrong = "guess-" + "x" * 30
    r = app_client.get("/v1/plans", headers=bearer(wrong))
    assert r.status_code == 401
    [ev] = events_of(engine, EventType.AUTH_FAILED)
    payload = json.loads(ev.payload)
    assert payload["address"] == "testclient" and payload["path"] == "/v1/plans"
    assert wrong not in ev.payload and wrong not in ev.actor


def test_dashboard_login_is_recorded(app_client: TestClient, engine: Engine) -> None:
    r = app_client.post("/dashboard/login", data={"token": FIN}, follow_redirects=False)
    assert r.status_code == 303
    [ev] = events_of(engine, EventType.DASHBOARD_LOGIN)
    assert ev.actor == "admin:api:finance" and FIN not in ev.payload
    assert app_client.get("/dashboard").status_code == 200  # finance reads the dashboard
    bad = app_client.post("/dashboard/login", data={"token": "nope"}, follow_redirects=False)
    assert bad.status_code == 401 and len(events_of(engine, EventType.AUTH_FAILED)) == 1


def test_a_finance_token_reads_reports_and_nothing_else(app_client: TestClient, engine: Engine) -> None:
    fin = bearer(FIN)
    r = app_client.get("/v1/reports/revenue", params={"from": "2026-01-01", "to": "2026-02-01"}, headers=fin)
    assert r.status_code == 200, r.text
    for method, path in [("get", "/v1/subscriptions"), ("get", "/v1/customers"), ("post", "/v1/run-cycle")]:
        denied = getattr(app_client, method)(path, headers=fin)
        assert denied.status_code == 403, (path, denied.text)
        assert denied.headers["content-type"].startswith("application/problem+json")
        assert "read-only" in denied.json()["detail"] and FIN not in denied.text
    plan = {"code": "x", "name": "X", "amount_minor": 100, "currency": "USD", "interval": "month"}
    assert app_client.post("/v1/plans", json=plan, headers=fin).status_code == 403
    with Session(engine) as s:
        assert s.exec(select(Plan)).all() == []
    assert events_of(engine, EventType.RUN_CYCLE_COMPLETED) == []


@pytest.mark.parametrize("entries", ["a:zz-secret-zz:c:d", "ops:zz-secret-zz:root", "ops:zz-secret-zz,ops:other",
                                     ":zz-secret-zz"])
def test_malformed_admin_tokens_are_one_line_without_the_secret(entries: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        load_settings(admin_tokens=entries)
    message = str(exc.value)
    assert "BILLING_ADMIN_TOKENS" in message and "\n" not in message and "zz-secret-zz" not in message


def test_plain_secrets_keep_working_named_in_order() -> None:
    settings = load_settings(admin_tokens="first-secret,ops:second-secret,third-secret")
    assert [(t.name, t.role.value) for t in settings.named_admin_tokens()] == [
        ("token-1", "admin"), ("ops", "admin"), ("token-2", "admin")]
