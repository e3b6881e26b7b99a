"""The `billing` command as an admin uses it: real process, real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BILLING = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PYTHONPATH": str(ROOT)}
    env.pop("BILLING_GATEWAY", None)

    def _run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([*BILLING, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        if ok:
            assert p.returncode == 0, p.stderr
        return p

    return _run


def _json(p: subprocess.CompletedProcess[str]):  # type: ignore[no-untyped-def]
    return json.loads(p.stdout)


def test_admin_flow_from_plan_to_first_charge(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "terms.txt").write_text("We charge 7.00 USD monthly until you cancel.")
    at = "2026-01-10T09:00:00Z"
    plan = _json(run("plan", "create", "--code", "basic", "--name", "Basic", "--amount", "7.00", "--currency", "usd",
                     "--at", at, "--json"))
    assert (plan["amount_minor"], plan["currency"]) == (700, "USD")
    cust = _json(run("customer", "create", "--email", "ada@example.com", "--name", "Ada", "--at", at, "--json"))
    pm = _json(run("payment-method", "add", cust["id"], "--token", "pm_card_visa", "--consent-ip", "203.0.113.9",
                   "--consent-user-agent", "Mozilla/5.0", "--terms-version", "v1", "--terms-file", "terms.txt",
                   "--consent-amount", "7.00", "--consent-currency", "USD", "--at", at, "--json"))
    assert (pm["brand"], pm["last4"]) == ("visa", "4242")
    sub = _json(run("subscribe", "--customer", cust["id"], "--plan", "basic", "--payment-method", pm["id"], "--defer-first-charge",
                    "--at", at, "--json"))
    assert sub["status"] == "incomplete"
    dry = _json(run("run-cycle", "--at", at, "--dry-run", "--json"))
    assert [w["subscription_id"] for w in dry["would_charge"]] == [sub["id"]]
    summary = _json(run("run-cycle", "--at", at, "--json"))
    assert (summary["succeeded"], summary["collected"]) == (1, {"USD": 700})
    again = _json(run("run-cycle", "--at", at, "--json"))
    assert again["charged"] == 0
    shown = _json(run("subscription", "show", sub["id"], "--json"))
    assert shown["status"] == "active" and shown["current_period_end"].startswith("2026-02-10")
    assert "invoice.paid" in [e["type"] for e in shown["events"]]
    canceled = _json(run("subscription", "cancel", sub["id"], "--reason", "too_expensive", "--at", at, "--json"))
    assert canceled["cancel_at_period_end"] and canceled["cancellation_kind"] == "voluntary"
    listed = _json(run("subscription", "list", "--json"))
    assert len(listed) == 1


@pytest.mark.parametrize("args,code,needle", [
    (["plan", "create", "--code", "b", "--name", "B", "--amount", "1.999", "--currency", "USD"], 2, "amount"),
    (["plan", "create", "--code", "b", "--name", "B", "--amount", "1", "--currency", "XXQ"], 2, "currency"),
    (["plan", "create", "--code", "b", "--name", "B", "--amount", "1", "--currency", "USD", "--interval", "fortnight"], 2, "interval"),
    (["customer", "create", "--email", "not-an-email"], 2, "email"),
    (["subscription", "show", "sub_nope"], 3, "no subscription"),
    (["run-cycle", "--at", "yesterday-ish"], 2, "--at"),
])
def test_bad_input_is_one_line_and_non_zero(run, args: list[str], code: int, needle: str) -> None:  # type: ignore[no-untyped-def]
    p = run(*args, ok=False)
    assert p.returncode == code
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr


def test_card_number_is_refused_by_the_cli(run) -> None:  # type: ignore[no-untyped-def]
    cust = _json(run("customer", "create", "--email", "a@example.com", "--json"))
    p = run("payment-method", "add", cust["id"], "--token", "4242424242424242", "--consent-ip", "203.0.113.9",
            "--consent-user-agent", "UA", "--terms-version", "v1", "--terms-text", "t", "--consent-amount", "1.00",
            "--consent-currency", "USD", ok=False)
    assert p.returncode == 2 and "card number" in p.stderr
    assert _json(run("payment-method", "list", cust["id"], "--json")) == []


def test_invalid_setting_stops_with_one_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "BILLING_DATABASE_URL": "mysql://nope", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([*BILLING, "plan", "list"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert p.returncode == 78 and "BILLING_DATABASE_URL" in p.stderr and "Traceback" not in p.stderr


def test_run_cycle_folds_its_changes_into_the_report_rollups(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """After the charges, run-cycle brings the report rollups up to date, so the first report
    finance opens does not wait for the fold; --no-report-refresh leaves it to that report, and
    rollups never built are left to the first report (a build reads every invoice)."""
    from sqlalchemy import select
    from typer.testing import CliRunner

    from billing_engine.db import make_engine
    from billing_engine.reports import rollups
    from billing_engine.settings import get_settings
    from cli.main import app

    at = "2026-01-10T09:00:00Z"
    runner = CliRunner()

    def setup(*args: str) -> str:  # the set-up commands in this process (their own process: the test above)
        res = runner.invoke(app, list(args))
        assert res.exit_code == 0, res.output
        return res.stdout

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BILLING_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
        mp.delenv("BILLING_GATEWAY", raising=False)
        get_settings.cache_clear()
        try:
            setup("plan", "create", "--code", "basic", "--name", "Basic", "--amount", "7.00", "--currency", "usd",
                  "--at", at)
            subs = []
            for i in range(3):
                cust = json.loads(setup("customer", "create", "--email", f"r{i}@example.com", "--at", at, "--json"))
                pm = json.loads(setup("payment-method", "add", cust["id"], "--token", "pm_card_visa", "--consent-ip",
                                      "203.0.113.9", "--consent-user-agent", "Mozilla/5.0", "--terms-version", "v1",
                                      "--terms-text", "We charge 7.00 USD monthly until you cancel.",
                                      "--consent-amount", "7.00", "--consent-currency", "USD", "--at", at, "--json"))
                subs.append(json.loads(setup("subscribe", "--customer", cust["id"], "--plan", "basic",
                                             "--payment-method", pm["id"], "--defer-first-charge", "--at", at,
                                             "--json"))["id"])
        finally:
            get_settings.cache_clear()
    summary = _json(run("run-cycle", "--at", at, "--json", "--limit", "1"))
    assert summary["succeeded"] == 1 and "report_refresh" not in summary  # never built: not built here
    run("report", "refresh")  # the admin builds them once
    summary = _json(run("run-cycle", "--at", at, "--json", "--no-report-refresh", "--limit", "1"))
    assert summary["succeeded"] == 1 and "report_refresh" not in summary
    summary = _json(run("run-cycle", "--at", at, "--json"))
    assert summary["succeeded"] == 1 and summary["report_refresh"]["events_folded"] > 0
    eng = make_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    try:
        with eng.connect() as conn:  # every charge is in the rollups already (the --no-report-refresh run's too)
            paid = conn.execute(select(rollups.first_paid_table)).all()
        assert len(paid) == 3
        assert rollups.differences(eng) == []
        again = rollups.refresh(eng)  # what the next report pays: nothing left to fold
        assert again.folded_to == again.folded_after
    finally:
        eng.dispose()
