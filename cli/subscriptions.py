"""`billing subscribe` and `billing subscription ...`."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from sqlmodel import Session

from billing_engine import cancellations, events, subscriptions
from billing_engine.audit import cli_actor
from billing_engine.models import Subscription
from billing_engine.money import format_minor
from cli.common import JsonOpt, console, handle_errors, make_table, parse_at, print_json, print_record, unit_of_work

sub_app = typer.Typer(help="Show, list, cancel and reactivate subscriptions.", no_args_is_help=True)


def sub_dict(s: Session, sub: Subscription) -> dict[str, object]:
    return subscriptions.summary(s, sub)


def subscribe(
    customer: str = typer.Option(..., help="Customer id or external ref."),
    plan: str = typer.Option(..., help="Plan code or id."),
    payment_method: str = typer.Option(..., help="Payment method id (pm_...) with recorded consent."),
    start: str | None = typer.Option(None, help="Start time (ISO; default now)."),
    trial_days: int | None = typer.Option(None, help="Override the plan's trial length."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Subscribe a customer to a plan. The first charge is made by the next run-cycle."""
    from billing_engine import customers

    now = parse_at(at)
    start_at = parse_at(start, "--start") if start else None
    with unit_of_work() as s:
        c = customers.get(s, customer)
        sub = subscriptions.create(s, customer_id=c.id, plan_id=plan, payment_method_id=payment_method,
                                   now=now, start_at=start_at, trial_days=trial_days, actor=cli_actor())
        data = sub_dict(s, sub)
    if json_out:
        print_json(data)
    else:
        console.print(f"created subscription [bold]{data['id']}[/] ({data['status']}), first charge "
                      f"{format_minor(int(data['amount_minor']), str(data['currency']))} {data['currency']} "  # type: ignore[call-overload]
                      f"at {str(data['next_charge_at'])[:19]}")


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
    status: str | None = typer.Option(None, help="incomplete | trialing | active | past_due | canceled."),
    customer: str | None = typer.Option(None, help="Customer id."),
    plan: str | None = typer.Option(None, help="Plan code or id."),
    limit: int = typer.Option(100, min=1, max=10000, help="At most this many."),
    after: str | None = typer.Option(None, help="Cursor: ids after this one."),
    json_out: bool = JsonOpt,
) -> None:
    """List subscriptions."""
    with unit_of_work() as s:
        rows = [sub_dict(s, x) for x in subscriptions.list_subscriptions(
            s, status=status, customer_id=customer, plan_id=plan, limit=limit, after=after)]
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
        sub = subscriptions.get(s, subscription)
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
        sub = cancellations.undo(s, subscriptions.get(s, subscription), now=when, actor=cli_actor())
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
        sub = subscriptions.change_payment_method(s, subscriptions.get(s, subscription), payment_method,
                                                  now=when, actor=cli_actor())
        data = sub_dict(s, sub)
    if json_out:
        print_json(data)
    else:
        console.print(f"{data['id']}: now charges {data['payment_method_id']}")
