"""``POST /v1/imports``: the same imports through the admin API."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from api.app import create_app
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Subscription
from billing_engine.settings import load_settings
from tests.api.conftest import AUTH, TOKEN, Clock
from tests.e2e_stripe.sim_server import serving
from tests.test_import_csv import CSV, HEADER, ROWS
from tests.test_import_stripe import account


def _subs(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(Subscription)).one())


def test_csv_import_dry_run_then_real_then_again(client: TestClient, engine: Engine) -> None:
    dry = client.post("/v1/imports", json={"source": "csv", "csv": CSV, "dry_run": True})
    assert dry.status_code == 200 and dry.json()["created"]["subscriptions"] == 5 and _subs(engine) == 0
    done = client.post("/v1/imports", json={"source": "csv", "csv": CSV})
    assert done.status_code == 201, done.text
    assert done.json()["created"] == {"plans": 2, "customers": 4, "payment_methods": 4, "consents": 5,
                                      "subscriptions": 5}
    again = client.post("/v1/imports", json={"source": "csv", "csv": CSV})
    assert again.json()["created"]["subscriptions"] == 0 and again.json()["already_imported"] == 5
    assert _subs(engine) == 5


def test_bad_rows_are_a_422_naming_each_line_and_nothing_changes(client: TestClient, engine: Engine) -> None:
    bad = "\n".join([HEADER, ROWS[0], ROWS[1].replace("2026-06-15T00:00:00Z", "2026-06-16T00:00:00Z")])
    r = client.post("/v1/imports", json={"source": "csv", "csv": bad})
    assert r.status_code == 422 and r.json()["field"] == "csv"
    assert [(e["line"], e["field"]) for e in r.json()["errors"]] == [(3, "csv.current_period_end")]
    assert client.post("/v1/imports", json={"source": "csv"}).status_code == 422
    assert client.post("/v1/imports", json={"source": "paypal"}).status_code == 422
    assert _subs(engine) == 0


def test_stripe_import_through_the_api(engine: Engine) -> None:
    a, _ = account()
    with serving(a) as base:  # type: ignore[arg-type]
        settings = load_settings(admin_tokens=[TOKEN], database_url=engine.url.render_as_string(hide_password=False),
                                 stripe_api_key="sk_test_api", stripe_api_base=base, gateway_rate_per_second=1000)
        app = create_app(settings=settings, engine=engine, gateway=FakeGateway(),
                         clock=Clock(datetime(2026, 3, 10, 12, tzinfo=UTC)))
        with TestClient(app) as c:
            r = c.post("/v1/imports", json={"source": "stripe", "dry_run": True}, headers=AUTH)
            assert r.status_code == 200, r.text
            reasons = sorted(u["reason"] for u in r.json()["unsupported"])
            assert reasons[0].startswith("2 items per subscription") and "is metered" in reasons[1]
            r = c.post("/v1/imports", json={"source": "stripe"}, headers=AUTH)
            assert r.status_code == 201 and r.json()["created"]["subscriptions"] == 5
    assert _subs(engine) == 5
