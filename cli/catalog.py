"""`billing plan ...`, `billing customer ...`, `billing payment-method ...`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from billing_engine import card_setup, customers, payment_methods, plans
from billing_engine.audit import cli_actor
from billing_engine.consents import ConsentInput
from billing_engine.errors import ValidationError
from billing_engine.gateway.factory import build_gateway
from billing_engine.models import Plan
from billing_engine.money import Money, normalize_currency
from billing_engine.settings import get_settings
from cli import listing
from cli.common import JsonOpt, console, handle_errors, make_table, parse_at, print_json, print_record, unit_of_work
from cli.paging import one_page

plan_app = typer.Typer(help="Create and list plans (what is sold, at what price, how often).", no_args_is_help=True)
customer_app = typer.Typer(help="Create and list customers.", no_args_is_help=True)
pm_app = typer.Typer(help="Add tokenised cards with the customer's consent.", no_args_is_help=True)


def plan_dict(p: Plan) -> dict[str, Any]:
    return plans.summary(p) | {"amount": Money(p.amount_minor, p.currency).to_major_str()}


@plan_app.command("create")
@handle_errors
def plan_create(
    code: str = typer.Option(..., help="Unique code, e.g. basic-monthly."),
    name: str = typer.Option(..., help="Display name."),
    amount: str = typer.Option(..., help="Price in major units as a decimal string, e.g. 17.00."),
    currency: str = typer.Option(..., help="ISO-4217 code, e.g. USD, EUR, JPY."),
    interval: str = typer.Option("month", help="day | week | month | year."),
    interval_count: int = typer.Option(1, help="Bill every N intervals."),
    trial_days: int = typer.Option(0, help="Free trial length in days."),
    cancel_immediately: bool = typer.Option(False, help="A cancel ends access at once instead of at period end."),
    reminder_days: int | None = typer.Option(None, help="Renewal reminder N days before each charge."),
    tier: str | None = typer.Option(None, help="Tier label for reports (e.g. basic, vip)."),
    receipts: str = typer.Option("each", help="each (a receipt per charge) | off | monthly (one digest a month)."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Create a plan."""
    now = parse_at(at)
    cur = normalize_currency(currency)
    money = Money.parse(amount, cur, field="amount")
    with unit_of_work() as s:
        p = plans.create(s, code=code, name=name, amount_minor=money.amount, currency=cur, interval=interval,
                         interval_count=interval_count, trial_days=trial_days,
                         cancel_immediately=cancel_immediately, reminder_days=reminder_days, tier=tier,
                         receipts=receipts, now=now, actor=cli_actor())
        data = plan_dict(p)
    if json_out:
        print_json(data)
    else:
        console.print(f"created plan [bold]{data['code']}[/] ({data['id']}): {data['amount']} {data['currency']} "
                      f"every {data['interval_count']} {data['interval']}"
                      + (f", {data['trial_days']}-day free trial" if data.get("trial_days") else ""))


@plan_app.command("list")
@handle_errors
def plan_list(
    active: bool | None = typer.Option(None, "--active/--inactive", help="Filter by active flag."),
    limit: int = typer.Option(100, min=1, max=10000, help="At most this many."),
    after: str | None = typer.Option(None, help="Cursor: plan codes after this one."),
    json_out: bool = JsonOpt,
) -> None:
    """List plans (by code)."""
    with unit_of_work() as s:
        rows = [plan_dict(p) for p in one_page(
            plans.list_plans(s, active=active, limit=limit + 1, after=after), limit, cursor_of="code")]
    if json_out:
        print_json(rows)
        return
    t = make_table("code", "name", "price", "every", "trial", "active", "id")
    for r in rows:
        t.add_row(str(r["code"]), str(r["name"]), f"{r['amount']} {r['currency']}",
                  f"{r['interval_count']} {r['interval']}", f"{r['trial_days']}d", "yes" if r["active"] else "no", str(r["id"]))
    console.print(t)


