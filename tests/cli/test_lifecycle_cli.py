"""Lifecycle commands as an admin runs them: real processes, a SQLite file and a durable
fake-gateway ledger shared by the processes (so money is counted across commands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from billing_engine.gateway.fake import FakeGateway
from tests.cli.inproc import invoke

BILLING = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]
AT = "2026-03-01T00:00:00Z"


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PYTHONPATH": str(ROOT),
           "BILLING_FAKE_LEDGER": str(tmp_path / "ledger.db")}
    env.pop("BILLING_GATEWAY", None)

    def _run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([*BILLING, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        if ok:
            assert p.returncode == 0, p.stderr
        return p

    def _setup(*args: str) -> subprocess.CompletedProcess[str]:  # set-up, in this process (tests/cli/inproc.py)
        p = invoke(env, tmp_path, *args)
        assert p.returncode == 0, p.stderr
        return p

    _run.setup = _setup  # type: ignore[attr-defined]
    return _run


def _json(p: subprocess.CompletedProcess[str]):  # type: ignore[no-untyped-def]
    return json.loads(p.stdout)


def _charges(tmp_path: Path) -> list[tuple[str, int]]:
    return [(e.kind, e.amount_minor) for e in FakeGateway(ledger_path=str(tmp_path / "ledger.db")).ledger]


def _card(run, cust: str, token: str) -> str:  # type: ignore[no-untyped-def]
    return str(_json(run.setup("payment-method", "add", cust, "--token", token, "--consent-ip", "203.0.113.9",
                         "--consent-user-agent", "Mozilla/5.0", "--terms-version", "v1", "--terms-text", "monthly",
                         "--consent-amount", "30.00", "--consent-currency", "USD", "--at", AT, "--json"))["id"])


def test_subscribe_charges_at_once_and_a_decline_is_one_line_exit_5(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run.setup("plan", "create", "--code", "basic", "--name", "Basic", "--amount", "10.00", "--currency", "USD", "--at", AT)
    run.setup("plan", "create", "--code", "pro", "--name", "Pro", "--amount", "30.00", "--currency", "USD", "--at", AT)
    cust = _json(run.setup("customer", "create", "--email", "ada@example.com", "--at", AT, "--json"))["id"]
    bad = _card(run, cust, "pm_card_chargeDeclinedInsufficientFunds")
    p = run("subscribe", "--customer", cust, "--plan", "basic", "--payment-method", bad, "--at", AT, ok=False)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 5 and len(lines) == 1 and "insufficient_funds" in lines[0]
    assert "nothing was charged" in lines[0] and _charges(tmp_path) == []
    good = _card(run, cust, "pm_card_visa")
    sub = _json(run("subscribe", "--customer", cust, "--plan", "basic", "--payment-method", good, "--at", AT,
                    "--metadata", "source=cli", "--json"))
    assert sub["status"] == "active" and sub["first_charge"]["status"] == "succeeded"
    assert sub["metadata"] == {"source": "cli"}
    assert _charges(tmp_path) == [("charge", 1000)]
    assert _json(run("run-cycle", "--at", AT, "--json"))["charged"] == 0

    mid = "2026-03-16T00:00:00Z"
    pv = _json(run("subscription", "preview-change", sub["id"], "--plan", "pro", "--at", mid, "--json"))
    assert (pv["credit_minor"], pv["charge_minor"], pv["amount_due_now_minor"]) == (516, 1548, 1032)
    changed = _json(run("subscription", "change-plan", sub["id"], "--preview-token", pv["preview_token"],
                        "--at", "2026-03-16T00:05:00Z", "--json"))
    assert changed["plan_code"] == "pro" and changed["change"] == "changed"
    assert _charges(tmp_path) == [("charge", 1000), ("charge", 1032)]
    down = _json(run("subscription", "change-plan", sub["id"], "--plan", "basic", "--at", mid, "--json"))
    assert down["change"] == "scheduled" and down["plan_code"] == "pro"
    run("run-cycle", "--at", "2026-03-25T00:00:00Z", "--json")  # the renewal's reminder, a week ahead
    summary = _json(run("run-cycle", "--at", "2026-04-01T00:00:00Z", "--json"))
    assert summary["collected"] == {"USD": 1000}  # the downgrade took effect at the renewal
    euro = run("plan", "create", "--code", "eu", "--name", "EU", "--amount", "9.00", "--currency", "EUR", "--at", AT)
    assert euro.returncode == 0
    p = run("subscription", "change-plan", sub["id"], "--plan", "eu", "--at", mid, ok=False)
    assert p.returncode == 2 and "USD -> EUR" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_edits_guarantee_and_reactivation_from_the_cli(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("plan", "create", "--code", "basic", "--name", "Basic", "--amount", "10.00", "--currency", "USD", "--at", AT)
    plan = _json(run("plan", "edit", "basic", "--guarantee-days", "14", "--metadata", "tier=entry", "--json"))
    assert (plan["guarantee_days"], plan["metadata"]) == (14, {"tier": "entry"})
    assert plan["customer_can_pause"] is False
    assert _json(run("plan", "edit", "basic", "--customer-pause", "--json"))["customer_can_pause"] is True
    assert _json(run("plan", "edit", "basic", "--no-customer-pause", "--json"))["customer_can_pause"] is False
    cust = _json(run.setup("customer", "create", "--email", "ada@example.com", "--at", AT, "--json"))["id"]
    pm = _card(run, cust, "pm_card_visa")
    c = _json(run("customer", "update", cust, "--email", "ada@new.example.com", "--default-payment-method", pm,
                  "--json"))
    assert (c["email"], c["default_payment_method_id"]) == ("ada@new.example.com", pm)
    bad = run("customer", "update", cust, "--metadata", "x" * 41 + "=v", ok=False)
    assert bad.returncode == 2 and "metadata." in bad.stderr
    sub = _json(run("subscribe", "--customer", cust, "--plan", "basic", "--at", AT, "--json"))
    late = run("subscription", "guarantee-refund", sub["id"], "--at", "2026-03-20T00:00:00Z", ok=False)
    assert late.returncode == 4 and "guarantee ended at 2026-03-15" in late.stderr
    ok = _json(run("subscription", "guarantee-refund", sub["id"], "--at", "2026-03-10T00:00:00Z", "--json"))
    assert ok["amount_minor"] == 1000
    assert _charges(tmp_path) == [("charge", 1000), ("refund", 1000)]
    again = _json(run("subscription", "reactivate", sub["id"], "--at", "2026-04-02T00:00:00Z", "--json"))
    assert again["reactivated_from"] == sub["id"] and again["status"] == "active"
    assert _charges(tmp_path) == [("charge", 1000), ("refund", 1000), ("charge", 1000)]
