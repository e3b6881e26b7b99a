"""Prometheus metrics: GET /metrics behind a token, and `billing run-cycle` writing a
textfile / pushing to a Pushgateway -- the numbers match what the run did."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.settings import load_settings
from tests.factories import make_plan, make_subscription

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 10, 9, tzinfo=UTC)
ADMIN = "A" * 40
SCRAPER = "M" * 40


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _seed(engine) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, NOW)
        make_subscription(s, NOW, plan=plan, email="ok@example.com")
        make_subscription(s, NOW, plan=plan, email="poor@example.com", token="pm_card_chargeDeclinedInsufficientFunds")
        make_subscription(s, NOW, plan=plan, email="lost@example.com", token="pm_card_chargeDeclinedLostCard")


def test_metrics_endpoint_needs_a_token_and_counts_what_happened(engine) -> None:  # type: ignore[no-untyped-def]
    _seed(engine)
    settings = load_settings(admin_tokens=[ADMIN], metrics_token=SCRAPER,
                             database_url=engine.url.render_as_string(hide_password=False))
    app = create_app(settings=settings, engine=engine, gateway=FakeGateway(), clock=lambda: NOW)
    with TestClient(app) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer wrong-token-wrong-token-wrong"}).status_code == 401
        before = c.get("/metrics", headers={"Authorization": f"Bearer {SCRAPER}"})
        assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
        m = samples(before.text)
        assert m[("billing_due_backlog", ())] == 3
        assert m[("billing_unresolved_attempts", ())] == 0
        assert m[("billing_outbox_backlog", (("status", "pending"),))] >= 0
        r = c.post("/v1/run-cycle", json={"send_emails": False}, headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200, r.text
        after = samples(c.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text)
    assert after[("billing_due_backlog", ())] == 0
    assert after[("billing_charges_total", (("outcome", "succeeded"),))] == 1
    assert after[("billing_charges_total", (("outcome", "declined_soft"),))] == 1
    assert after[("billing_charges_total", (("outcome", "declined_hard"),))] == 1
    assert after[("billing_declines_total", (("code", "insufficient_funds"),))] == 1
    assert after[("billing_declines_total", (("code", "lost_card"),))] == 1
    assert after[("billing_collected_minor_total", (("currency", "USD"),))] == 1700
    assert after[("billing_claims_held", ())] == 0
    assert after[("billing_outbox_backlog", (("status", "pending"),))] > 0  # receipts, failure notices queued


class _Gateway(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_PUT(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_run_cycle_writes_a_textfile_and_pushes_to_a_pushgateway(tmp_path: Path) -> None:
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "PYTHONPATH": str(ROOT),
           "BILLING_MAIL_TRANSPORT": "none"}
    env.pop("BILLING_GATEWAY", None)
    code = """
from datetime import datetime, UTC
from billing_engine.db import get_engine
from tests.ops.test_metrics import _seed
_seed(get_engine())
"""
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120, cwd=ROOT)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    prom = tmp_path / "billing.prom"
    try:
        p = subprocess.run([sys.executable, "-m", "cli.main", "run-cycle", "--at", "2026-01-10T10:00:00Z", "--json",
                            "--metrics-textfile", str(prom),
                            "--metrics-pushgateway", f"http://127.0.0.1:{server.server_port}"],
                           env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["succeeded"] == 1
    m = samples(prom.read_text())
    assert m[("billing_charges_total", (("outcome", "succeeded"),))] == 1
    assert m[("billing_collected_minor_total", (("currency", "USD"),))] == 1700
    assert m[("billing_run_due", ())] == 3 and m[("billing_run_duration_seconds", ())] > 0
    assert m[("billing_due_backlog", ())] == 0
    again = subprocess.run([sys.executable, "-m", "cli.main", "run-cycle", "--at", "2026-01-10T10:00:00Z", "--json",
                            "--metrics-textfile", str(prom)], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and json.loads(again.stdout)["due"] == 0
    m = samples(prom.read_text())  # counters keep counting across runs; the last run's gauges replace
    assert m[("billing_charges_total", (("outcome", "succeeded"),))] == 1
    assert m[("billing_declines_total", (("code", "lost_card"),))] == 1
    assert m[("billing_run_due", ())] == 0
    assert not any(name.endswith("_created") for name, _ in m)
    [(method, path, body)] = _Gateway.received
    assert method == "PUT" and path == "/metrics/job/billing_run_cycle"
    assert b'billing_declines_total{code="lost_card"} 1.0' in body


def test_the_api_shows_the_last_complete_run_of_any_process(engine) -> None:  # type: ignore[no-untyped-def]
    """A scheduled run (cron, another process: here the engine called directly, as the CLI
    does) shows in the API's /metrics through the shared audit log; a run stopped early
    does not count as complete; before any run the gauge is absent, not 0 (1970)."""
    from billing_engine import audit
    from billing_engine.cycle import CycleSummary, run_cycle

    _seed(engine)
    settings = load_settings(admin_tokens=[ADMIN], metrics_token=SCRAPER,
                             database_url=engine.url.render_as_string(hide_password=False))
    app = create_app(settings=settings, engine=engine, gateway=FakeGateway(), clock=lambda: NOW)
    name = ("billing_last_run_completed_timestamp_seconds", ())
    with TestClient(app, headers={"Authorization": f"Bearer {SCRAPER}"}) as c:
        assert name not in samples(c.get("/metrics").text)
        before = datetime.now(UTC).timestamp()
        summary = run_cycle(engine, FakeGateway(), now=NOW, settings=settings)  # not through this API
        audit.run_cycle_completed(engine, summary, actor="cli:cron")
        after = datetime.now(UTC).timestamp()
        first = samples(c.get("/metrics").text)[name]
        assert before - 1 <= first <= after + 1
        stopped = CycleSummary(at=NOW, stopped="gateway_unreachable")
        audit.run_cycle_completed(engine, stopped, actor="cli:cron")  # a later run that stopped early
        assert samples(c.get("/metrics").text)[name] == first
