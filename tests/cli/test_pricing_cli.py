"""`billing plan reprice`, `billing coupon ...`, `billing subscription pause/resume/apply-coupon`
as an admin uses them: real process, real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.cli.inproc import invoke

BILLING = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]


def test_reprice_coupon_pause_resume_from_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PYTHONPATH": str(ROOT)}
    env.pop("BILLING_GATEWAY", None)

    def run(*args: str, code: int = 0) -> Any:
        p = subprocess.run([*BILLING, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        assert p.returncode == code, (args, p.stdout, p.stderr)
        if code:
            assert len(p.stderr.strip().splitlines()) == 1, p.stderr  # one clear line
            return p.stderr
        return json.loads(p.stdout) if "--json" in args else p.stdout

    (tmp_path / "terms.txt").write_text("We charge 17.00 USD monthly until you cancel.")
    at = "2026-01-01T10:00:00Z"
    def setup(*args: str) -> Any:  # set-up, in this process (tests/cli/inproc.py)
        p = invoke(env, tmp_path, *args)
        assert p.returncode == 0, (args, p.stdout, p.stderr)
        return json.loads(p.stdout) if "--json" in args else p.stdout

    setup("plan", "create", "--code", "basic", "--name", "Basic", "--amount", "17.00", "--currency", "USD", "--at", at)
    cust = setup("customer", "create", "--email", "ada@example.com", "--at", at, "--json")
    pm = setup("payment-method", "add", cust["id"], "--token", "pm_card_visa", "--consent-ip", "203.0.113.9",
             "--consent-user-agent", "Mozilla/5.0", "--terms-version", "v1", "--terms-file", "terms.txt",
             "--consent-amount", "17.00", "--consent-currency", "USD", "--at", at, "--json")
    coupon = run("coupon", "create", "welcome20", "--percent-off", "20", "--duration", "repeating", "--periods", "3",
                 "--plan", "basic", "--at", at, "--json")
    assert (coupon["code"], coupon["plans"]) == ("WELCOME20", ["basic"])
    assert "--percent-off: must be between 1 and 100" in run("coupon", "create", "huge", "--percent-off", "101", "--at", at, code=2)
    sub = run("subscribe", "--customer", cust["id"], "--plan", "basic", "--payment-method", pm["id"],
              "--coupon", "WELCOME20", "--defer-first-charge", "--at", at, "--json")
    assert sub["next_charge_amount_minor"] == 1360
    dry = run("run-cycle", "--at", at, "--dry-run", "--json")
    assert [(w["amount_minor"], w["discount_minor"]) for w in dry["would_charge"]] == [(1360, 340)]
    run("run-cycle", "--at", at, "--json")

    assert "--notice-days: must be between 7 and 365" in run("plan", "reprice", "basic", "--amount", "29.00", "--notice-days", "3", code=2)
    change = run("plan", "reprice", "basic", "--amount", "29.00", "--at", "2026-01-05T00:00:00Z", "--json")
    assert (change["old_amount_minor"], change["amount_minor"], change["subscribers_notified"]) == (1700, 2900, 1)

    paused = run("subscription", "pause", sub["id"], "--at-period-end", "--until", "2026-04-15T00:00:00Z",
                 "--at", "2026-01-10T00:00:00Z", "--json")
    assert (paused["status"], paused["pause_at_period_end"]) == ("active", True)
    run("run-cycle", "--at", "2026-02-01T10:00:00Z", "--json")
    assert run("subscription", "show", sub["id"], "--json")["status"] == "paused"
    run("subscription", "resume", sub["id"], "--at", "2026-03-03T00:00:00Z")  # early, by hand
    summary = run("run-cycle", "--at", "2026-03-03T00:00:00Z", "--json")
    assert summary["succeeded"] == 1
    invoices = run("invoice", "list", "--subscription", sub["id"], "--json")
    # Jan at 17.00 less 20 %; the resumed period (Mar 3) at the new price 29.00 less 20 % (2nd coupon period)
    assert [(i["amount_minor"], i["discount_minor"]) for i in invoices] == [(1360, 340), (2320, 580)]
    err = run("subscription", "resume", sub["id"], code=4)
    assert "not paused" in err
    assert "already used" in run("subscription", "apply-coupon", sub["id"], "WELCOME20", code=4)
