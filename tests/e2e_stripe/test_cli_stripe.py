"""`billing run-cycle` as an admin runs it, with BILLING_GATEWAY=stripe, against the scripted
Stripe served on 127.0.0.1 (BILLING_STRIPE_API_BASE). Real process, real SDK, real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from tests.gateway.stripe_sim import Fault, StripeSim

from .sim_server import serving
from .test_run_cycle_stripe import attempts, sub, subscribe

ROOT = Path(__file__).resolve().parents[2]


def billing(db_url: str, api_base: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(BILLING_DATABASE_URL=db_url, BILLING_GATEWAY="stripe", BILLING_STRIPE_API_KEY="sk_test_cli",
               BILLING_STRIPE_API_BASE=api_base, BILLING_SECRET_KEY="e2e-secret-" + "x" * 32, PYTHONPATH=str(ROOT),
               BILLING_GATEWAY_CONCURRENCY="1")  # the scripted faults apply in call order
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def test_run_cycle_command_with_the_stripe_gateway(db_url: str, engine: Engine, now: datetime,
                                                   tmp_path: Path) -> None:
    storm = subscribe(engine, now, "pm_card_visa", email="storm@example.com", start_at=now - timedelta(hours=3))
    declined = subscribe(engine, now, "pm_card_chargeDeclinedInsufficientFunds", email="poor@example.com",
                         start_at=now - timedelta(hours=2))
    lost = subscribe(engine, now, "pm_card_mastercard", email="lost@example.com", start_at=now - timedelta(hours=1))
    sim = StripeSim()
    sim.script(Fault.RATE_LIMIT, Fault.RATE_LIMIT, Fault.PASS,  # storm: 2 x 429, then charged
               Fault.PASS,  # decline
               Fault.TIMEOUT_AFTER_COMMIT)  # charged, the answer lost; the retry replays it
    at = now.isoformat().replace("+00:00", "Z")
    with serving(sim) as api_base:
        p = billing(db_url, api_base, tmp_path, "run-cycle", "--at", at, "--json", "--no-email")
        assert p.returncode == 0, p.stderr
        summary = json.loads(p.stdout)
        assert (summary["charged"], summary["succeeded"], summary["declined_soft"], summary["unknown"]) == (3, 2, 1, 0)
        assert summary["collected"] == {"USD": 3400}
        again = billing(db_url, api_base, tmp_path, "run-cycle", "--at", at, "--json", "--no-email")
        assert again.returncode == 0 and json.loads(again.stdout)["charged"] == 0
    assert [sub(engine, i).status for i in (storm, declined, lost)] == ["active", "past_due", "active"]
    assert len(sim.payment_intents) == 3 and len(sim.succeeded_intents()) == 2
    for sub_id, posts in ((storm, 3), (declined, 1), (lost, 2)):
        [attempt] = attempts(engine, sub_id)
        sent = [r for r in sim.posts("/v1/payment_intents") if r.params["metadata"]["subscription_id"] == sub_id]
        assert [r.idempotency_key for r in sent] == [attempt.idempotency_key] * posts
        assert sent[0].url.startswith("http://127.0.0.1:")
    assert attempts(engine, declined)[0].decline_code == "insufficient_funds"
