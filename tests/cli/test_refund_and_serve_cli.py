"""`billing refund ...` and `billing serve`, as an admin runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

BILLING = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]
AT = "2026-01-10T09:00:00Z"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PYTHONPATH": str(ROOT)}
    e.pop("BILLING_GATEWAY", None)
    e.pop("BILLING_ADMIN_TOKENS", None)
    return e


def _run(env: dict[str, str], cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*BILLING, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def test_refund_a_paid_invoice_partly_then_fully(env: dict[str, str], tmp_path: Path) -> None:
    def run(*a: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(env, tmp_path, *a, ok=ok)

    run("plan", "create", "--code", "basic", "--name", "Basic", "--amount", "7.00", "--currency", "USD", "--at", AT)
    cust = json.loads(run("customer", "create", "--email", "ada@example.com", "--at", AT, "--json").stdout)
    pm = json.loads(run("payment-method", "add", cust["id"], "--token", "pm_card_visa", "--consent-ip", "203.0.113.9",
                        "--consent-user-agent", "Mozilla/5.0", "--terms-version", "v1", "--terms-text", "7 USD monthly",
                        "--consent-amount", "7.00", "--consent-currency", "USD", "--at", AT, "--json").stdout)
    run("subscribe", "--customer", cust["id"], "--plan", "basic", "--payment-method", pm["id"], "--at", AT)
    # Each command is a new process with a fresh in-memory FakeGateway, so money moving
    # end to end is tested in-process (tests/api/test_refunds.py); here: validation and reads.
    run("run-cycle", "--at", AT, "--no-email")
    [inv] = json.loads(run("invoice", "list", "--status", "paid", "--json").stdout)
    too_much = run("refund", "create", inv["id"], "--amount", "7.01", ok=False)
    assert too_much.returncode == 2 and "amount_minor" in too_much.stderr and "still refundable" in too_much.stderr
    bad = run("refund", "create", inv["id"], "--amount", "1.001", ok=False)
    assert bad.returncode == 2 and "--amount" in bad.stderr
    missing = run("refund", "create", "in_nope", ok=False)
    assert missing.returncode == 3 and "no invoice" in missing.stderr
    assert json.loads(run("refund", "list", "--invoice", inv["id"], "--json").stdout) == []
    unpaid = run("refund", "show", "re_nope", ok=False)
    assert unpaid.returncode == 3 and "no refund" in unpaid.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_health_and_guards_admin_endpoints(env: dict[str, str], tmp_path: Path) -> None:
    port = _free_port()
    env = env | {"BILLING_ADMIN_TOKENS": "cli-test-token"}
    proc = subprocess.Popen([*BILLING, "serve", "--port", str(port), "--log-level", "warning"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                r = httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")
        assert r.status_code == 200 and r.json()["database"] == "ok"
        assert httpx.get(f"{base}/v1/plans").status_code == 401
        ok = httpx.get(f"{base}/v1/plans", headers={"Authorization": "Bearer cli-test-token"})
        assert ok.status_code == 200 and ok.json() == {"data": []}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
