"""Issue #13, audit trail from the CLI: events name the OS user (``admin:cli:<user>``), keep
the wall clock in ``recorded_at`` whatever ``--at`` says, and run-cycles, cancel links and
e-mail sends are recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session, col, select

from billing_engine.db import make_engine
from billing_engine.models import Event

BILLING = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]
AT = "2026-01-10T09:00:00Z"


def test_cli_events_name_the_os_user_and_are_never_backdated(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(PYTHONPATH=str(ROOT), BILLING_ENV="test", BILLING_DATABASE_URL=f"sqlite:///{db}",
               BILLING_MAIL_TRANSPORT="none", LOGNAME="ada-ops", USER="ada-ops")

    def run(*args: str) -> dict[str, str]:
        p = subprocess.run([*BILLING, *args, "--json"], capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        out: dict[str, str] = json.loads(p.stdout)
        return out

    (tmp_path / "terms.txt").write_text("We charge 7.00 USD monthly until you cancel.")
    started = datetime.now(UTC)
    run("plan", "create", "--code", "basic", "--name", "Basic", "--amount", "7.00", "--currency", "USD", "--at", AT)
    cust = run("customer", "create", "--email", "ada@example.com", "--name", "Ada", "--at", AT)
    pm = run("payment-method", "add", cust["id"], "--token", "pm_card_visa", "--consent-ip", "203.0.113.9",
             "--consent-user-agent", "Mozilla/5.0", "--terms-version", "v1", "--terms-file", "terms.txt",
             "--consent-amount", "7.00", "--consent-currency", "USD", "--at", AT)
    sub = run("subscribe", "--customer", cust["id"], "--plan", "basic", "--payment-method", pm["id"], "--at", AT,
              "--defer-first-charge")
    run("run-cycle", "--at", AT)
    run("cancel-link", sub["id"])
    run("notifications", "send", "--at", AT)

    with Session(make_engine(f"sqlite:///{db}")) as s:
        events = list(s.exec(select(Event).order_by(col(Event.id))))
    by_type = {e.type: e for e in events}
    assert by_type["plan.created"].actor == "admin:cli:ada-ops"
    assert by_type["subscription.created"].actor == "admin:cli:ada-ops"
    for e in events:  # --at is 2026-01-10; the rows were written now
        assert e.recorded_at >= started - timedelta(seconds=1), (e.type, e.recorded_at)
    assert by_type["plan.created"].occurred_at == datetime(2026, 1, 10, 9, tzinfo=UTC)
    run_ev = by_type["run_cycle.completed"]
    payload = json.loads(run_ev.payload)
    assert run_ev.actor == "admin:cli:ada-ops" and payload["at"].startswith("2026-01-10T09:00:00")
    assert (payload["due"], payload["succeeded"]) == (1, 1)
    link = by_type["cancel_link.minted"]
    assert (link.actor, link.subscription_id) == ("admin:cli:ada-ops", sub["id"])
    assert by_type["notifications.sent"].actor == "admin:cli:ada-ops"
