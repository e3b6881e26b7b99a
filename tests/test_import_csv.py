"""`billing import csv`: a faithful copy of who pays what, when, under which consent."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import subscriptions
from billing_engine.cycle import plan_actions, run_cycle
from billing_engine.gateway.fake import FakeGateway
from billing_engine.imports import csv_source, service
from billing_engine.models import Consent, Customer, Event, PaymentMethod, Plan, Subscription
from billing_engine.settings import load_settings

SETTINGS = load_settings()
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]
HEADER = ("subscription_id,customer_id,email,name,payment_token,card_brand,card_last4,card_exp_month,card_exp_year,"
          "plan_code,amount,currency,interval,status,billing_anchor,current_period_start,current_period_end,"
          "trial_end,cancel_at_period_end,next_retry_at,created_at")
ROWS = [
    # monthly, anchored on Jan 31: Feb 28 -> Mar 31
    "old_1,c_1,ada@example.com,Ada,pm_card_visa,visa,4242,12,2030,basic,7.00,USD,month,active,"
    "2025-10-31T09:00:00Z,2026-02-28T09:00:00Z,2026-03-31T09:00:00Z,,false,,2025-10-31T09:00:00Z",
    # yearly
    "old_2,c_2,bob@example.com,Bob,pm_card_mastercard,mastercard,4444,1,2031,pro-yearly,120.00,EUR,year,active,"
    "2024-06-15T00:00:00Z,2025-06-15T00:00:00Z,2026-06-15T00:00:00Z,,false,,2024-06-15T00:00:00Z",
    # trialing until Mar 20
    "old_3,c_3,cy@example.com,Cy,pm_card_visa,visa,4242,12,2030,basic,,,,trialing,"
    "2026-03-20T00:00:00Z,2026-03-06T00:00:00Z,2026-03-20T00:00:00Z,2026-03-20T00:00:00Z,false,,2026-03-06T00:00:00Z",
    # past_due: the Mar 1 period failed; retried on Mar 12
    "old_4,c_4,di@example.com,Di,pm_card_visa,visa,4242,12,2030,basic,7.00,USD,month,past_due,"
    "2025-12-01T00:00:00Z,2026-03-01T00:00:00Z,2026-04-01T00:00:00Z,,false,2026-03-12T00:00:00Z,2025-12-01T00:00:00Z",
    # cancels at period end (Mar 25): never charged again
    "old_5,c_1,ada@example.com,Ada,pm_card_visa,visa,4242,12,2030,basic,,,,active,"
    "2026-01-25T00:00:00Z,2026-02-25T00:00:00Z,2026-03-25T00:00:00Z,,true,,2026-01-25T00:00:00Z",
]
CSV = "\n".join([HEADER, *ROWS]) + "\n"


def _import(engine: Engine, text: str = CSV, **kw: object) -> service.Report:
    return service.import_csv(engine, text, now=NOW, default_gateway="fake", **kw)  # type: ignore[arg-type]


def _count(engine: Engine, model: type) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


def _subs(engine: Engine) -> dict[str, Subscription]:
    with Session(engine) as s:
        return {x.external_id or "": x for x in s.exec(select(Subscription))}


def test_import_copies_the_schedule_and_the_consent_and_a_second_run_adds_nothing(engine: Engine) -> None:
    report = _import(engine)
    assert report.result.created == {"plans": 2, "customers": 4, "payment_methods": 4, "consents": 5,
                                     "subscriptions": 5}
    subs = _subs(engine)
    with Session(engine) as s:
        nxt = {k: subscriptions.next_charge(s, v) for k, v in subs.items()}
        consent = s.exec(select(Consent).where(Consent.external_id == "csv:consent:csv:old_2")).one()
        plan = s.exec(select(Plan).where(Plan.code == "pro-yearly")).one()
        imported = s.exec(select(Event).where(Event.type == "subscription.imported")).all()
    assert nxt["csv:old_1"] == (datetime(2026, 3, 31, 9, 0, tzinfo=UTC), 700, "USD")
    assert nxt["csv:old_2"] == (datetime(2026, 6, 15, tzinfo=UTC), 12000, "EUR")
    assert nxt["csv:old_3"] == (datetime(2026, 3, 20, tzinfo=UTC), 700, "USD")
    assert nxt["csv:old_4"] == (datetime(2026, 3, 12, tzinfo=UTC), 700, "USD")
    assert nxt["csv:old_5"] is None  # ends at period end
    assert subs["csv:old_3"].status == "trialing" and subs["csv:old_3"].trial_end == datetime(2026, 3, 20, tzinfo=UTC)
    assert subs["csv:old_4"].status == "past_due"
    assert subs["csv:old_5"].cancel_at_period_end and subs["csv:old_5"].cancellation_kind == "voluntary"
    assert (plan.amount_minor, plan.currency, plan.interval) == (12000, "EUR", "year")
    assert consent.channel == "import" and consent.accepted_at == datetime(2024, 6, 15, tzinfo=UTC)
    assert consent.terms_text is not None and "old_2" in consent.terms_text and "2024-06-15" in consent.terms_text
    assert len(imported) == 5
    assert _import(engine).result.created == dict.fromkeys(report.result.created, 0)
    assert _import(engine).result.already_imported == 5
    assert _count(engine, Subscription) == 5 and _count(engine, Customer) == 4


def test_imported_subscriptions_renew_on_their_own_dates_exactly_once(engine: Engine) -> None:
    _import(engine)
    gw = FakeGateway()
    before = run_cycle(engine, gw, now=datetime(2026, 3, 11, 23, 59, tzinfo=UTC), settings=SETTINGS)
    assert before.charged == 0 and gw.ledger == []
    for day in range(11, 32):  # every day until Mar 31, twice each
        at = datetime(2026, 3, day, 12, 0, tzinfo=UTC)
        run_cycle(engine, gw, now=at, settings=SETTINGS)
        run_cycle(engine, gw, now=at, settings=SETTINGS)
    charges = Counter((e.metadata.get("subscription_id"), e.amount_minor, e.currency) for e in gw.ledger)
    subs = _subs(engine)
    ids = {v.id: k for k, v in subs.items()}
    assert {(ids[s], a, c): n for (s, a, c), n in charges.items()} == {
        ("csv:old_1", 700, "USD"): 1,  # Mar 31
        ("csv:old_3", 700, "USD"): 1,  # trial end Mar 20
        ("csv:old_4", 700, "USD"): 1,  # the retry on Mar 12
    }
    assert subs["csv:old_1"].current_period_end == datetime(2026, 4, 30, 9, 0, tzinfo=UTC)  # anchor Oct 31 kept
    assert subs["csv:old_4"].status == "active" and subs["csv:old_4"].current_period_end == datetime(2026, 4, 1, tzinfo=UTC)
    assert subs["csv:old_5"].status == "canceled" and subs["csv:old_5"].ended_at == datetime(2026, 3, 25, tzinfo=UTC)


def test_charging_waits_for_the_cut_over(engine: Engine) -> None:
    cut = datetime(2026, 3, 15, tzinfo=UTC)
    _import(engine, charge_from=cut)
    gw = FakeGateway()
    at = datetime(2026, 3, 14, tzinfo=UTC)
    dry = {a["subscription_id"]: a for a in plan_actions(engine, at)}
    assert [(a["action"], a["reason"]) for a in dry.values()] == [("skip", "cut_over")]  # the past_due retry
    summary = run_cycle(engine, gw, now=at, settings=SETTINGS)
    assert (summary.charged, summary.blocked, summary.errors, gw.ledger) == (0, 0, [], [])
    assert summary.total_due == 0  # not the run's work: not counted as due (progress bar, backlog)
    after = run_cycle(engine, gw, now=cut, settings=SETTINGS)
    assert [e.amount_minor for e in gw.ledger] == [700]
    assert after.total_due == after.due == 1


def test_every_bad_row_is_reported_and_nothing_is_written(engine: Engine) -> None:
    bad = [
        ROWS[0],
        ROWS[1].replace("bob@example.com", "bob-at-example"),
        ROWS[2].replace("trialing", "paused"),
        ROWS[3].replace("pm_card_visa", "4242424242424242"),
        ROWS[4].replace("2026-03-25T00:00:00Z", "2026-03-26T00:00:00Z"),
        ROWS[0],  # duplicate
        ROWS[0].replace("old_1", "old_9").replace("7.00", "8.00"),  # the plan says 7.00
    ]
    with pytest.raises(csv_source.ImportInvalid) as exc:
        _import(engine, "\n".join([HEADER, *bad]))
    assert [str(p) for p in exc.value.problems] == [
        "line 3: email: not a valid e-mail address: 'bob-at-example'",
        "line 4: status: must be one of active, trialing, past_due, got 'paused'",
        "line 5: token: looks like a card number; this engine never accepts card numbers, pass the gateway's "
        "payment-method token (pm_...)",
        "line 6: current_period_end: is not a month boundary of billing_anchor 2026-01-25T00:00:00+00:00 "
        "(every 1 month)",
        "line 7: subscription_id: duplicate of line 2",
        "line 8: amount: plan 'basic' is 700 USD every 1 month; this row says otherwise",
    ]
    for model in (Subscription, Customer, PaymentMethod, Consent, Plan):
        assert _count(engine, model) == 0


def test_dry_run_changes_nothing(engine: Engine) -> None:
    report = _import(engine, dry_run=True)
    assert report.result.created["subscriptions"] == 5
    assert [p["next_charge_at"] for p in report.result.planned][:2] == [
        datetime(2026, 3, 31, 9, 0, tzinfo=UTC), datetime(2026, 6, 15, tzinfo=UTC)]
    for model in (Subscription, Customer, PaymentMethod, Consent, Plan, Event):
        assert _count(engine, model) == 0


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(BILLING_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def test_cli_lists_bad_rows_exits_2_then_imports_the_good_file(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("\n".join([HEADER, ROWS[0], ROWS[1].replace("EUR", "XXX")]) + "\n")
    p = _cli(tmp_path, "import", "csv", "bad.csv")
    assert p.returncode == 2
    assert p.stderr.splitlines() == ["error: line 3: currency: unknown currency 'XXX' (expected an ISO-4217 code such as USD)",
                                     "error: 1 bad row(s); nothing was imported"]
    (tmp_path / "good.csv").write_text(CSV)
    dry = _cli(tmp_path, "import", "csv", "good.csv", "--dry-run", "--at", "2026-03-10T12:00:00Z")
    assert dry.returncode == 0, dry.stderr
    assert "would create: csv:old_2 bob@example.com pro-yearly 120.00 EUR active, next charge 2026-06-15" in dry.stdout
    ok = _cli(tmp_path, "import", "csv", "good.csv", "--at", "2026-03-10T12:00:00Z")
    assert ok.returncode == 0, ok.stderr
    assert "csv: created 2 plans, 4 customers, 4 payment methods, 5 consents, 5 subscriptions" in ok.stdout
    again = _cli(tmp_path, "import", "csv", "good.csv", "--at", "2026-03-10T12:00:00Z")
    assert "created 0 plans, 0 customers, 0 payment methods, 0 consents, 0 subscriptions; 5 subscription(s) " \
           "already imported" in again.stdout
