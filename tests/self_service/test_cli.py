"""`billing account-link CUSTOMER`: the customer's self-service link."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from billing_engine import links
from billing_engine.db import transaction
from billing_engine.settings import get_settings
from tests.factories import make_subscription


@pytest.fixture
def cli_env(sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("BILLING_DATABASE_URL", str(sqlite_engine.url))
    monkeypatch.setenv("BILLING_SECRET_KEY", "cli-secret-" + "x" * 30)
    monkeypatch.setenv("BILLING_PUBLIC_BASE_URL", "https://news.example")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_account_link_prints_a_link_bound_to_the_customer(cli_env: None, sqlite_engine: Engine, now: datetime) -> None:
    from cli.main import app

    with transaction(sqlite_engine) as s:
        customer_id = make_subscription(s, now).customer_id
    result = CliRunner().invoke(app, ["account-link", customer_id, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["customer_id"] == customer_id and out["url"].startswith("https://news.example/account/")
    token = out["url"].rsplit("/", 1)[1]
    assert links.verify_account_token(get_settings(), token) == customer_id

    result = CliRunner().invoke(app, ["account-link", "cus_nobody"])
    assert result.exit_code == 3 and result.output.strip().startswith("error: customer:")
