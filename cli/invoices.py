"""`billing invoice list|show`: invoices and their payment attempts (read only)."""

from __future__ import annotations

from typing import Any

import typer

from billing_engine import invoices
from billing_engine.models import Invoice
from billing_engine.money import format_minor
from cli import listing
from cli.common import JsonOpt, console, handle_errors, make_table, print_json, print_record, unit_of_work
from cli.paging import one_page

invoice_app = typer.Typer(help="Invoices (one per subscription period) and payment attempts.", no_args_is_help=True)


def invoice_dict(inv: Invoice) -> dict[str, Any]:
    return invoices.summary(inv) | {"amount": format_minor(inv.amount_minor, inv.currency)}


@invoice_app.command("list")
@handle_errors
def list_cmd(
    subscription: str | None = typer.Option(None, help="Only this subscription's invoices."),
    customer: str | None = typer.Option(None, help="Only this customer's invoices."),
    status: str | None = typer.Option(None, help="open | paid | uncollectible | void."),
    limit: int = typer.Option(100, min=1, max=10000, help="At most this many."),
    after: str | None = typer.Option(None, help="Cursor: ids after this one."),
    created_from: str | None = listing.CreatedFrom,
    created_to: str | None = listing.CreatedTo,
    updated_from: str | None = listing.UpdatedFrom,
    updated_to: str | None = listing.UpdatedTo,
    json_out: bool = JsonOpt,
) -> None:
    """List invoices (oldest first; says when more exist)."""
    if status is not None and status not in {"open", "paid", "uncollectible", "void"}:
        from billing_engine.errors import ValidationError

        raise ValidationError("must be one of open, paid, uncollectible, void", field="status")
    rng = listing.ranges(created_from, created_to, updated_from, updated_to)
    with unit_of_work() as s:
        found = invoices.list_invoices(s, subscription_id=subscription, customer_id=customer, status=status,
                                       limit=limit + 1, after=after, ranges=rng)
        rows = [invoice_dict(i) for i in one_page(found, limit)]
    if json_out:
        print_json(rows)
        return
    t = make_table("id", "subscription", "period", "amount", "status", "tries", "paid at")
    for r in rows:
        t.add_row(str(r["id"]), str(r["subscription_id"]), f"{str(r['period_start'])[:10]} → {str(r['period_end'])[:10]}",
                  f"{r['amount']} {r['currency']}", str(r["status"]), str(r["attempt_count"]), str(r["paid_at"] or "")[:19])
    console.print(t)


@invoice_app.command("show")
@handle_errors
def show_cmd(invoice: str = typer.Argument(..., help="Invoice id (in_...)."), json_out: bool = JsonOpt) -> None:
    """Show an invoice with every payment attempt."""
    with unit_of_work() as s:
        inv = invoices.get(s, invoice)
        data = invoice_dict(inv) | {"attempts": [invoices.attempt_summary(a) for a in invoices.attempts(s, inv.id)]}
    if json_out:
        print_json(data)
        return
    print_record(data, skip=("attempts",))
    at = make_table("#", "status", "decline", "key", "at")
    for a in data["attempts"]:
        at.add_row(str(a["attempt_number"]), str(a["status"]), str(a["decline_code"] or ""), str(a["idempotency_key"]),
                   str(a["created_at"])[:19])
    console.print(at)


def register(app: typer.Typer) -> None:
    app.add_typer(invoice_app, name="invoice")
