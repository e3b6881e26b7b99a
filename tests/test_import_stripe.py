"""`billing import stripe` through the official SDK against a small Stripe account with
Stripe's real JSON shapes (tests/imports/stripe_account.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import subscriptions
from billing_engine.cycle import plan_actions, run_cycle
from billing_engine.gateway.fake import FakeGateway
from billing_engine.gateway.rate_limit import TokenBucket
from billing_engine.imports import service
from billing_engine.imports.records import HOLD
from billing_engine.models import Consent, Customer, ImportProgress, Notification, Subscription
from billing_engine.settings import Settings, load_settings
from tests.e2e_stripe.sim_server import serving
from tests.imports.stripe_account import StripeAccount

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]


def d(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def account() -> tuple[StripeAccount, dict[str, dict[str, Any]]]:
    a = StripeAccount()
    monthly = a.price(700, "usd", "month", product="Letter")
    yearly = a.price(12000, "eur", "year", product="Letter yearly")
    metered = a.price(None, "usd", "month", usage_type="metered", product="API calls")
    subs: dict[str, dict[str, Any]] = {}
    subs["monthly"] = a.subscription(a.customer("ada@example.com", name="Ada"), [monthly], status="active",
                                     anchor=d("2025-10-31T09:00"), period=(d("2026-02-28T09:00"), d("2026-03-31T09:00")),
                                     created=d("2025-10-31T09:00"))
    subs["yearly"] = a.subscription(a.customer("bob@example.com", card="mastercard", last4="4444"), [yearly],
                                    status="active", anchor=d("2024-06-15"), period=(d("2025-06-15"), d("2026-06-15")))
    subs["trialing"] = a.subscription(a.customer("cy@example.com"), [monthly], status="trialing",
                                      anchor=d("2026-03-20"), period=(d("2026-03-06"), d("2026-03-20")),
                                      trial_end=d("2026-03-20"))
    di = a.customer("di@example.com")
    subs["past_due"] = a.subscription(di, [monthly], status="past_due", anchor=d("2025-12-01"),
                                      period=(d("2026-03-01"), d("2026-04-01")))
    inv = a.invoice(subs["past_due"], period=(d("2026-03-01"), d("2026-04-01")), amount=700, status="open",
                    next_payment_attempt=d("2026-03-12"))
    subs["past_due"]["latest_invoice"] = inv["id"]
    subs["ending"] = a.subscription(a.customer("eve@example.com"), [monthly], status="active",
                                    anchor=d("2026-01-25"), period=(d("2026-02-25"), d("2026-03-25")),
                                    cancel_at_period_end=True)
    subs["metered"] = a.subscription(a.customer("fay@example.com"), [metered], status="active",
                                     anchor=d("2026-01-05"), period=(d("2026-03-05"), d("2026-04-05")))
    subs["two_items"] = a.subscription(a.customer("gus@example.com"), [monthly, yearly], status="active",
                                       anchor=d("2026-01-05"), period=(d("2026-03-05"), d("2026-04-05")))
    return a, subs


def settings(db_url: str) -> Settings:
    return load_settings(database_url=db_url, stripe_api_key="sk_test_import")


def stripe_import(engine: Engine, db_url: str, a: StripeAccount, **kw: Any) -> service.Report:
    return service.import_stripe(engine, settings(db_url), now=NOW, http_client=a,
                                 limiter=TokenBucket(1_000_000, burst=1_000_000), **kw)


def stripe_next_charge(a: StripeAccount, sub: dict[str, Any]) -> tuple[datetime, int, str] | None:
    """What Stripe would charge next, read from Stripe's own objects."""
    sub = a.objects[sub["id"]]
    if sub["cancel_at_period_end"]:
        return None
    item = sub["items"]["data"][0]
    price = item["price"]
    if sub["status"] == "past_due":
        when = a.objects[sub["latest_invoice"]]["next_payment_attempt"]
    else:
        when = item["current_period_end"]
    return datetime.fromtimestamp(when, UTC), price["unit_amount"] * item["quantity"], price["currency"].upper()


