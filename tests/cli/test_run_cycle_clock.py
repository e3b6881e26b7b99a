"""`billing run-cycle` without --at bills as of the real clock (frozen here with freezegun)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner

from billing_engine.db import make_engine, transaction, upgrade
from billing_engine.settings import get_settings
from cli.main import app
from tests.factories import make_subscription


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'clock.db'}"
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url  # type: ignore[misc]
    get_settings.cache_clear()


def test_run_cycle_uses_now_when_no_at_is_given(cli_db: str) -> None:
    eng = make_engine(cli_db)
    upgrade(eng)
    start = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
    with transaction(eng) as s:
        make_subscription(s, start)
    runner = CliRunner()
    with freeze_time("2026-01-09 12:00:00"):  # the day before it starts: nothing due
        before = runner.invoke(app, ["run-cycle", "--json"])
    with freeze_time("2026-01-10 09:00:01"):
        due = runner.invoke(app, ["run-cycle", "--json", "--limit", "5"])
    assert before.exit_code == 0 and json.loads(before.stdout)["due"] == 0
    assert due.exit_code == 0, due.stdout
    summary = json.loads(due.stdout)
    assert summary["succeeded"] == 1 and summary["at"].startswith("2026-01-10T09:00:01")
