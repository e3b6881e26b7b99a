"""`billing report ...`: the same numbers as the library, in every format; one-line errors."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from billing_engine.reports import REPORTS, build_query, run_report, to_csv, to_dict
from billing_engine.settings import get_settings
from cli.main import app
from tests.reports.small import RANGE, build

runner = CliRunner()


@pytest.fixture
def cli_db(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    build(engine)
    monkeypatch.setenv("BILLING_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("BILLING_SEGMENT_THRESHOLDS_MINOR", "5000,20000")
    get_settings.cache_clear()
    yield engine
    get_settings.cache_clear()


def test_cli_exports_match_the_library(cli_db: Engine, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    for name in REPORTS:
        q = build_query(start=RANGE[0], end=RANGE[1], by="plan", now=now)
        expected = run_report(cli_db, name, q, thresholds=[5000, 20000])
        res = runner.invoke(app, ["report", name, "--from", RANGE[0], "--to", RANGE[1], "--by", "plan",
                                  "--format", "csv"])
        assert res.exit_code == 0, res.output
        assert res.stdout.replace("\r\n", "\n") == to_csv(expected).replace("\r\n", "\n")
        res = runner.invoke(app, ["report", name, "--from", RANGE[0], "--to", RANGE[1], "--by", "plan", "-f", "json"])
        assert json.loads(res.stdout)["rows"] == to_dict(expected)["rows"]
    out = tmp_path / "mrr.xlsx"
    res = runner.invoke(app, ["report", "mrr", "--from", RANGE[0], "--to", RANGE[1], "-f", "xlsx", "-o", str(out)])
    assert res.exit_code == 0, res.output
    ws = load_workbook(io.BytesIO(out.read_bytes())).active
    assert ws["A1"].value == "period_start (UTC)" and ws.max_row > 1
    res = runner.invoke(app, ["report", "churn", "--from", RANGE[0], "--to", RANGE[1]])
    assert res.exit_code == 0 and "Churn" in res.stdout and "2026-02" in res.stdout


@pytest.mark.parametrize("args,needle", [
    (["--from", "2026-02-30"], "--from"),
    (["--by", "tier"], "--by"),
    (["--format", "pdf"], "--format"),
    (["--currency", "ABC"], "--currency"),
])
def test_bad_options_fail_with_one_line(sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch,
                                        args: list[str], needle: str) -> None:
    monkeypatch.setenv("BILLING_DATABASE_URL", sqlite_engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    try:
        res = runner.invoke(app, ["report", "churn", *args])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 2
    assert needle in res.output and "Traceback" not in res.output


def test_report_refresh_builds_then_folds_in(cli_db: Engine) -> None:
    res = runner.invoke(app, ["report", "refresh"])
    assert res.exit_code == 0 and "rebuilt" in res.stdout, res.output
    res = runner.invoke(app, ["report", "refresh"])
    assert res.exit_code == 0 and "folded in the events after" in res.stdout, res.output
    res = runner.invoke(app, ["report", "refresh", "--rebuild"])
    assert res.exit_code == 0 and "rebuilt" in res.stdout, res.output