def by_stripe_id(engine: Engine) -> dict[str, Subscription]:
    with Session(engine) as s:
        return {(x.external_id or "").removeprefix("stripe:"): x for x in s.exec(select(Subscription))}


def count(engine: Engine, model: type) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


def test_dry_run_lists_what_would_be_created_and_what_cannot_and_changes_nothing(engine: Engine, db_url: str) -> None:
    a, subs = account()
    report = stripe_import(engine, db_url, a, dry_run=True)
    assert report.result.created == {"plans": 2, "customers": 5, "payment_methods": 5, "consents": 5,
                                     "subscriptions": 5}
    assert sorted(p["external_id"] for p in report.result.planned) == sorted(
        f"stripe:{subs[k]['id']}" for k in ("monthly", "yearly", "trialing", "past_due", "ending"))
    reasons = {u["id"]: u["reason"] for u in report.unsupported}
    assert reasons == {
        subs["metered"]["id"]: f"price {subs['metered']['items']['data'][0]['price']['id']} is metered (usage-based); "
                               "the engine bills fixed amounts",
        subs["two_items"]["id"]: "2 items per subscription (the engine bills one plan per subscription)",
    }
    assert count(engine, Subscription) == count(engine, Customer) == count(engine, ImportProgress) == 0
    assert all(r.method == "get" for r in a.requests)


def test_imported_schedule_equals_stripes_and_a_second_import_adds_nothing(engine: Engine, db_url: str) -> None:
    a, subs = account()
    report = stripe_import(engine, db_url, a, charge_from=None)
    assert report.result.created["subscriptions"] == 5 and len(report.unsupported) == 2
    mine = by_stripe_id(engine)
    with Session(engine) as s:
        for key in ("monthly", "yearly", "trialing", "past_due", "ending"):
            sub = mine[subs[key]["id"]]
            assert subscriptions.next_charge(s, sub) == stripe_next_charge(a, subs[key]), key
            assert sub.billing_anchor == datetime.fromtimestamp(subs[key]["billing_cycle_anchor"], UTC)
            assert sub.cancel_at_period_end == subs[key]["cancel_at_period_end"]
        trial = mine[subs["trialing"]["id"]]
        assert (trial.status, trial.trial_end) == ("trialing", d("2026-03-20"))
        cus = s.get(Customer, mine[subs["yearly"]["id"]].customer_id)
        assert cus is not None and cus.gateway_customer_id == subs["yearly"]["customer"]
        consent = s.exec(select(Consent).where(
            Consent.external_id == f"stripe:consent:stripe:{subs['monthly']['id']}")).one()
    assert consent.terms_text is not None and consent.terms_text.startswith("Imported from Stripe Billing")
    for stripe_id in (subs["monthly"]["id"], subs["monthly"]["customer"], "2025-10-31T09:00:00+00:00"):
        assert stripe_id in consent.terms_text
    assert consent.accepted_at == d("2025-10-31T09:00")
    again = stripe_import(engine, db_url, a, charge_from=None)
    assert sum(again.result.created.values()) == 0 and again.result.already_imported == 5
    assert count(engine, Subscription) == 5


def test_imported_subscriptions_renew_on_stripes_dates_exactly_once(engine: Engine, db_url: str) -> None:
    a, subs = account()
    stripe_import(engine, db_url, a, charge_from=None)
    gw = FakeGateway()
    for day in range(10, 31):
        for hour in (0, 9, 12):  # 09:00: the monthly renewal's reminder goes out exactly its lead time ahead
            run_cycle(engine, gw, now=datetime(2026, 3, day, hour, tzinfo=UTC), settings=load_settings())
    run_cycle(engine, gw, now=d("2026-03-31T08:59:59"), settings=load_settings())
    mine = {v.id: k for k, v in by_stripe_id(engine).items()}
    names = {s["id"]: k for k, s in subs.items()}
    charged = Counter((names[mine[e.metadata["subscription_id"]]], e.amount_minor) for e in gw.ledger)
    assert charged == {("trialing", 700): 1, ("past_due", 700): 1}  # monthly: Mar 31 09:00, not before
    run_cycle(engine, gw, now=d("2026-03-31T09:00"), settings=load_settings())
    assert len(gw.ledger) == 3 and gw.ledger[-1].amount_minor == 700


