"""Report inputs at the edges: dates near year 1 and 9999, an --output that cannot be written.
A clear 422 / one line and exit 2 naming the field, never a 500 or a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from billing_engine.gateway.fake import FakeGateway
from billing_engine.reports import REPORTS
from tests.api.conftest import AUTH, Clock, make_client

ROOT = Path(__file__).resolve().parents[2]
EDGES = [
    ({"to": "9999-12-31"}, "to"),
    ({"to": "9999-12-31T23:59:59-01:00"}, "to"),
    ({"from": "0001-01-01T00:00:00+01:00"}, "from"),
    ({"to": "0001-01-15"}, "to"),
    ({"from": "9999-12-31", "to": "9999-12-31"}, "to"),
]


@pytest.fixture
def client(sqlite_engine: Engine, now: object) -> TestClient:
    c = make_client(sqlite_engine, FakeGateway(), Clock(now))  # type: ignore[arg-type]
    c.headers.update(AUTH)
    return c


@pytest.mark.parametrize("name", REPORTS)
@pytest.mark.parametrize(("query", "field"), EDGES)
def test_a_report_date_out_of_range_is_a_422_naming_the_field(client: TestClient, name: str,
                                                             query: dict[str, str], field: str) -> None:
    r = client.get(f"/v1/reports/{name}", params=query)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


@pytest.mark.parametrize("name", REPORTS)
def test_cli_report_to_year_9999_is_one_line_and_exit_2(name: str, tmp_path: Path) -> None:
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "cli.main", "report", name, "--to", "9999-12-31"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: --to: ")


@pytest.mark.parametrize("fmt", ["csv", "table"])
@pytest.mark.parametrize("where", ["directory", "missing-directory"])
def test_cli_report_output_that_cannot_be_written_is_one_line_and_exit_2(fmt: str, where: str,
                                                                        tmp_path: Path) -> None:
    target = tmp_path if where == "directory" else tmp_path / "no" / "such" / "dir" / "r.csv"
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "cli.main", "report", "churn", "--format", fmt, "--output", str(target)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: --output: "), p.stderr
