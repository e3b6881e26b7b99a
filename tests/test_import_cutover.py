"""The switch-over from Stripe: held until the cut-over, Stripe told to stop renewing
(printed first, done only with --yes), the engine charging from each Stripe period's end,
and the reconciliation report."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine.cycle import plan_actions, run_cycle
from billing_engine.gateway.fake import FakeGateway
from billing_engine.gateway.rate_limit import TokenBucket
from billing_engine.imports import cutover, service
from billing_engine.models import Invoice
from billing_engine.settings import load_settings
from tests.e2e_stripe.sim_server import serving
from tests.imports.stripe_account import ts
from tests.test_import_stripe import ROOT, account, by_stripe_id, d, settings, stripe_import

FAST = TokenBucket(1_000_000, burst=1_000_000)


def _cli(db_url: str, base: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(BILLING_DATABASE_URL=db_url, BILLING_STRIPE_API_KEY="sk_test_import", BILLING_STRIPE_API_BASE=base,
               PYTHONPATH=str(ROOT), BILLING_GATEWAY_RATE_PER_SECOND="1000", BILLING_SECRET_KEY="import-" + "x" * 32,
               BILLING_GATEWAY="stripe")
    return subprocess.run([sys.executable, "-m", "cli.main", "import", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cut_over_hands_each_subscription_over_at_its_stripe_period_end(engine: Engine, db_url: str) -> None:
    a, subs = account()
    monthly = subs["monthly"]
    item = monthly["items"]["data"][0]
    item.update(current_period_start=ts(d("2026-01-31T09:00")), current_period_end=ts(d("2026-02-28T09:00")))
    stripe_import(engine, db_url, a)  # held until the cut-over
    gw = FakeGateway()
    early = d("2026-03-01")
    assert {(x["action"], x["reason"]) for x in plan_actions(engine, early)} == {("skip", "cut_over")}
    run_cycle(engine, gw, now=early, settings=load_settings())
    assert gw.ledger == []
    # meanwhile Stripe renewed the monthly one (Feb 28 -> Mar 31) and collected it
    item.update(current_period_start=ts(d("2026-02-28T09:00")), current_period_end=ts(d("2026-03-31T09:00")))
    a.invoice(monthly, period=(d("2026-02-28T09:00"), d("2026-03-31T09:00")), amount=700)
    a.invoice(subs["yearly"], period=(d("2025-06-15"), d("2026-06-15")), amount=12000)
    a.invoice(subs["ending"], period=(d("2026-02-25"), d("2026-03-25")), amount=700)

    with serving(a) as base:  # type: ignore[arg-type]
        dry = _cli(db_url, base, "cutover", "--at", "2026-03-10T12:00:00Z")
        assert dry.returncode == 0, dry.stderr
        assert "5 subscription(s) to hand over; nothing was changed. Run again with --yes to do it." in dry.stdout
        assert f"would set cancel_at_period_end on Stripe {monthly['id']} (ada@example.com" in dry.stdout
        assert [r for r in a.requests if r.method == "post"] == []
        done = _cli(db_url, base, "cutover", "--yes", "--at", "2026-03-10T12:00:00Z")
        assert done.returncode == 0, done.stderr
        assert "5 handed over, 0 left held" in done.stdout
    posts = [r for r in a.requests if r.method == "post"]
    assert sorted(r.path.rsplit("/", 1)[1] for r in posts) == sorted(
        subs[k]["id"] for k in ("monthly", "yearly", "trialing", "past_due", "ending"))
    assert all(r.params == {"cancel_at_period_end": "true"} and r.idempotency_key for r in posts)
    assert all(a.objects[subs[k]["id"]]["cancel_at_period_end"] for k in ("monthly", "yearly", "past_due"))
    mine = by_stripe_id(engine)
    assert {k: mine[subs[k]["id"]].charge_from for k in ("monthly", "trialing", "past_due", "yearly", "ending")} == {
        "monthly": d("2026-03-31T09:00"), "trialing": d("2026-03-20"), "past_due": d("2026-04-01"),
        "yearly": d("2026-06-15"), "ending": d("2026-03-25")}
    assert cutover.pending(engine) == []

    for day in range(10, 32):
        run_cycle(engine, gw, now=datetime(2026, 3, day, 12, tzinfo=UTC), settings=load_settings())
    run_cycle(engine, gw, now=d("2026-04-01T12:00"), settings=load_settings())
    run_cycle(engine, gw, now=d("2026-04-01T12:00"), settings=load_settings())
    names = {mine[s["id"]].id: k for k, s in subs.items() if s["id"] in mine}
    assert Counter(names[e.metadata["subscription_id"]] for e in gw.ledger) == {
        "trialing": 1, "monthly": 1, "past_due": 1}  # the past_due period of March stays Stripe's
    with Session(engine) as s:
        starts = {names[i.subscription_id]: i.period_start for i in s.exec(select(Invoice))}
    assert starts == {"trialing": d("2026-03-20"), "monthly": d("2026-03-31T09:00"), "past_due": d("2026-04-01")}

    client = service.stripe_client(engine, settings(db_url), http_client=a, limiter=FAST)
    checked, findings = cutover.reconcile(engine, client, now=d("2026-04-01T12:00"))
    assert checked == 4  # the yearly one is handed over in June
    assert [(f.problem, names[f.subscription_id]) for f in findings] == [("stripe_unpaid", "past_due")]
    a.objects[a.objects[subs["past_due"]["id"]]["latest_invoice"]]["status"] = "paid"  # Stripe's retry worked
    assert cutover.reconcile(engine, client, now=d("2026-04-01T12:00"))[1] == []
    a.invoice(monthly, period=(d("2026-03-31T09:00"), d("2026-04-30T09:00")), amount=700)  # Stripe renewed anyway
    _checked, findings = cutover.reconcile(engine, client, now=d("2026-04-01T12:00"))
    assert [(f.problem, names[f.subscription_id], f.period_start) for f in findings] == [
        ("double", "monthly", d("2026-03-31T09:00"))]


def test_cut_over_with_pause_keeps_the_stripe_subscriptions_but_voids_their_collection(engine: Engine,
                                                                                        db_url: str) -> None:
    a, subs = account()
    stripe_import(engine, db_url, a)
    client = service.stripe_client(engine, settings(db_url), http_client=a, limiter=FAST)
    result = cutover.execute(engine, client, now=d("2026-03-10T12:00"), pause=True)
    assert len(result.handed_over) == 5 and result.not_handed_over == []
    monthly = a.objects[subs["monthly"]["id"]]
    assert monthly["pause_collection"] == {"behavior": "void", "resumes_at": None}
    assert monthly["cancel_at_period_end"] is False
    assert by_stripe_id(engine)[monthly["id"]].charge_from == d("2026-03-31T09:00")
    again = cutover.execute(engine, client, now=d("2026-03-10T12:00"), pause=True)  # nothing left to do
    assert again.handed_over == [] and len([r for r in a.requests if r.method == "post"]) == 5