@customer_app.command("create")
@handle_errors
def customer_create(
    email: str = typer.Option(..., help="Where receipts, reminders and the cancel link go."),
    name: str = typer.Option("", help="Full name."),
    external_ref: str | None = typer.Option(None, help="Your own id for this customer (unique)."),
    gateway_customer_id: str | None = typer.Option(None, help="Stripe customer id (cus_...)."),
    locale: str | None = typer.Option(None, help="Language of e-mails and pages: en, ru, he, hu ... "
                                                 "(default: BILLING_DEFAULT_LOCALE)."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Create a customer."""
    now = parse_at(at)
    with unit_of_work() as s:
        c = customers.create(s, email=email, name=name, external_ref=external_ref,
                             gateway_customer_id=gateway_customer_id, locale=locale, now=now, actor=cli_actor())
        data = customers.summary(c)
    if json_out:
        print_json(data)
    else:
        console.print(f"created customer [bold]{data['id']}[/] <{data['email']}>")


@customer_app.command("set-locale")
@handle_errors
def customer_set_locale(
    customer: str = typer.Argument(..., help="Customer id or external ref."),
    locale: str = typer.Argument(..., help="en, ru, he, hu ... ('' for the default from settings)."),
    json_out: bool = JsonOpt,
) -> None:
    """Set the language of the customer's e-mails and pages."""
    with unit_of_work() as s:
        c = customers.set_locale(s, customers.get(s, customer), locale, now=parse_at(None), actor=cli_actor())
        data = customers.summary(c)
    if json_out:
        print_json(data)
    else:
        console.print(f"customer {data['id']}: locale {data['locale'] or 'default'}")


@customer_app.command("list")
@handle_errors
def customer_list(
    email: str | None = typer.Option(None, help="Only this e-mail address."),
    limit: int = typer.Option(100, min=1, max=10000, help="At most this many."),
    after: str | None = typer.Option(None, help="Cursor: ids after this one."),
    created_from: str | None = listing.CreatedFrom,
    created_to: str | None = listing.CreatedTo,
    updated_from: str | None = listing.UpdatedFrom,
    updated_to: str | None = listing.UpdatedTo,
    json_out: bool = JsonOpt,
) -> None:
    """List customers (oldest first; says when more exist)."""
    rng = listing.ranges(created_from, created_to, updated_from, updated_to)
    with unit_of_work() as s:
        found = customers.list_customers(s, email=email, limit=limit + 1, after=after, ranges=rng)
        rows = [customers.summary(c) for c in one_page(found, limit)]
    if json_out:
        print_json(rows)
        return
    t = make_table("id", "email", "name", "external ref", "created")
    for r in rows:
        t.add_row(str(r["id"]), str(r["email"]), str(r["name"]), str(r["external_ref"] or ""), str(r["created_at"])[:19])
    console.print(t)


@pm_app.command("add")
@handle_errors
def pm_add(
    customer: str = typer.Argument(..., help="Customer id (cus_...) or external ref."),
    token: str = typer.Option(..., help="Gateway payment-method token (pm_...). Never a card number."),
    ip: str = typer.Option(..., "--consent-ip", "--consent-ip-address", help="IP address the customer agreed from."),
    user_agent: str = typer.Option(..., "--consent-user-agent", help="Browser user agent at consent."),
    terms_version: str = typer.Option(..., "--terms-version", help="Version label of the terms shown."),
    terms_file: Path | None = typer.Option(None, "--terms-file", help="File with the exact terms text shown."),
    terms_text: str | None = typer.Option(None, "--terms-text", help="The exact terms text shown."),
    amount: str = typer.Option(..., "--consent-amount", help="Amount agreed per period, e.g. 17.00."),
    currency: str = typer.Option(..., "--consent-currency", help="Currency agreed, e.g. USD."),
    interval: str = typer.Option("month", "--consent-interval", help="day | week | month | year."),
    interval_count: int = typer.Option(1, "--consent-interval-count", help="Every N intervals."),
    channel: str = typer.Option("web", "--consent-channel", help="web | email | phone | api | cli | import | in_person."),
    accepted_at: str | None = typer.Option(None, "--consent-accepted-at", help="When they agreed (ISO; default now)."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Store a card token and the consent to charge it off-session."""
    now = parse_at(at)
    if terms_file is not None and terms_text is not None:
        raise ValidationError("give --terms-file or --terms-text, not both", field="terms")
    if terms_file is not None:
        try:
            terms_text = terms_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValidationError(f"cannot read {terms_file}: {exc.strerror}", field="--terms-file") from None
    if terms_text is None:
        raise ValidationError("the exact terms text is required (--terms-file or --terms-text)", field="terms")
    cur = normalize_currency(currency)
    money = Money.parse(amount, cur, field="--consent-amount")
    token = payment_methods.validate_token(token)
    gw = build_gateway(get_settings())
    consent = ConsentInput(
        accepted_at=parse_at(accepted_at, "--consent-accepted-at") if accepted_at else now,
        ip_address=ip, user_agent=user_agent, terms_version=terms_version, terms_text=terms_text,
        amount_minor=money.amount, currency=cur, interval=interval, interval_count=interval_count, channel=channel,
    )
    with unit_of_work() as s:
        c = customers.get(s, customer)
        # the gateway sets the card up for off-session use (Stripe: SetupIntent) before we store it
        pm, cons = card_setup.add_with_setup(s, gw, customer_id=c.id, token=token, consent=consent, now=now,
                                             actor=cli_actor())
        data = payment_methods.summary(pm) | {"consent_id": cons.id, "terms_sha256": cons.terms_sha256}
    if json_out:
        print_json(data)
    else:
        console.print(f"added {data['brand']} ····{data['last4']} as [bold]{data['id']}[/] with consent {data['consent_id']}")


@pm_app.command("list")
@handle_errors
def pm_list(customer: str = typer.Argument(..., help="Customer id or external ref."), json_out: bool = JsonOpt) -> None:
    """List a customer's payment methods."""
    with unit_of_work() as s:
        c = customers.get(s, customer)
        rows = [payment_methods.summary(p) for p in payment_methods.list_for_customer(s, c.id)]
    if json_out:
        print_json(rows)
        return
    t = make_table("id", "brand", "last4", "expires", "status")
    for r in rows:
        t.add_row(str(r["id"]), str(r["brand"]), str(r["last4"]), f"{r['exp_month']}/{r['exp_year']}", str(r["status"]))
    console.print(t)


@plan_app.command("show")
@handle_errors
def plan_show(plan: str = typer.Argument(..., help="Plan code or id."), json_out: bool = JsonOpt) -> None:
    """Show one plan and how many subscriptions it has."""
    with unit_of_work() as s:
        p = plans.get(s, plan)
        data = plan_dict(p) | {"subscriber_count": plans.subscriber_count(s, p.id)}
    if json_out:
        print_json(data)
        return
    print_record(data)


@plan_app.command("update")
@handle_errors
def plan_update(
    plan: str = typer.Argument(..., help="Plan code or id."),
    name: str | None = typer.Option(None, help="New display name."),
    active: bool | None = typer.Option(None, "--active/--inactive", help="Offer the plan to new subscribers or not."),
    amount: str | None = typer.Option(None, help="New price (only while the plan has no subscribers)."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Rename or (de)activate a plan. A plan with subscribers is never re-priced: create a new one."""
    now = parse_at(at)
    with unit_of_work() as s:
        p = plans.get(s, plan)
        amount_minor = Money.parse(amount, p.currency, field="amount").amount if amount is not None else None
        p = plans.update(s, p.id, name=name, active=active, amount_minor=amount_minor, now=now, actor=cli_actor())
        data = plan_dict(p)
    if json_out:
        print_json(data)
    else:
        console.print(f"updated plan [bold]{data['code']}[/]: {data['name']}, "
                      f"{'active' if data['active'] else 'inactive'}, {data['amount']} {data['currency']}")


@customer_app.command("show")
@handle_errors
def customer_show(customer: str = typer.Argument(..., help="Customer id or external ref."), json_out: bool = JsonOpt) -> None:
    """Show one customer with their cards."""
    with unit_of_work() as s:
        c = customers.get(s, customer)
        data = customers.summary(c) | {"payment_methods": [payment_methods.summary(p) for p in payment_methods.list_for_customer(s, c.id)]}
    if json_out:
        print_json(data)
        return
    print_record(data, skip=("payment_methods",))
    for pm in data["payment_methods"]:
        console.print(f"  {pm['id']}: {pm['brand']} ····{pm['last4']} {pm['exp_month']}/{pm['exp_year']} ({pm['status']})")
