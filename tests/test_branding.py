"""The seller's name, address, support address and tax id are settings: the demo sets
them consistently, a production start without them warns, and e-mails show them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from billing_engine.demo import DEMO_SELLER
from billing_engine.settings import branding_warnings, load_settings

ROOT = Path(__file__).resolve().parents[1]
STRONG = "k" * 43


def test_production_without_the_seller_warns_about_each_placeholder() -> None:
    prod = load_settings(env="production", gateway="stripe", secret_key=STRONG)
    warnings = branding_warnings(prod)
    assert any("BILLING_COMPANY_NAME" in w and "Your Newsletter" in w for w in warnings)
    assert any("BILLING_SUPPORT_EMAIL" in w and "support@localhost" in w for w in warnings)
    assert any("BILLING_COMPANY_ADDRESS" in w for w in warnings)
    assert any("BILLING_COMPANY_TAX_ID" in w for w in warnings)
    named = load_settings(env="production", gateway="stripe", secret_key=STRONG, **DEMO_SELLER)
    assert branding_warnings(named) == []
    assert branding_warnings(load_settings(env="development")) == []  # only production warns


def test_a_production_run_cycle_prints_the_warning_and_still_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(PYTHONPATH=str(ROOT), BILLING_ENV="production", BILLING_GATEWAY="fake", BILLING_SECRET_KEY=STRONG,
               BILLING_DATABASE_URL=f"sqlite:///{tmp_path / 'p.db'}", BILLING_MAIL_TRANSPORT="none")
    p = subprocess.run([sys.executable, "-m", "cli.main", "db", "upgrade"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    p = subprocess.run([sys.executable, "-m", "cli.main", "run-cycle", "--json"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "warning: BILLING_COMPANY_NAME is not set" in p.stderr


def test_the_demo_names_one_seller_everywhere() -> None:
    import json

    plans = (ROOT / "fixtures" / "plans.json").read_text(encoding="utf-8")
    assert DEMO_SELLER["company_name"] in DEMO_SELLER["mail_from"]
    assert DEMO_SELLER["support_email"].endswith("@ledger.example")
    assert "Your Newsletter" not in plans and "localhost" not in "".join(DEMO_SELLER.values())
    # the seller is named by the settings only: a plan named "The Ledger — Basic (monthly)" made
    # subjects read "Your The Ledger — Basic (monthly) subscription renews ..."
    assert not [p["name"] for p in json.loads(plans) if DEMO_SELLER["company_name"] in p["name"]]


def test_the_api_words_its_branding_warnings_as_the_cli_does(caplog: pytest.LogCaptureFixture) -> None:
    """`"event": "warning: ..."` in every process's log (docs/operations.md), the API's too."""
    import logging

    from api.app import create_app

    prod = load_settings(env="production", gateway="fake", secret_key=STRONG, admin_tokens=["a" * 40],
                         database_url="sqlite://")
    with caplog.at_level(logging.WARNING, logger="billing.api"):
        create_app(settings=prod)
    lines = [r.getMessage() for r in caplog.records if r.name == "billing.api"]
    assert any("BILLING_COMPANY_NAME is not set" in line for line in lines)
    assert all(line.startswith("warning: ") for line in lines), lines
