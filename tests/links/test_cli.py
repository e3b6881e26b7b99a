"""`billing cancel-link` and `billing notifications send`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from billing_engine import links, notifications
from billing_engine.db import transaction
from billing_engine.settings import get_settings
from tests.factories import make_subscription


@pytest.fixture
def cli_env(sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("BILLING_DATABASE_URL", str(sqlite_engine.url))
    monkeypatch.setenv("BILLING_SECRET_KEY", "cli-secret-" + "x" * 30)
    monkeypatch.setenv("BILLING_PUBLIC_BASE_URL", "https://news.example")
    monkeypatch.setenv("BILLING_MAIL_TRANSPORT", "file")
    monkeypatch.setenv("BILLING_MAIL_DIR", str(tmp_path / "mail"))
    get_settings.cache_clear()
    yield tmp_path / "mail"
    get_settings.cache_clear()


def _app():  # type: ignore[no-untyped-def]
    from cli.main import app

    return app


def test_cancel_link_prints_a_working_link(cli_env: Path, sqlite_engine: Engine, now: datetime) -> None:
    with transaction(sqlite_engine) as s:
        sub_id = make_subscription(s, now).id
    result = CliRunner().invoke(_app(), ["cancel-link", sub_id, "--json", "--at", "2026-01-15T09:00:00Z"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["subscription_id"] == sub_id and data["expires_at"] == "2026-03-16T09:00:00Z"
    token = data["url"].removeprefix("https://news.example/cancel/")
    assert links.verify_cancel_token(get_settings(), token, now) == sub_id

    plain = CliRunner().invoke(_app(), ["cancel-link", sub_id])
    assert plain.exit_code == 0 and plain.stdout.strip().startswith("https://news.example/cancel/")


def test_cancel_link_for_an_unknown_subscription_fails_with_one_line(cli_env: Path) -> None:
    result = CliRunner().invoke(_app(), ["cancel-link", "sub_nope"])
    assert result.exit_code == 3
    assert "no subscription 'sub_nope'" in result.output
    assert "Traceback" not in result.output


def test_notifications_send_flushes_the_outbox(cli_env: Path, sqlite_engine: Engine, now: datetime) -> None:
    with transaction(sqlite_engine) as s:
        sub = make_subscription(s, now)
        notifications.enqueue(s, notifications.Kind.RECEIPT, customer_id=sub.customer_id, subscription_id=sub.id,
                              dedupe_key="r1", at=now, payload={"amount_minor": 1700, "currency": "USD"})
    result = CliRunner().invoke(_app(), ["notifications", "send", "--at", "2026-01-15T09:00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # the receipt and the sign-up confirmation
    assert data["sent"] == 2 and data["outbox"]["sent"] == 2 and data["outbox"]["pending"] == 0
    assert len(list(cli_env.glob("*.eml"))) == 2
    again = CliRunner().invoke(_app(), ["notifications", "send", "--json"])
    assert json.loads(again.stdout)["sent"] == 0

    listed = CliRunner().invoke(_app(), ["notifications", "list", "--json", "--status", "sent"])
    assert sorted(n["kind"] for n in json.loads(listed.stdout)) == ["receipt", "subscription_confirmed"]
    bad = CliRunner().invoke(_app(), ["notifications", "list", "--status", "lost"])
    assert bad.exit_code == 2


def test_cancel_link_refuses_to_mint_a_thousand_year_link(cli_env: Path, sqlite_engine: Engine, now: datetime) -> None:
    with transaction(sqlite_engine) as s:
        sub_id = make_subscription(s, now).id
    result = CliRunner().invoke(_app(), ["cancel-link", sub_id, "--at", "2999-01-01T00:00:00Z"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --at: a link issued more than 340 days ahead would not work (no link lives longer than 400 days)"]
