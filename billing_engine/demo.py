"""The demo: a year of billing for a small paid newsletter, on SQLite, fake gateway.

Loads ``fixtures/`` (plans, customers, the consent terms), then steps day by day:
customers subscribe, a few cancel (and one changes their mind), some cards decline
softly and recover, some decline hard, one customer replaces a failing card; every day
runs the same ``run_cycle`` that ``billing run-cycle`` runs. Returns monthly figures.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from billing_engine import cancellations, customers, payment_methods, plans, subscriptions
from billing_engine.consents import ConsentInput
from billing_engine.cycle import CycleSummary, run_cycle
from billing_engine.db import transaction
from billing_engine.errors import BillingError
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Customer, Notification, Subscription
from billing_engine.money import Money
from billing_engine.reports import build_query, churn_report
from billing_engine.settings import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# The demo's seller, the same in every e-mail and page (plan names say "The Ledger" too).
DEMO_SELLER: dict[str, str] = {
    "company_name": "The Ledger",
    "mail_from": "The Ledger <billing@ledger.example>",
    "support_email": "help@ledger.example",
    "company_address": "The Ledger Ltd, 1 Example Street, Springfield 12345, USA",
    "company_tax_id": "EIN 00-0000000 (demo)",
    "signup_url": "https://ledger.example/subscribe",
}


@dataclass
class MonthFigures:
    month: str
    new: int = 0
    charges: int = 0
    succeeded: int = 0
    declined_soft: int = 0
    declined_hard: int = 0
    canceled_involuntary: int = 0
    cancellations_effective: int = 0
    collected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    active_at_end: int = 0


@dataclass
class DemoResult:
    months: list[MonthFigures]
    statuses: dict[str, int]
    notifications: int
    log: list[str]


def load_fixtures(directory: Path = FIXTURES) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    plans_data = json.loads((directory / "plans.json").read_text(encoding="utf-8"))
    customers_data = json.loads((directory / "customers.json").read_text(encoding="utf-8"))
    terms = (directory / "terms.txt").read_text(encoding="utf-8")
    return plans_data, customers_data, terms


def run_demo(
    engine: Engine,
    *,
    start: datetime,
    months: int = 12,
    settings: Settings,
    fixtures: Path = FIXTURES,
    gateway: FakeGateway | None = None,
    deliver: Callable[[Engine, datetime], int] | None = None,
    on_day: Callable[[datetime, CycleSummary], None] | None = None,
) -> DemoResult:
    gateway = gateway or FakeGateway()
    plans_data, customers_data, terms = load_fixtures(fixtures)
    log: list[str] = []
    with transaction(engine) as s:
        for p in plans_data:
            money = Money.parse(p["amount"], p["currency"])
            plans.create(s, code=p["code"], name=p["name"], amount_minor=money.amount, currency=p["currency"],
                         interval=p["interval"], interval_count=p.get("interval_count", 1),
                         trial_days=p.get("trial_days", 0), tier=p.get("tier"),
                         cancel_immediately=p.get("cancel_immediately", False), now=start, actor="demo")
    sub_ids: dict[str, str] = {}  # email -> subscription id
    end = _add_months(start, months)
    figures: dict[str, MonthFigures] = {}
    day = start
    while day < end:
        key = day.strftime("%Y-%m")
        fig = figures.setdefault(key, MonthFigures(month=key))
        offset = (day - start).days
        with transaction(engine) as s:
            for c in customers_data:
                if c["start_day"] == offset:
                    sub_ids[c["email"]] = _subscribe(s, c, terms, gateway, day)
                    fig.new += 1
                sid = sub_ids.get(c["email"])
                if sid is None:
                    continue
                cancel = c.get("cancel")
                if cancel and c["start_day"] + cancel["day_after_start"] == offset:
                    sub = subscriptions.get(s, sid)
                    try:
                        res = cancellations.cancel(s, sub, kind="voluntary", reason=cancel.get("reason"),
                                                   comment=cancel.get("comment"), now=day, actor="customer")
                        log.append(f"{day.date()} {c['email']} canceled ({cancel.get('reason')}), "
                                   f"access until {res.effective_at.date()}")
                    except BillingError as exc:
                        log.append(f"{day.date()} {c['email']} could not cancel: {exc}")
                if cancel and "undo_after_days" in cancel and c["start_day"] + cancel["day_after_start"] + cancel["undo_after_days"] == offset:
                    try:
                        cancellations.undo(s, subscriptions.get(s, sid), now=day, actor="customer")
                        log.append(f"{day.date()} {c['email']} changed their mind: reactivated")
                    except BillingError as exc:
                        log.append(f"{day.date()} {c['email']} could not reactivate: {exc}")
                repl = c.get("replace_card")
                if repl and c["start_day"] + repl["day_after_start"] == offset:
                    sub = subscriptions.get(s, sid)
                    if sub.status != "canceled":
                        pm = _add_card(s, c, repl["card"], terms, gateway, day, sub.plan_id)
                        subscriptions.change_payment_method(s, sub, pm.id, now=day, actor="customer")
                        log.append(f"{day.date()} {c['email']} replaced their card (retry at once)")
        summary = run_cycle(engine, gateway, now=day, settings=settings, deliver=deliver)
        fig.charges += summary.charged
        fig.succeeded += summary.succeeded
        fig.declined_soft += summary.declined_soft
        fig.declined_hard += summary.declined_hard
        fig.canceled_involuntary += summary.canceled_involuntary
        fig.cancellations_effective += summary.cancellations_effective
        for cur, v in summary.collected.items():
            fig.collected[cur] += v
        log.extend(f"{day.date()} {e}" for e in summary.errors)
        if on_day:
            on_day(day, summary)
        day += timedelta(days=1)
        if day.strftime("%Y-%m") != key or day >= end:
            with Session(engine) as s:
                fig.active_at_end = int(s.exec(select(func.count()).select_from(Subscription).where(
                    Subscription.status.in_(["active", "trialing", "past_due"]))).one())  # type: ignore[attr-defined]
    with Session(engine) as s:
        statuses = {st: int(n) for st, n in s.exec(
            select(Subscription.status, func.count()).group_by(Subscription.status)).all()}
        notes = int(s.exec(select(func.count()).select_from(Notification)).one())
    return DemoResult(months=list(figures.values()), statuses=statuses, notifications=notes, log=log)


MONTH_COLUMNS = ("month", "sign-ups", "new subscribers", "charges paid", "soft declines", "hard declines",
                 "voluntary churn", "involuntary churn", "ended unpaid")


def report_range(start: datetime, months: int) -> tuple[str, str]:
    """The demo's range as report dates: first day .. last day (inclusive)."""
    return str(start.date()), str((_add_months(start, months) - timedelta(days=1)).date())


