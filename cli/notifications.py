"""`billing notifications send|list`: flush and inspect the e-mail outbox."""

from __future__ import annotations

import typer
from rich.table import Table
from sqlmodel import Session

from billing_engine import audit, notifications
from billing_engine.errors import ValidationError
from billing_engine.events import EventType
from billing_engine.models import NotificationStatus
from billing_engine.settings import get_settings
from cli.common import JsonOpt, console, engine, handle_errors, parse_at, print_json
from cli.paging import one_page

notifications_app = typer.Typer(help="Customer e-mails: send what is queued, list the outbox.", no_args_is_help=True)


@notifications_app.command("send")
@handle_errors
def send(
    at: str | None = typer.Option(None, "--at", help="Send what is due as of this ISO-8601 instant (default: now)."),
    limit: int = typer.Option(500, "--limit", min=1, help="Try at most N e-mails."),
    json_out: bool = JsonOpt,
) -> None:
    """Send queued e-mails that are due (retries included). Safe to run concurrently."""
    now = parse_at(at)
    settings = get_settings()
    eng = engine()
    sent = notifications.deliver_pending(eng, now, settings, limit=limit)
    audit.record(eng, EventType.NOTIFICATIONS_SENT, at=now, actor=audit.cli_actor(),
                 payload={"sent": sent, "limit": limit, "transport": settings.mail_transport})
    with Session(eng) as s:
        counts = notifications.status_counts(s)
    if json_out:
        print_json({"at": now, "sent": sent, "transport": settings.mail_transport,
                    "outbox": counts})
    else:
        console.print(f"{sent} e-mail(s) sent; outbox: "
                      + ", ".join(f"{k} {v}" for k, v in counts.items()), highlight=False)


@notifications_app.command("list")
@handle_errors
def list_cmd(
    status: str | None = typer.Option(None, "--status", help="pending | sending | sent | failed"),
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="At most this many."),
    before: str | None = typer.Option(None, "--before", help="Cursor: the e-mails older than this id."),
    json_out: bool = JsonOpt,
) -> None:
    """The most recent e-mails in the outbox."""
    if status is not None and status not in {s.value for s in NotificationStatus}:
        raise ValidationError(f"must be one of {', '.join(s.value for s in NotificationStatus)}", field="--status")
    with Session(engine()) as s:
        rows = one_page(notifications.list_notifications(s, status=status, limit=limit + 1, before=before), limit,
                        option="--before")
    if json_out:
        print_json([{"id": n.id, "kind": n.kind, "to": n.to_email, "status": n.status, "attempts": n.attempts,
                     "subscription_id": n.subscription_id, "created_at": n.created_at, "sent_at": n.sent_at,
                     "next_attempt_at": n.next_attempt_at, "message_id": n.message_id, "last_error": n.last_error}
                    for n in rows])
        return
    t = Table(title="notifications")
    for c in ("id", "kind", "to", "status", "attempts", "created", "last error"):
        t.add_column(c)
    for n in rows:
        t.add_row(n.id, n.kind, n.to_email, n.status, str(n.attempts), n.created_at.isoformat()[:19],
                  (n.last_error or "")[:60])
    console.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(notifications_app, name="notifications")
