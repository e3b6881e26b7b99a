"""`billing account-link CUSTOMER`: print the signed link to the customer's self-service page."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from billing_engine import audit, customers, links
from billing_engine.errors import ValidationError
from billing_engine.events import EventType
from billing_engine.settings import get_settings
from cli.common import JsonOpt, console, engine, handle_errors, parse_at, print_json, unit_of_work


def register(app: typer.Typer) -> None:
    @app.command("account-link")
    @handle_errors
    def account_link(
        customer: str = typer.Argument(..., help="Customer id (cus_...)."),
        at: str | None = typer.Option(None, "--at", help="Issue the link as of this ISO-8601 instant (default: now)."),
        json_out: bool = JsonOpt,
    ) -> None:
        """Print the customer's self-service link (signed, expiring; no login): subscriptions,
        card update, invoices and receipts, cancel and undo."""
        now = parse_at(at)
        settings = get_settings()
        if now - datetime.now(UTC) > links.max_issue_ahead(settings):
            raise ValidationError(f"a link issued more than {links.max_issue_ahead(settings).days} days ahead would "
                                  f"not work (no link lives longer than {links.MAX_LIFETIME.days} days)", field="--at")
        with unit_of_work() as s:
            customer_id = customers.get(s, customer).id
        url = links.make_account_url(settings, customer_id, now)
        # audited like a cancel link (the page can cancel too); payload says which link
        audit.record(engine(), EventType.CANCEL_LINK_MINTED, at=now, actor=audit.cli_actor(), customer_id=customer_id,
                     payload={"link": "account", "expires_at": links.expires_at(settings, now)})
        if json_out:
            print_json({"customer_id": customer_id, "url": url, "expires_at": links.expires_at(settings, now)})
        else:
            console.print(url, highlight=False, soft_wrap=True)