def month_by_month(engine: Engine, result: DemoResult, *, start: datetime, months: int) -> list[dict[str, Any]]:
    """One row per month. The run-cycle's own counters keep their own names (sign-ups,
    charges paid, declines); the subscriber figures -- new subscribers, voluntary and
    involuntary churn, ended unpaid (canceled trials, first charges that never succeeded:
    not churn) -- come from the monthly churn report itself (every currency added up), so the
    table uses the reports' definitions and adds up to the totals printed under it."""
    first, last = report_range(start, months)
    q = build_query(start=first, end=last, period="month", now=start)
    churn: dict[str, Counter[str]] = defaultdict(Counter)
    for r in churn_report(engine, q).rows:
        c = churn[r["period_start"].strftime("%Y-%m")]
        for k in ("new", "voluntary", "involuntary", "ended_unpaid"):
            c[k] += int(r[k])
    rows = []
    for m in result.months:
        c = churn.get(m.month, Counter())
        rows.append({"month": m.month, "sign-ups": m.new, "new subscribers": c["new"], "charges paid": m.succeeded,
                     "soft declines": m.declined_soft, "hard declines": m.declined_hard,
                     "voluntary churn": c["voluntary"], "involuntary churn": c["involuntary"],
                     "ended unpaid": c["ended_unpaid"], "collected": dict(m.collected), "live": m.active_at_end})
    return rows


def _add_months(start: datetime, months: int) -> datetime:
    from billing_engine.periods import Interval, boundary

    return boundary(start, Interval.MONTH, 1, months)


def _add_card(s: Session, c: dict[str, Any], token: str, terms: str, gateway: FakeGateway, day: datetime,
              plan_id: str) -> Any:
    plan = plans.get(s, plan_id)
    cust = s.exec(select(Customer).where(Customer.email == c["email"])).first()
    assert cust is not None
    consent = ConsentInput(accepted_at=day - timedelta(minutes=3), ip_address=c["ip"], user_agent=c["user_agent"],
                           terms_version="2026-01", terms_text=terms, amount_minor=plan.amount_minor,
                           currency=plan.currency, interval=plan.interval, interval_count=plan.interval_count,
                           channel="web", plan_id=plan.id)
    pm, _ = payment_methods.add(s, customer_id=cust.id, token=token, gateway=gateway.name,
                                card=gateway.card_details(token), consent=consent, now=day, actor="customer")
    return pm


def _subscribe(s: Session, c: dict[str, Any], terms: str, gateway: FakeGateway, day: datetime) -> str:
    plan = plans.get(s, c["plan"])
    cust = customers.create(s, email=c["email"], name=c["name"], now=day, actor="demo")
    pm = _add_card(s, c, c["card"], terms, gateway, day, plan.id)
    sub = subscriptions.create(s, customer_id=cust.id, plan_id=plan.id, payment_method_id=pm.id, now=day,
                               actor="customer")
    return sub.id
