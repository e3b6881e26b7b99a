"""`billing plan reprice`, `billing plan discount-cap`, `billing coupon ...`,
`billing subscription pause / resume / apply-coupon / remove-coupon` (docs/lifecycle-pricing.md)."""

from __future__ import annotations

from typing import Any

import typer

from billing_engine import coupons, pauses, pricing, subscriptions
from billing_engine.audit import cli_actor
from billing_engine.errors import ValidationError
from billing_engine.models import Coupon
from billing_engine.money import Money, format_minor, normalize_currency
from billing_engine.settings import get_settings
from cli.catalog import plan_app
from cli.common import JsonOpt, console, handle_errors, make_table, parse_at, print_json, print_record, unit_of_work
from cli.subscriptions import sub_app

coupon_app = typer.Typer(help="Create, list and retire coupons (discounts on invoices).", no_args_is_help=True)
AtOpt = typer.Option(None, "--at", help="Act as of this ISO time (default: now).")


def reprice(
    plan: str = typer.Argument(..., help="Plan code or id."),
    amount: str = typer.Option(..., help="New price in major units, e.g. 29.00."),
    notice_days: int | None = typer.Option(None, help="Days of notice before existing subscribers pay it "
                                                      "(default BILLING_PRICE_NOTICE_DAYS, 30; at least 7)."),
    at: str | None = AtOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Change a plan's price: new subscribers at once, existing ones from their first renewal after
    the notice. Every subscriber is e-mailed the old and new price, the date and the cancel link."""
    now = parse_at(at)
    with unit_of_work() as s:
        from billing_engine import plans

        p = plans.get(s, plan)
        minor = Money.parse(amount, p.currency, field="amount").amount
        res = pricing.reprice(s, p.id, amount_minor=minor, notice_days=notice_days, now=now, actor=cli_actor(),
                              default_notice_days=get_settings().price_notice_days,
                              default_locale=get_settings().default_locale)
        data = pricing.summary(res.change) | {"plan_code": res.plan.code}
    if json_out:
        print_json(data)
    else:
        cur = str(data["currency"])
        console.print(f"plan [bold]{data['plan_code']}[/]: {format_minor(int(data['old_amount_minor']), cur)} -> "
                      f"{format_minor(int(data['amount_minor']), cur)} {cur}; existing subscribers from their first "
                      f"renewal on or after {str(data['effective_at'])[:19]}; {data['subscribers_notified']} notified")


def discount_cap(
    plan: str = typer.Argument(..., help="Plan code or id."),
    percent: int | None = typer.Argument(None, help="Largest coupon discount in percent (omit: the default)."),
    at: str | None = AtOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Set the largest discount a coupon may give on this plan (default BILLING_MAX_DISCOUNT_PERCENT, 30)."""
    now = parse_at(at)
    with unit_of_work() as s:
        p = coupons.set_plan_cap(s, plan, percent, now=now, actor=cli_actor())
        data = {"plan": p.code, "max_discount_percent": coupons.cap_percent(p), "own_cap": p.max_discount_percent}
    if json_out:
        print_json(data)
    else:
        console.print(f"plan [bold]{data['plan']}[/]: coupons give at most {data['max_discount_percent']}%")


def _coupon_dict(c: Coupon) -> dict[str, Any]:
    d = coupons.summary(c)
    if c.amount_off_minor is not None and c.currency:
        d["amount_off"] = Money(c.amount_off_minor, c.currency).to_major_str()
    return d


def _describe(d: dict[str, Any]) -> str:
    off = f"{d['percent_off']}%" if d["percent_off"] else f"{d.get('amount_off')} {d['currency']}"
    dur = f"{d['duration_periods']} periods" if d["duration"] == "repeating" else str(d["duration"])
    return f"{off} off, {dur}"


@coupon_app.command("create")
@handle_errors
def coupon_create(
    code: str = typer.Argument(..., help="Code customers type, e.g. WELCOME20 (case-insensitive)."),
    percent_off: int | None = typer.Option(None, help="Percent off (1-100)."),
    amount_off: str | None = typer.Option(None, help="Fixed amount off in major units (with --currency)."),
    currency: str | None = typer.Option(None, help="Currency of --amount-off."),
    duration: str = typer.Option("once", help="once | repeating | forever."),
    periods: int | None = typer.Option(None, help="repeating: how many periods."),
    plan: list[str] = typer.Option([], "--plan", help="Only for this plan code (repeatable)."),
    max_redemptions: int | None = typer.Option(None, help="At most this many redemptions in all."),
    redeem_by: str | None = typer.Option(None, help="Last instant it can be applied (ISO)."),
    reusable: bool = typer.Option(False, "--reusable", help="A customer may use it more than once."),
    name: str = typer.Option("", help="Display name."),
    at: str | None = AtOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Create a coupon."""
    now = parse_at(at)
    if amount_off is not None and not currency:
        raise ValidationError("--amount-off needs --currency", field="currency")
    amount_minor = Money.parse(amount_off, normalize_currency(currency or ""), field="amount_off").amount \
        if amount_off is not None else None
    by = parse_at(redeem_by, "--redeem-by") if redeem_by else None
    with unit_of_work() as s:
        c = coupons.create(s, code=code, percent_off=percent_off, amount_off_minor=amount_minor, currency=currency,
                           duration=duration, duration_periods=periods, plan_codes=plan,
                           max_redemptions=max_redemptions, redeem_by=by, once_per_customer=not reusable,
                           name=name, now=now, actor=cli_actor())
        data = _coupon_dict(c)
    if json_out:
        print_json(data)
    else:
        console.print(f"created coupon [bold]{data['code']}[/] ({data['id']}): {_describe(data)}")


@coupon_app.command("list")
@handle_errors
def coupon_list(
    active: bool | None = typer.Option(None, "--active/--inactive", help="Filter by active flag."),
    json_out: bool = JsonOpt,
) -> None:
    """List coupons."""
    with unit_of_work() as s:
        rows = [_coupon_dict(c) for c in coupons.list_coupons(s, active=active)]
    if json_out:
        print_json(rows)
        return
    t = make_table("code", "discount", "plans", "used", "redeem by", "active")
    for r in rows:
        used = f"{r['times_redeemed']}/{r['max_redemptions']}" if r["max_redemptions"] else str(r["times_redeemed"])
        t.add_row(str(r["code"]), _describe(r), ", ".join(r["plans"]) or "all", used,
                  str(r["redeem_by"] or "")[:19], "yes" if r["active"] else "no")
    console.print(t)


@coupon_app.command("show")
@handle_errors
def coupon_show(code: str = typer.Argument(..., help="Coupon code or id."), json_out: bool = JsonOpt) -> None:
    """Show one coupon."""
    with unit_of_work() as s:
        data = _coupon_dict(coupons.get(s, code))
    if json_out:
        print_json(data)
    else:
        print_record(data)


@coupon_app.command("deactivate")
@handle_errors
def coupon_deactivate(code: str = typer.Argument(..., help="Coupon code or id."), at: str | None = AtOpt,
                      json_out: bool = JsonOpt) -> None:
    """No new redemptions (the subscriptions that have it keep their discount as agreed)."""
    now = parse_at(at)
    with unit_of_work() as s:
        data = _coupon_dict(coupons.deactivate(s, code, now=now, actor=cli_actor()))
    if json_out:
        print_json(data)
    else:
        console.print(f"coupon [bold]{data['code']}[/] deactivated")


def _sub_out(s: Any, sub_id: str, json_out: bool, line: str) -> None:
    data = subscriptions.summary(s, subscriptions.get(s, sub_id))
    if json_out:
        print_json(data)
    else:
        console.print(line.format(**data))


def pause_cmd(
    subscription: str = typer.Argument(..., help="Subscription id."),
    at_period_end: bool = typer.Option(False, "--at-period-end", help="Pause when the paid period ends."),
    until: str | None = typer.Option(None, "--until", help="Resume by itself at this ISO time."),
    at: str | None = AtOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Pause collection (now, or at period end), optionally until a date: no charges, no reminders."""
    now = parse_at(at)
    resumes_at = parse_at(until, "--until") if until else None
    with unit_of_work() as s:
        sub = pauses.pause(s, subscriptions.get_for_update(s, subscription), now=now, at_period_end=at_period_end,
                           resumes_at=resumes_at, actor=cli_actor())
        _sub_out(s, sub.id, json_out, "{id}: {status}" + (", pauses at period end" if sub.pause_at_period_end else
                                                       ", paused") + ("; resumes {resumes_at}" if resumes_at else ""))


def resume_cmd(
    subscription: str = typer.Argument(..., help="Subscription id."),
    at: str | None = AtOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Resume a paused subscription (or cancel a scheduled pause). Rule: docs/lifecycle-pricing.md."""
    now = parse_at(at)
    with unit_of_work() as s:
        sub = pauses.resume(s, subscriptions.get_for_update(s, subscription), now=now, actor=cli_actor())
        _sub_out(s, sub.id, json_out, "{id}: {status}, next charge {next_charge_at}")


def apply_coupon_cmd(
    subscription: str = typer.Argument(..., help="Subscription id."),
    coupon: str = typer.Argument(..., help="Coupon code or id."),
    at: str | None = AtOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Apply a coupon to a subscription: it discounts the next invoices written."""
    now = parse_at(at)
    with unit_of_work() as s:
        coupons.redeem(s, subscriptions.get_for_update(s, subscription), coupon, now=now, actor=cli_actor())
        _sub_out(s, subscription, json_out, "{id}: coupon applied; next charge {next_charge_amount_minor} "
                                            "{currency} at {next_charge_at}")


def remove_coupon_cmd(
    subscription: str = typer.Argument(..., help="Subscription id."),
    at: str | None = AtOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Stop a subscription's coupon: invoices written from now on are at full price."""
    now = parse_at(at)
    with unit_of_work() as s:
        coupons.remove(s, subscriptions.get_for_update(s, subscription), now=now, actor=cli_actor())
        _sub_out(s, subscription, json_out, "{id}: coupon removed")


def register(app: typer.Typer) -> None:
    plan_app.command("reprice")(handle_errors(reprice))
    plan_app.command("discount-cap")(handle_errors(discount_cap))
    sub_app.command("pause")(handle_errors(pause_cmd))
    sub_app.command("resume")(handle_errors(resume_cmd))
    sub_app.command("apply-coupon")(handle_errors(apply_coupon_cmd))
    sub_app.command("remove-coupon")(handle_errors(remove_coupon_cmd))
    app.add_typer(coupon_app, name="coupon")