def test_held_until_the_cut_over_by_default(engine: Engine, db_url: str) -> None:
    a, subs = account()
    stripe_import(engine, db_url, a)
    assert {s.charge_from for s in by_stripe_id(engine).values()} == {HOLD}
    gw = FakeGateway()
    at = d("2026-03-31T10:00")
    skipped = {x["reason"] for x in plan_actions(engine, at) if x["action"] == "skip"}
    assert skipped == {"cut_over"}
    for day in (14, 25):  # reminders would be due (7 days ahead): Stripe still charges, the engine is silent
        run_cycle(engine, gw, now=datetime(2026, 3, day, tzinfo=UTC), settings=load_settings())
    summary = run_cycle(engine, gw, now=at, settings=load_settings())
    assert gw.ledger == [] and summary.charged == 0
    with Session(engine) as s:
        kinds = {n.kind for n in s.exec(select(Notification))}
    assert not kinds & {"renewal_reminder", "trial_ending"}
    assert by_stripe_id(engine)[subs["ending"]["id"]].status == "canceled"  # ends as Stripe said, no charge


def test_every_request_is_paced_by_the_limiter(engine: Engine, db_url: str) -> None:
    a, _subs = account()
    taken: list[float] = []

    class Counting(TokenBucket):
        def acquire(self) -> float:
            taken.append(1)
            return 0.0

    service.import_stripe(engine, settings(db_url), now=NOW, http_client=a, limiter=Counting(1.0), page_size=2)
    assert len(taken) == len(a.requests) > 5


def _cli(db_url: str, base: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(BILLING_DATABASE_URL=db_url, BILLING_STRIPE_API_KEY="sk_test_import", BILLING_STRIPE_API_BASE=base,
               PYTHONPATH=str(ROOT), BILLING_GATEWAY_RATE_PER_SECOND="1000", BILLING_SECRET_KEY="import-" + "x" * 32,
               BILLING_GATEWAY="stripe")
    return subprocess.Popen([sys.executable, "-m", "cli.main", "import", "stripe", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_a_killed_import_resumes_where_it_stopped_and_imports_everything_once(engine: Engine, db_url: str) -> None:
    a, subs = account()
    # the third page of active subscriptions waits: pages 1 and 2 are committed by then
    a.hold(lambda path, params: path == "/v1/subscriptions" and params.get("status") == "active"
           and params.get("starting_after") is not None and len([r for r in a.requests if r.path == path]) >= 3)
    with serving(a) as base:  # type: ignore[arg-type]
        p = _cli(db_url, base, "--page-size", "2", "--at", "2026-03-10T12:00:00Z")
        while not a.holding.wait(0.2):
            assert p.poll() is None, p.communicate(timeout=5)
        time.sleep(0.5)
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        half = by_stripe_id(engine)
        with Session(engine) as s:
            progress = s.get(ImportProgress, "stripe:subscriptions:active")
        # pages 1-2 of the active ones: monthly, yearly | ending, metered (cannot be imported)
        assert progress is not None and (progress.status, progress.cursor) == ("running", subs["metered"]["id"])
        assert sorted(half) == sorted(subs[k]["id"] for k in ("monthly", "yearly", "ending"))
        a.hold(lambda path, params: False)
        a.release()
        seen = len(a.requests)
        again = _cli(db_url, base, "--page-size", "2", "--at", "2026-03-10T12:00:00Z", "--json")
        out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
    resumed = [r for r in a.requests[seen:] if r.path == "/v1/subscriptions" and r.params.get("status") == "active"]
    assert resumed[0].params["starting_after"] == progress.cursor
    final = by_stripe_id(engine)
    assert sorted(final) == sorted(subs[k]["id"] for k in ("monthly", "yearly", "trialing", "past_due", "ending"))
    assert count(engine, Subscription) == 5 and count(engine, Customer) == 5
    with Session(engine) as s:
        assert {p.status for p in s.exec(select(ImportProgress))} == {"done"}


@pytest.fixture(autouse=True)
def _no_real_stripe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLING_STRIPE_API_BASE", raising=False)
