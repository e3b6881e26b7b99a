"""Consent evidence for a chargeback dispute: `GET /v1/consents/{id}` (and by subscription
or card), the JSON and HTML export, `billing consent show`; retention documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import cancellations
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Consent, Subscription
from billing_engine.settings import load_settings
from tests.factories import TERMS, make_plan, make_subscription

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = load_settings(mail_transport="none")


def _world(engine: Engine, now: datetime) -> tuple[str, str, str]:
    with transaction(engine) as s:
        sub = make_subscription(s, now, plan=make_plan(s, now))
        sub_id, pm_id = sub.id, sub.payment_method_id
    gw = FakeGateway()
    run_cycle(engine, gw, now=now, settings=SETTINGS)
    run_cycle(engine, gw, now=now + timedelta(days=24), settings=SETTINGS)  # the reminder
    run_cycle(engine, gw, now=now + timedelta(days=32), settings=SETTINGS)  # the renewal
    with Session(engine) as s:
        [c] = s.exec(select(Consent)).all()
    assert pm_id is not None
    return sub_id, pm_id, c.id


def test_the_consent_record_names_who_when_where_the_terms_and_what_followed(
        client: TestClient, engine: Engine, now: datetime) -> None:
    sub_id, pm_id, consent_id = _world(engine, now)
    r = client.get(f"/v1/consents/{consent_id}")
    assert r.status_code == 200
    rec = r.json()
    assert rec["consent_id"] == consent_id and rec["customer"]["email"] == "ada@example.com"
    assert rec["ip_address"] == "203.0.113.7" and rec["user_agent"] == "Mozilla/5.0 (test)"
    assert rec["terms_version"] == "2026-01" and rec["terms_text"] == TERMS and rec["terms_text_matches_hash"] is True
    assert (rec["amount_minor"], rec["currency"], rec["interval"], rec["interval_count"]) == (1700, "USD", "month", 1)
    assert rec["accepted_at"].endswith("Z") and rec["payment_method"]["last4"] == "4242"
    assert [c["amount_minor"] for c in rec["charges"]] == [1700, 1700]
    kinds = [m["kind"] for m in rec["emails"]]
    assert kinds[0] == "subscription_confirmed" and "renewal_reminder" in kinds
    assert client.get(f"/v1/consents/{sub_id}").json()["consent_id"] == consent_id  # by subscription
    assert client.get(f"/v1/consents/{pm_id}").json()["consent_id"] == consent_id  # by card
    assert client.get("/v1/consents/cns_nope").status_code == 404


def test_the_dispute_export_is_json_and_a_printable_html_page(client: TestClient, engine: Engine, now: datetime) -> None:
    _sub_id, _pm, consent_id = _world(engine, now)
    j = client.get(f"/v1/consents/{consent_id}/evidence.json")
    assert j.status_code == 200 and "attachment" in j.headers["content-disposition"]
    assert json.loads(j.text)["terms_sha256"] == client.get(f"/v1/consents/{consent_id}").json()["terms_sha256"]
    h = client.get(f"/v1/consents/{consent_id}/evidence.html")
    assert h.status_code == 200 and h.headers["content-type"].startswith("text/html")
    assert "203.0.113.7" in h.text and TERMS in h.text and "(the text below matches)" in h.text
    assert "renewal_reminder" in h.text and "Kept at least" not in h.text  # live: kept while it runs


def test_an_ended_subscription_s_consent_is_kept_at_least_three_years(client: TestClient, engine: Engine,
                                                                       now: datetime) -> None:
    sub_id, _pm, consent_id = _world(engine, now)
    with transaction(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        cancellations.cancel(s, sub, now=now + timedelta(days=40), at_period_end=False)
    rec = client.get(f"/v1/consents/{consent_id}").json()
    assert rec["retain_until"] is not None and rec["retain_until"][:4] == str((now + timedelta(days=40)).year + 3)


def test_anonymous_callers_get_nothing(anon: TestClient, engine: Engine, now: datetime) -> None:
    _sub, _pm, consent_id = _world(engine, now)
    assert anon.get(f"/v1/consents/{consent_id}").status_code == 401


def test_billing_consent_show_prints_and_exports_the_record(engine: Engine, now: datetime, tmp_path: Path,
                                                            db_url: str) -> None:
    sub_id, _pm, consent_id = _world(engine, now)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(PYTHONPATH=str(ROOT), BILLING_ENV="test", BILLING_DATABASE_URL=db_url)
    p = subprocess.run([sys.executable, "-m", "cli.main", "consent", "show", sub_id, "--json",
                        "--export", str(tmp_path / "dispute")], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["consent_id"] == consent_id
    assert json.loads((tmp_path / "dispute" / f"{consent_id}.json").read_text())["ip_address"] == "203.0.113.7"
    assert TERMS in (tmp_path / "dispute" / f"{consent_id}.html").read_text()
    bad = subprocess.run([sys.executable, "-m", "cli.main", "consent", "show", "sub_nope"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode != 0 and len([ln for ln in bad.stderr.splitlines() if ln.strip()]) == 1
