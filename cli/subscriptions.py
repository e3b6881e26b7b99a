"""`billing subscribe` and `billing subscription ...`."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from sqlmodel import Session

from billing_engine import cancellations, events, subscriptions
from billing_engine.audit import cli_actor
from billing_engine.models import Subscription, SubscriptionStatus
from billing_engine.money import format_minor
from cli import listing
from cli.common import JsonOpt, console, handle_errors, make_table, parse_at, print_json, print_record, unit_of_work
from cli.paging import one_page

sub_app = typer.Typer(help="Show, list, cancel and reactivate subscriptions.", no_args_is_help=True)


def sub_dict(s: Session, sub: Subscription) -> dict[str, object]:
    return subscriptions.summary(s, sub)


def subscribe(
    customer: str = typer.Option(..., help="Customer id or external ref."),
    plan: str = typer.Option(..., help="Plan code or id."),
    payment_method: str | None = typer.Option(
        None, help="Payment method id (pm_...) with recorded consent (default: the customer's default card)."),
    start: str | None = typer.Option(None, help="Start time (ISO; default now)."),
    trial_days: int | None = typer.Option(None, help="Override the plan's trial length."),
    payment_behavior: str = typer.Option(
        "error_if_incomplete", help="On a declined first charge: error_if_incomplete (keep nothing) | "
        "allow_incomplete (keep it incomplete for a retry)."),
    defer_first_charge: bool = typer.Option(
        False, "--defer-first-charge", help="Leave the first charge to the next run-cycle (bulk loads)."),
    metadata: list[str] = typer.Option([], "--metadata", help="KEY=VALUE (repeatable)."),
    coupon: str | None = typer.Option(None, help="Apply this coupon code."),
    paused: bool = typer.Option(False, "--paused", help="Start paused (no charge until resumed)."),
    resume_at: str | None = typer.Option(None, "--resume-at", help="Start paused until this ISO time."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Subscribe a customer to a plan and charge the first period at once (a trial, a future
    start or --defer-first-charge leave it to the run-cycle). A declined card exits 5."""
    from billing_engine import first_charge
    from billing_engine.gateway.factory import build_gateway
    from billing_engine.settings import get_settings
    from cli.common import engine

    now = parse_at(at)
    start_at = parse_at(start, "--start") if start else None
    settings = get_settings()
    res = first_charge.subscribe(
        engine(), build_gateway(settings), customer=customer, plan=plan, payment_method=payment_method, now=now,
        start_at=start_at, trial_days=trial_days, payment_behavior=first_charge.parse_behavior(payment_behavior),
        defer_first_charge=defer_first_charge, metadata_=parse_pairs(metadata) if metadata else None,
        actor=cli_actor(), schedule_days=tuple(settings.dunning_schedule_days), coupon=coupon, paused=paused,
        resumes_at=parse_at(resume_at, "--resume-at") if resume_at else None)
    if res.failed:
        raise first_charge.declined_error(res)
    with unit_of_work() as s:
        data = sub_dict(s, subscriptions.get(s, res.subscription_id)) | {"first_charge": res.first_charge.as_dict()}
    if json_out:
        print_json(data)
        return
    fc = res.first_charge
    if fc.status == "succeeded":
        console.print(f"created subscription [bold]{data['id']}[/] ({data['status']}), charged "
                      f"{format_minor(int(fc.amount_minor or 0), str(fc.currency))} {fc.currency} "
                      f"(invoice {fc.invoice_id}), renews {str(data['current_period_end'])[:19]}")
    elif data["next_charge_at"] is None:
        console.print(f"created subscription [bold]{data['id']}[/] ({data['status']}), no charge until resumed")
    else:
        console.print(f"created subscription [bold]{data['id']}[/] ({data['status']}), first charge "
                      f"{format_minor(int(data['next_charge_amount_minor']), str(data['currency']))} {data['currency']} "  # type: ignore[call-overload]
                      f"at {str(data['next_charge_at'])[:19]}")


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` options -> a dict (an empty VALUE deletes the key in an update)."""
    from billing_engine.errors import ValidationError

    out: dict[str, str] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"expected KEY=VALUE, got {p!r}", field="--metadata")
        out[key.strip()] = value
    return out


@sub_app.command("show")
@handle_errors
def show(subscription: str = typer.Argument(..., help="Subscription id (sub_...)."), json_out: bool = JsonOpt) -> None:
    """Show one subscription with its history."""
    with unit_of_work() as s:
        sub = subscriptions.get(s, subscription)
        data = subscriptions.summary(s, sub, now=datetime.now(UTC))
        data["events"] = [{"id": e.id, "type": e.type, "at": e.occurred_at, "actor": e.actor,
                           "payload": events.payload_of(e)} for e in events.for_subscription(s, sub.id)]
    if json_out:
        print_json(data)
        return
    print_record(data, skip=("events",))
    ev = make_table("at", "event", "actor")
    for e in data["events"]:
        ev.add_row(str(e["at"])[:19], e["type"], e["actor"])
    console.print(ev)


@sub_app.command("list")
@handle_errors
def list_cmd(
    status: str | None = typer.Option(None, help=" | ".join(SubscriptionStatus) + "."),
    customer: str | None = typer.Option(None, help="Customer id or external reference."),
    plan: str | None = typer.Option(None, help="Plan code or id."),
    limit: int = typer.Option(100, min=1, max=10000, help="At most this many."),
    after: str | None = typer.Option(None, help="Cursor: ids after this one."),
    created_from: str | None = listing.CreatedFrom,
    created_to: str | None = listing.CreatedTo,
    updated_from: str | None = listing.UpdatedFrom,
    updated_to: str | None = listing.UpdatedTo,
    json_out: bool = JsonOpt,
) -> None:
    """List subscriptions (oldest first; says when more exist)."""
    rng = listing.ranges(created_from, created_to, updated_from, updated_to)
    with unit_of_work() as s:
        found = subscriptions.list_subscriptions(s, status=status, customer_id=customer, plan_id=plan,
                                                 limit=limit + 1, after=after, ranges=rng)
        rows = [sub_dict(s, x) for x in one_page(found, limit)]
    if json_out:
        print_json(rows)
        return
    t = make_table("id", "status", "customer", "plan", "period end", "cancel")
    for r in rows:
        if r["status"] == "canceled":
            cancel = f"{r['cancellation_kind']} ({r['cancellation_reason'] or 'no reason'}), ended {str(r['ended_at'])[:10]}"
        elif r["cancel_at_period_end"]:
            cancel = f"{r['cancellation_kind']}, ends at period end"
        else:
            cancel = ""
        t.add_row(str(r["id"]), str(r["status"]), str(r["customer_email"]), str(r["plan_code"]),
                  str(r["current_period_end"])[:19], cancel)
    console.print(t)


@sub_app.command("cancel")
@handle_errors
def cancel_cmd(
    subscription: str = typer.Argument(..., help="Subscription id."),
    kind: str = typer.Option("voluntary", help="voluntary (customer's choice) | involuntary."),
    reason: str | None = typer.Option(None, help="Reason code, e.g. too_expensive."),
    comment: str | None = typer.Option(None, help="Free text."),
    now_: bool = typer.Option(False, "--now", help="End access at once instead of at period end."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Cancel a subscription (at period end by default)."""
    when = parse_at(at)
    with unit_of_work() as s:
        sub = subscriptions.get_for_update(s, subscription)
        res = cancellations.cancel(s, sub, kind=kind, reason=reason, comment=comment,
                                   at_period_end=False if now_ else None, now=when, actor=cli_actor())
        data = sub_dict(s, res.subscription) | {"effective_at": res.effective_at, "changed": res.changed}
    if json_out:
        print_json(data)
    else:
        console.print(f"{data['id']}: canceled ({data['cancellation_kind']}), access ends {str(data['effective_at'])[:19]}")


@sub_app.command("undo-cancel")
@handle_errors
def undo_cmd(
    subscription: str = typer.Argument(..., help="Subscription id."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Take back a cancellation before the period ends."""
    when = parse_at(at)
    with unit_of_work() as s:
        sub = cancellations.undo(s, subscriptions.get_for_update(s, subscription), now=when, actor=cli_actor())
        data = sub_dict(s, sub)
    if json_out:
        print_json(data)
    else:
        console.print(f"{data['id']}: reactivated ({data['status']}), renews {str(data['current_period_end'])[:19]}")


@sub_app.command("change-payment-method")
@handle_errors
def change_pm_cmd(
    subscription: str = typer.Argument(..., help="Subscription id."),
    payment_method: str = typer.Option(..., help="New payment method id (with consent)."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Switch the card; a past-due subscription is retried on the next run-cycle."""
    when = parse_at(at)
    with unit_of_work() as s:
        sub = subscriptions.change_payment_method(s, subscriptions.get_for_update(s, subscription), payment_method,
                                                  now=when, actor=cli_actor())
        data = sub_dict(s, sub)
    if json_out:
        print_json(data)
    else:
        console.print(f"{data['id']}: now charges {data['payment_method_id']}")
