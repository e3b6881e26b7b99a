"""`billing report ...`: the same numbers as the library, in every format; one-line errors."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from billing_engine import events
from billing_engine.db import transaction
from billing_engine.models import Event
from billing_engine.reports import REPORTS, build_query, rollups, run_report, to_csv, to_dict
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


def _refresh(*args: str) -> str:
    res = runner.invoke(app, ["report", "refresh", *args])
    assert res.exit_code == 0, res.output
    return " ".join(res.stdout.split())  # the console wraps long lines


def _customer_created(engine: Engine) -> None:
    with transaction(engine) as s:
        events.record(s, events.EventType.CUSTOMER_CREATED, at=datetime.now(UTC), customer_id="cus_late")


def test_report_refresh_says_what_it_folded_in_and_what_is_provisional(cli_db: Engine) -> None:
    with Session(cli_db) as s:
        n = s.exec(select(func.count()).select_from(Event)).one()
    young = f"{n} events recorded in the last 2 minutes are in the reports provisionally: the next refresh checks them again"
    out = _refresh()  # every event was just recorded: all younger than the fold's lag
    assert out.startswith(f"Report rollups rebuilt from the raw data: {n} events counted (up to event #"), out
    assert young in out, out
    out = _refresh()
    assert out.startswith("Report rollups already up to date: no new events since the last refresh."), out
    assert young in out, out
    assert "watermark" not in out and "#0" not in out, out
    _customer_created(cli_db)
    out = _refresh()
    assert out.startswith(f"Report rollups updated: 1 event folded in (events #{n + 1} to #{n + 1})."), out
    assert f"{n + 1} events recorded in the last 2 minutes are in the reports provisionally" in out, out
    data = json.loads(runner.invoke(app, ["report", "refresh", "--json"]).stdout)
    assert {k: data[k] for k in ("rebuilt", "from_event_id", "to_event_id")} == {
        "rebuilt": False, "from_event_id": 0, "to_event_id": 0}  # the keys it always had
    assert (data["folded_events"], data["provisional_events"], data["last_event_id"], data["lag_seconds"]) == (
        0, n + 1, n + 1, 120)
    out = _refresh("--rebuild")
    assert out.startswith(f"Report rollups rebuilt from the raw data: {n + 1} events counted"), out


def test_report_refresh_of_settled_events_mentions_nothing_provisional(
    cli_db: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rollups, "LAG", timedelta(0))  # every event counts as settled
    assert "provisional" not in _refresh()
    _customer_created(cli_db)
    out = _refresh()
    assert out == "Report rollups updated: 1 event folded in (events #{0} to #{0}).".format(
        json.loads(runner.invoke(app, ["report", "refresh", "--json"]).stdout)["last_event_id"]), out
