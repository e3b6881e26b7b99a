"""The dashboard page: login form -> HttpOnly cookie, inline SVG charts, the reports' numbers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.app import create_app
from billing_engine.gateway.fake import FakeGateway
from billing_engine.money import format_minor
from billing_engine.reports import build_query, mrr_report
from billing_engine.settings import load_settings
from tests.reports.small import RANGE, build

TOKEN = "dash-token"
NOW = datetime(2026, 4, 2, tzinfo=UTC)


def make_client(engine: Engine, tokens: list[str] | None = None) -> TestClient:
    settings = load_settings(admin_tokens=[TOKEN] if tokens is None else tokens, secret_key="s" * 40)
    return TestClient(create_app(settings=settings, engine=engine, gateway=FakeGateway(), clock=lambda: NOW))


def login(client: TestClient) -> None:
    r = client.post("/dashboard/login", data={"token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert TOKEN not in cookie


def test_dashboard_shows_charts_and_the_report_figures(engine: Engine) -> None:
    build(engine)
    client = make_client(engine)
    login(client)
    r = client.get("/dashboard", params={"from": RANGE[0], "to": RANGE[1]})
    assert r.status_code == 200
    assert "no-store" in r.headers["cache-control"] and "frame-ancestors 'none'" in r.headers["content-security-policy"]
    html = r.text
    assert html.count("<svg") == 10 and "<script" not in html  # 5 charts, each for desktop and for phones
    assert "Revenue retention (GRR / NRR)" in html and "Involuntary churn funnel" in html and "Cohorts:" in html
    for chunk in html.split("<svg")[1:]:
        ET.fromstring("<svg" + chunk.split("</svg>")[0] + "</svg>")  # each chart is well-formed SVG
    mrr = mrr_report(engine, build_query(start=RANGE[0], end=RANGE[1], currency="USD", now=NOW))
    assert f"{format_minor(mrr.rows[-1]['mrr_end_minor'], 'USD')} USD" in html  # the MRR tile
    assert "Net revenue by plan (USD)" in html and "pro-year" in html
    # the download links work with the same cookie
    r = client.get("/dashboard/export/churn", params={"from": RANGE[0], "to": RANGE[1], "format": "csv"})
    assert r.status_code == 200 and r.text.startswith("period_start,")
    # another currency
    assert "EUR" in client.get("/dashboard", params={"currency": "EUR"}).text


def test_dashboard_needs_a_login(sqlite_engine: Engine) -> None:
    client = make_client(sqlite_engine)
    r = client.get("/dashboard")
    assert r.status_code == 401 and 'name="token"' in r.text
    assert client.get("/dashboard/export/churn").status_code == 401
    r = client.post("/dashboard/login", data={"token": "wrong"})
    assert r.status_code == 401 and "not valid" in r.text
    assert client.get("/dashboard?token=" + TOKEN).status_code == 401  # tokens in URLs are not accepted
    assert client.get("/dashboard", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    client.cookies.set("billing_dashboard", "forged.value.sig", path="/dashboard")
    assert client.get("/dashboard").status_code == 401


def test_removing_the_token_ends_its_sessions(sqlite_engine: Engine) -> None:
    client = make_client(sqlite_engine)
    login(client)
    assert client.get("/dashboard").status_code == 200
    other = make_client(sqlite_engine, tokens=["another-token"])
    other.cookies = client.cookies
    assert other.get("/dashboard").status_code == 401
    r = client.post("/dashboard/logout", follow_redirects=False)
    assert r.status_code == 303 and "billing_dashboard=" in r.headers["set-cookie"]


def test_dashboard_is_disabled_without_admin_tokens(sqlite_engine: Engine) -> None:
    client = make_client(sqlite_engine, tokens=[])
    r = client.get("/dashboard")
    assert r.status_code == 503 and "BILLING_ADMIN_TOKENS" in r.text


@pytest.mark.parametrize("query", ["from=2026-13-01", "to=2026-01-01&from=2026-02-01"])
def test_bad_ranges_show_an_error_not_a_crash(sqlite_engine: Engine, query: str) -> None:
    client = make_client(sqlite_engine)
    r = client.get("/dashboard?" + query, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 422 and 'class="error"' in r.text
