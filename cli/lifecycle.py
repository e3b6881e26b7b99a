"""Lifecycle commands: plan changes (preview / change / cancel a scheduled one),
reactivation, customer / plan / subscription edits and the money-back guarantee refund."""

from __future__ import annotations

from typing import Any

import typer

from billing_engine import edits, first_charge, guarantees, plan_changes, reactivations, subscriptions
from billing_engine.audit import cli_actor
from billing_engine.customers import summary as customer_summary
from billing_engine.gateway.factory import build_gateway
from billing_engine.money import format_minor
from billing_engine.plans import summary as plan_summary
from billing_engine.settings import get_settings
from cli.catalog import customer_app, plan_app
from cli.common import JsonOpt, console, engine, handle_errors, parse_at, print_json, print_record, unit_of_work
from cli.subscriptions import parse_pairs, sub_app

WHEN_HELP = "now (with proration) | period_end (default: now for an upgrade, period end otherwise)."
PRORATION_HELP = "create_prorations (default) | always_invoice | none."


def _money(minor: Any, currency: str) -> str:
    return f"{format_minor(int(minor), currency)} {currency}"


@handle_errors
def preview_change(
    subscription: str = typer.Argument(..., help="Subscription id."),
    plan: str = typer.Option(..., help="The new plan (code or id)."),
    when: str | None = typer.Option(None, help=WHEN_HELP),
    proration_behavior: str | None = typer.Option(None, help=PRORATION_HELP),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Show the exact amounts of a plan change, and a token that holds them for 15 minutes."""
    now = parse_at(at)
    with unit_of_work() as s:
        pv = plan_changes.preview(s, subscriptions.get(s, subscription), plan, now=now, settings=get_settings(),
                                  timing=when, behavior=proration_behavior)
    d = pv.as_dict()
    if json_out:
        print_json(d)
        return
    cur = str(d["currency"])
    console.print(f"{d['direction']} {d['from_plan']} -> {d['to_plan']}, {d['timing']} "
                  f"(effective {str(d['effective_at'])[:19]})")
    if pv.quote is not None:
        console.print(f"credit {_money(d['credit_minor'], cur)}, charge {_money(d['charge_minor'], cur)}, "
                      f"due now {_money(d['amount_due_now_minor'], cur)}, refunded now {_money(d['refund_now_minor'], cur)}")
    console.print(f"preview token (valid until {str(d['preview_expires_at'])[:19]}): {d['preview_token']}")


@handle_errors
def change_plan(
    subscription: str = typer.Argument(..., help="Subscription id."),
    plan: str | None = typer.Option(None, help="The new plan (code or id); optional with --preview-token."),
    when: str | None = typer.Option(None, help=WHEN_HELP),
    proration_behavior: str | None = typer.Option(None, help=PRORATION_HELP),
    preview_token: str | None = typer.Option(None, help="Make the change previewed, at its amounts."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Upgrade / downgrade: now with proration (an upgrade is charged at once) or at period
    end. A declined charge exits 5 and changes nothing."""
    now = parse_at(at)
    settings = get_settings()
    res = plan_changes.change(engine(), build_gateway(settings), subscription_id=subscription, plan=plan, now=now,
                              settings=settings, timing=when, behavior=proration_behavior,
                              preview_token=preview_token, actor=cli_actor(),
                              schedule_days=tuple(settings.dunning_schedule_days))
    with unit_of_work() as s:
        data = subscriptions.summary(s, subscriptions.get(s, subscription)) | {
            "change": res.status, "preview": res.preview.as_dict(), "invoice_id": res.invoice_id,
            "refund_id": res.refund_id}
    if json_out:
        print_json(data)
        return
    d = res.preview.as_dict()
    cur = str(d["currency"])
    if res.status == "scheduled":
        console.print(f"{subscription}: {d['from_plan']} -> {d['to_plan']} scheduled for {str(d['effective_at'])[:19]}")
    else:
        console.print(f"{subscription}: now on {d['to_plan']}; charged {_money(d['amount_due_now_minor'], cur)}, "
                      f"refunded {_money(d['refund_now_minor'], cur)}")


@handle_errors
def cancel_plan_change(
    subscription: str = typer.Argument(..., help="Subscription id."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Take back a plan change scheduled for period end."""
    now = parse_at(at)
    with unit_of_work() as s:
        sub = plan_changes.cancel_scheduled(s, subscriptions.get_for_update(s, subscription), now=now, actor=cli_actor())
        data = subscriptions.summary(s, sub)
    if json_out:
        print_json(data)
    else:
        console.print(f"{subscription}: no plan change scheduled any more")


@handle_errors
def reactivate(
    subscription: str = typer.Argument(..., help="The canceled subscription (sub_...)."),
    plan: str | None = typer.Option(None, help="Plan (default: the old one)."),
    payment_method: str | None = typer.Option(None, help="Card (default: the old one, or the customer's default)."),
    payment_behavior: str = typer.Option("error_if_incomplete", help="error_if_incomplete | allow_incomplete."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Subscribe a customer whose subscription ended again (charged at once), linked to the
    old subscription (reported as MRR reactivation)."""
    now = parse_at(at)
    settings = get_settings()
    res = reactivations.reactivate(engine(), build_gateway(settings), subscription_id=subscription, now=now, plan=plan,
                                   payment_method=payment_method,
                                   payment_behavior=first_charge.parse_behavior(payment_behavior), actor=cli_actor(),
                                   schedule_days=tuple(settings.dunning_schedule_days))
    if res.failed:
        raise first_charge.declined_error(res)
    with unit_of_work() as s:
        data = subscriptions.summary(s, subscriptions.get(s, res.subscription_id)) | {
            "first_charge": res.first_charge.as_dict()}
    if json_out:
        print_json(data)
    else:
        console.print(f"reactivated as {data['id']} ({data['status']}), from {subscription}")


@handle_errors
def update_subscription(
    subscription: str = typer.Argument(..., help="Subscription id."),
    metadata: list[str] = typer.Option([], "--metadata", help="KEY=VALUE (repeatable; KEY= deletes)."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Set a subscription's metadata."""
    now = parse_at(at)
    with unit_of_work() as s:
        sub = edits.update_subscription(s, subscription, now=now, metadata_=parse_pairs(metadata), actor=cli_actor())
        data = subscriptions.summary(s, sub)
    if json_out:
        print_json(data)
    else:
        print_record(data)


@handle_errors
def update_customer(
    customer: str = typer.Argument(..., help="Customer id or external ref."),
    email: str | None = typer.Option(None, help="New e-mail address."),
    name: str | None = typer.Option(None, help="New name."),
    metadata: list[str] = typer.Option([], "--metadata", help="KEY=VALUE (repeatable; KEY= deletes)."),
    default_payment_method: str | None = typer.Option(
        None, help="The card new subscriptions use by default (pm_...; 'none' clears it)."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Change a customer's e-mail, name, metadata or default card (audited)."""
    now = parse_at(at)
    kw: dict[str, Any] = {}
    if default_payment_method is not None:
        kw["default_payment_method"] = None if default_payment_method.lower() == "none" else default_payment_method
    with unit_of_work() as s:
        c = edits.update_customer(s, customer, now=now, email=email, name=name,
                                  metadata_=parse_pairs(metadata) if metadata else None, actor=cli_actor(), **kw)
        data = customer_summary(c)
    if json_out:
        print_json(data)
    else:
        print_record(data)


@handle_errors
def edit_plan(
    plan: str = typer.Argument(..., help="Plan code or id."),
    metadata: list[str] = typer.Option([], "--metadata", help="KEY=VALUE (repeatable; KEY= deletes)."),
    guarantee_days: str | None = typer.Option(
        None, help="Money-back guarantee: full refund on request within N days of the first payment ('none')."),
    customer_pause: bool | None = typer.Option(
        None, "--customer-pause/--no-customer-pause",
        help="Let customers pause and resume from the self-service page (default: off)."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Set a plan's metadata, money-back guarantee window and customer pause."""
    now = parse_at(at)
    kw: dict[str, Any] = {}
    if guarantee_days is not None:
        kw["guarantee_days"] = edits.parse_guarantee(guarantee_days)
    if customer_pause is not None:
        kw["customer_can_pause"] = customer_pause
    with unit_of_work() as s:
        p = edits.update_plan(s, plan, now=now, metadata_=parse_pairs(metadata) if metadata else None,
                              actor=cli_actor(), **kw)
        data = plan_summary(p)
    if json_out:
        print_json(data)
    else:
        print_record(data)


@handle_errors
def guarantee_refund(
    subscription: str = typer.Argument(..., help="Subscription id."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Money-back guarantee: refund everything paid and end the subscription, if still
    within the plan's guarantee window (exit 4 with the deadline otherwise)."""
    now = parse_at(at)
    res = guarantees.refund(engine(), build_gateway(get_settings()), subscription_id=subscription, now=now,
                            actor=cli_actor())
    data = {"subscription_id": res.subscription_id, "refund_ids": res.refund_ids, "amount_minor": res.amount_minor,
            "currency": res.currency, "deadline": res.deadline}
    if json_out:
        print_json(data)
    else:
        console.print(f"{subscription}: refunded {_money(res.amount_minor, res.currency)} under the money-back "
                      f"guarantee (until {res.deadline.isoformat()[:19]}); subscription ended")


def register(app: typer.Typer) -> None:
    sub_app.command("preview-change")(preview_change)
    sub_app.command("change-plan")(change_plan)
    sub_app.command("cancel-plan-change")(cancel_plan_change)
    sub_app.command("reactivate")(reactivate)
    sub_app.command("update")(update_subscription)
    sub_app.command("guarantee-refund")(guarantee_refund)
    customer_app.command("update")(update_customer)
    plan_app.command("edit")(edit_plan)
