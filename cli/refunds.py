"""`billing refund create|list|show|retry`: money back on a paid invoice."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from billing_engine import invoices, refunds
from billing_engine.audit import cli_actor
from billing_engine.gateway.factory import build_gateway
from billing_engine.models import Refund
from billing_engine.money import Money, format_minor
from billing_engine.settings import get_settings
from cli.common import JsonOpt, console, engine, handle_errors, parse_at, print_json, print_record, unit_of_work
from cli.paging import one_page

refund_app = typer.Typer(help="Refund paid invoices (fully or partly) and list refunds.", no_args_is_help=True)


def refund_dict(r: Refund) -> dict[str, Any]:
    return refunds.summary(r) | {"amount": format_minor(r.amount_minor, r.currency)}


def _print(data: dict[str, object], verb: str) -> None:
    console.print(f"{verb} refund [bold]{data['id']}[/] of {data['amount']} {data['currency']} on invoice "
                  f"{data['invoice_id']}: {data['status']}")


@refund_app.command("create")
@handle_errors
def create_cmd(
    invoice: str = typer.Argument(..., help="Invoice id (in_...)."),
    amount: str | None = typer.Option(None, help="Amount in major units, e.g. 5.00 (default: all still refundable)."),
    reason: str | None = typer.Option(None, help="requested_by_customer | duplicate | fraudulent."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Refund a paid invoice through the gateway (never more than was collected)."""
    now = parse_at(at)
    with unit_of_work() as s:
        currency = invoices.get(s, invoice).currency
    amount_minor = Money.parse(amount, currency, field="--amount").amount if amount is not None else None
    r = refunds.create(engine(), build_gateway(get_settings()), invoice_id=invoice, amount_minor=amount_minor,
                       reason=reason, now=now, actor=cli_actor())
    data = refund_dict(r)
    if json_out:
        print_json(data)
    else:
        _print(data, "created")


@refund_app.command("retry")
@handle_errors
def retry_cmd(
    refund: str = typer.Argument(..., help="Refund id (re_...) left pending (gateway unreachable)."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Send a pending refund again with its original idempotency key."""
    r = refunds.send(engine(), build_gateway(get_settings()), refund, now=parse_at(at), actor=cli_actor())
    data = refund_dict(r)
    if json_out:
        print_json(data)
    else:
        _print(data, "sent")


@refund_app.command("show")
@handle_errors
def show_cmd(refund: str = typer.Argument(..., help="Refund id (re_...)."), json_out: bool = JsonOpt) -> None:
    """Show one refund."""
    with unit_of_work() as s:
        data = refund_dict(refunds.get(s, refund))
    if json_out:
        print_json(data)
    else:
        print_record(data)


@refund_app.command("list")
@handle_errors
def list_cmd(
    invoice: str | None = typer.Option(None, help="Only refunds of this invoice."),
    limit: int = typer.Option(100, min=1, max=10000, help="At most this many."),
    after: str | None = typer.Option(None, help="Cursor: ids after this one."),
    json_out: bool = JsonOpt,
) -> None:
    """List refunds."""
    with unit_of_work() as s:
        rows = [refund_dict(r) for r in one_page(refunds.list_refunds(s, invoice_id=invoice, limit=limit + 1, after=after), limit)]
    if json_out:
        print_json(rows)
        return
    t = Table("id", "invoice", "amount", "status", "reason", "created")
    for r in rows:
        t.add_row(str(r["id"]), str(r["invoice_id"]), f"{r['amount']} {r['currency']}", str(r["status"]),
                  str(r["reason"] or ""), str(r["created_at"])[:19])
    console.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(refund_app, name="refund")
