"""`billing cancel-link SUBSCRIPTION`: print the signed one-click cancel link."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from billing_engine import audit, links, subscriptions
from billing_engine.errors import ValidationError
from billing_engine.events import EventType
from billing_engine.settings import get_settings
from cli.common import JsonOpt, console, engine, handle_errors, parse_at, print_json, unit_of_work


def register(app: typer.Typer) -> None:
    @app.command("cancel-link")
    @handle_errors
    def cancel_link(
        subscription: str = typer.Argument(..., help="Subscription id (sub_...)."),
        at: str | None = typer.Option(None, "--at", help="Issue the link as of this ISO-8601 instant (default: now)."),
        json_out: bool = JsonOpt,
    ) -> None:
        """Print the customer's one-click cancel link (signed, expiring; no login needed)."""
        now = parse_at(at)
        settings = get_settings()
        ahead = now - datetime.now(UTC)
        if ahead > links.max_issue_ahead(settings):
            raise ValidationError(f"a link issued more than {links.max_issue_ahead(settings).days} days ahead would "
                                  f"not work (no link lives longer than {links.MAX_LIFETIME.days} days)", field="--at")
        with unit_of_work() as s:
            sub = subscriptions.get(s, subscription)
            sub_id, status, customer_id = sub.id, sub.status, sub.customer_id
        url = links.make_cancel_url(settings, sub_id, now)
        audit.record(engine(), EventType.CANCEL_LINK_MINTED, at=now, actor=audit.cli_actor(), subscription_id=sub_id,
                     customer_id=customer_id, payload={"expires_at": links.expires_at(settings, now)})
        if json_out:
            print_json({"subscription_id": sub_id, "status": status, "url": url,
                        "expires_at": links.expires_at(settings, now)})
        else:
            console.print(url, highlight=False, soft_wrap=True)
