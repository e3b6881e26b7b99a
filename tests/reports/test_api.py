"""GET /v1/reports/{name}: JSON, CSV and XLSX downloads, admin only, 422 naming the field."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy.engine import Engine

from api.app import create_app
from billing_engine.gateway.fake import FakeGateway
from billing_engine.reports import REPORTS, build_query, run_report, to_csv, to_dict
from billing_engine.settings import load_settings
from tests.reports.small import RANGE, build

TOKEN = "reports-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 4, 2, tzinfo=UTC)


def make_client(engine: Engine) -> TestClient:
    app = create_app(settings=load_settings(admin_tokens=[TOKEN]), engine=engine, gateway=FakeGateway(),
                     clock=lambda: NOW)
    return TestClient(app)


@pytest.fixture
def client(engine: Engine) -> TestClient:
    build(engine)
    return make_client(engine)


@pytest.fixture
def bare_client(sqlite_engine: Engine) -> TestClient:
    """No data, SQLite only: parameter checking does not depend on the backend."""
    return make_client(sqlite_engine)


def test_reports_are_the_same_in_json_csv_xlsx_and_the_library(client: TestClient, engine: Engine) -> None:
    for name in REPORTS:
        for by in (None, "plan"):
            params = {"from": RANGE[0], "to": RANGE[1], **({"by": by} if by else {})}
            q = build_query(start=RANGE[0], end=RANGE[1], by=by, now=NOW)
            expected = run_report(engine, name, q)
            r = client.get(f"/v1/reports/{name}", params=params, headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.json()["rows"] == to_dict(expected)["rows"]
            assert r.json()["rows"], name
            r = client.get(f"/v1/reports/{name}", params={**params, "format": "csv"}, headers=AUTH)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
            assert f'filename="{name}_2026-01-01_2026-04-01.csv"' in r.headers["content-disposition"]
            assert r.text == to_csv(expected)
    r = client.get("/v1/reports/revenue", params={"from": RANGE[0], "to": RANGE[1], "format": "xlsx"}, headers=AUTH)
    ws = load_workbook(io.BytesIO(r.content)).active
    header = [c.value for c in ws[1]]
    gross = [row[header.index("gross")] for row in ws.iter_rows(min_row=2, values_only=True)]
    assert all(isinstance(g, int | float) for g in gross) and sum(gross) > 0
    # recovery: money, rates and days are typed cells too
    r = client.get("/v1/reports/recovery", params={"from": RANGE[0], "to": RANGE[1], "format": "xlsx"}, headers=AUTH)
    ws = load_workbook(io.BytesIO(r.content)).active
    header = [c.value for c in ws[1]]
    rec = [row for row in ws.iter_rows(min_row=2, values_only=True) if row[header.index("recovered_invoices")]]
    assert rec and rec[0][header.index("recovered")] == 17 and rec[0][header.index("recovery_rate")] == 1
    assert rec[0][header.index("automatic_retry_days")] > 0


    r = client.get("/v1/reports/revenue", params={"from": RANGE[0], "to": RANGE[1], "currency": "eur"},
                   headers=AUTH)
    assert {row["currency"] for row in r.json()["rows"]} == {"EUR"}


@pytest.mark.parametrize("params,field", [
    ({"from": "2026-02-30"}, "from"),
    ({"to": "soon"}, "to"),
    ({"from": "2026-03-01", "to": "2026-01-01"}, "from"),
    ({"by": "customer"}, "by"),
    ({"currency": "ABC"}, "currency"),
    ({"format": "pdf"}, "format"),
    ({"period": "decade"}, "period"),
    ({"from": "2" * 500}, "from"),
])
def test_bad_parameters_are_422_naming_the_field(bare_client: TestClient, params: dict[str, str],
                                                 field: str) -> None:
    r = bare_client.get("/v1/reports/churn", params=params, headers=AUTH)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


def test_unknown_report_is_422(bare_client: TestClient) -> None:
    r = bare_client.get("/v1/reports/profit", headers=AUTH)
    assert r.status_code == 422 and r.json()["field"] == "name"


def test_reports_need_an_admin_token(bare_client: TestClient) -> None:
    assert bare_client.get("/v1/reports/churn").status_code == 401
    assert bare_client.get("/v1/reports/churn", headers={"Authorization": "Bearer nope"}).status_code == 401
