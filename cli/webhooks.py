"""Outgoing webhooks and the event feed: `billing events list`, `billing webhook-endpoint
create|list|show|update|disable|enable|rotate-secret`, `billing webhook deliver|resend|deliveries`
(`billing webhooks ...` is the same group)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from sqlmodel import Session

from billing_engine import event_feed, webhook_delivery, webhook_endpoints
from billing_engine.audit import cli_actor
from billing_engine.errors import ValidationError
from billing_engine.models import WebhookDeliveryStatus
from billing_engine.periods import parse_datetime
from billing_engine.settings import Settings, get_settings
from cli.common import JsonOpt, console, engine, err_console, handle_errors, make_table, print_json, unit_of_work, warn

events_app = typer.Typer(help="The merchant-facing event feed (the same as GET /v1/events).", no_args_is_help=True)
endpoint_app = typer.Typer(help="Webhook endpoints: where signed events are POSTed.", no_args_is_help=True)
webhook_app = typer.Typer(help="Webhook deliveries: send what is due, resend events, inspect.", no_args_is_help=True)


def _when(value: str | None, field: str) -> datetime | None:
    return None if value is None else parse_datetime(value, field)


def warn_disabled(ids: list[str]) -> None:
    for ep_id in ids:
        warn(f"webhook endpoint {ep_id} was disabled: every delivery failed for "
             f"{webhook_delivery.DISABLE_AFTER.days} days (the admin was e-mailed); fix the receiver, "
             f"then: billing webhook-endpoint enable {ep_id}")


# --------------------------------------------------------------------------- events list


@events_app.command("list")
@handle_errors
def events_list(
    after: str | None = typer.Option(None, "--after", help="Cursor: list the events after this id (evt_...)."),
    type_: list[str] | None = typer.Option(None, "--type", help="Public event type (repeat, or a,b; "
                                           "subscription.* matches a family)."),
    created_from: str | None = typer.Option(None, "--created-from", help="Created at or after (ISO-8601)."),
    created_to: str | None = typer.Option(None, "--created-to", help="Created before (ISO-8601)."),
    subscription: str | None = typer.Option(None, "--subscription", help="Only this subscription's events."),
    customer: str | None = typer.Option(None, "--customer", help="Only this customer's events."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000, help="At most N events (oldest first)."),
    json_out: bool = JsonOpt,
) -> None:
    """Public events, oldest first, in pages: when more exist it says so, with the next --after."""
    types = event_feed.parse_types(type_, field="--type")
    cursor = event_feed.parse_event_id(after, field="--after") if after else None
    with Session(engine()) as s:
        rows = event_feed.list_events(s, after=cursor, types=types, created_gte=_when(created_from, "--created-from"),
                                      created_lt=_when(created_to, "--created-to"), subscription_id=subscription,
                                      customer_id=customer, limit=limit + 1)
        has_more = len(rows) > limit
        rows = rows[:limit]
        data = event_feed.present_many(s, rows)
    next_cursor = data[-1]["id"] if has_more and data else None
    if json_out:
        print_json({"data": data, "has_more": has_more, "next_cursor": next_cursor})
        return
    t = make_table("id", "type", "created", "subscription", "customer", "details")
    for e in data:
        d = e["data"]
        details = ", ".join(f"{k}={v}" for k, v in d.items()
                            if k not in ("subscription_id", "customer_id") and v is not None)
        t.add_row(e["id"], e["type"], e["timestamp"][:19], d.get("subscription_id") or "", d.get("customer_id") or "",
                  details[:120])
    console.print(t)
    if has_more:
        console.print(f"more events exist: billing events list --after {next_cursor} (same filters)", highlight=False)
    else:
        console.print(f"{len(data)} event(s); no more.", highlight=False)


# --------------------------------------------------------------------------- endpoints


def _show(ep: dict[str, Any], *, secret_note: bool = False) -> None:
    console.print(f"{ep['id']}  {ep['status']}  {ep['url']}  events: {', '.join(ep['events'])}", highlight=False)
    if "secret" in ep:
        console.print(f"secret: {ep['secret']}", highlight=False, soft_wrap=True)
        if secret_note:
            console.print("keep it: verify each delivery with it (standardwebhooks); it is not shown again "
                          "(billing webhook-endpoint show ID --secret)", highlight=False)


@endpoint_app.command("create")
@handle_errors
def endpoint_create(
    url: str = typer.Option(..., "--url", help="https:// URL that receives the POSTs."),
    events: str = typer.Option("*", "--events", help="Comma-separated public types (subscription.* allowed), or *."),
    description: str = typer.Option("", "--description"),
    json_out: bool = JsonOpt,
) -> None:
    """Register an endpoint; prints its signing secret (whsec_...). It receives events from now on."""
    settings = get_settings()
    with unit_of_work() as s:
        ep = webhook_endpoints.create(s, url=url, event_types=events, settings=settings, now=datetime.now(UTC),
                                      description=description, actor=cli_actor())
        out = webhook_endpoints.summary(ep, with_secret=True)
    if json_out:
        print_json(out)
    else:
        _show(out, secret_note=True)


@endpoint_app.command("list")
@handle_errors
def endpoint_list(
    status: str | None = typer.Option(None, "--status", help="enabled | disabled"),
    json_out: bool = JsonOpt,
) -> None:
    """Every endpoint (warns about disabled ones)."""
    with Session(engine()) as s:
        rows = [webhook_endpoints.summary(e) for e in webhook_endpoints.list_endpoints(s, status=status, limit=10_000)]
    if json_out:
        print_json(rows)
        return
    t = make_table("id", "status", "url", "events", "failing since")
    for e in rows:
        t.add_row(e["id"], e["status"], e["url"], ", ".join(e["events"]),
                  e["failing_since"].isoformat()[:19] if e["failing_since"] else "")
    console.print(t)
    for e in rows:
        if e["status"] == "disabled":
            err_console.print(f"[yellow]warning:[/] {e['id']} is disabled: {e['disabled_reason']}", highlight=False,
                              soft_wrap=True)


@endpoint_app.command("show")
@handle_errors
def endpoint_show(
    endpoint_id: str = typer.Argument(..., metavar="ENDPOINT"),
    secret: bool = typer.Option(False, "--secret", help="Also print the signing secret."),
    json_out: bool = JsonOpt,
) -> None:
    """One endpoint and its recent deliveries."""
    with Session(engine()) as s:
        ep = webhook_endpoints.get(s, endpoint_id)
        out = webhook_endpoints.summary(ep, with_secret=secret)
        out["recent_deliveries"] = [webhook_delivery.delivery_summary(d)
                                    for d in webhook_delivery.list_deliveries(s, endpoint_id=ep.id, limit=20)]
    if json_out:
        print_json(out)
        return
    _show(out)
    for d in out["recent_deliveries"]:
        console.print(f"  {d['event_id']}  {d['status']}  attempts {d['attempts']}  {d['last_error'] or ''}",
                      highlight=False)


@endpoint_app.command("update")
@handle_errors
def endpoint_update(
    endpoint_id: str = typer.Argument(..., metavar="ENDPOINT"),
    url: str | None = typer.Option(None, "--url"),
    events: str | None = typer.Option(None, "--events"),
    description: str | None = typer.Option(None, "--description"),
    json_out: bool = JsonOpt,
) -> None:
    """Change the URL, the event types or the description."""
    settings = get_settings()
    with unit_of_work() as s:
        ep = webhook_endpoints.update(s, webhook_endpoints.get(s, endpoint_id), settings=settings,
                                      now=datetime.now(UTC), url=url, event_types=events, description=description,
                                      actor=cli_actor())
        out = webhook_endpoints.summary(ep)
    print_json(out) if json_out else _show(out)


@endpoint_app.command("disable")
@handle_errors
def endpoint_disable(endpoint_id: str = typer.Argument(..., metavar="ENDPOINT"), json_out: bool = JsonOpt) -> None:
    """Stop deliveries (events keep queuing; enable sends them)."""
    with unit_of_work() as s:
        out = webhook_endpoints.summary(webhook_endpoints.disable(s, webhook_endpoints.get(s, endpoint_id),
                                                                  now=datetime.now(UTC), actor=cli_actor()))
    print_json(out) if json_out else _show(out)


@endpoint_app.command("enable")
@handle_errors
def endpoint_enable(endpoint_id: str = typer.Argument(..., metavar="ENDPOINT"), json_out: bool = JsonOpt) -> None:
    """Resume deliveries (failed ones: billing webhook resend --endpoint ID --from ...)."""
    with unit_of_work() as s:
        out = webhook_endpoints.summary(webhook_endpoints.enable(s, webhook_endpoints.get(s, endpoint_id),
                                                                 now=datetime.now(UTC), actor=cli_actor()))
    print_json(out) if json_out else _show(out)


def _grace(settings: Settings, hours: float | None) -> timedelta:
    return timedelta(hours=settings.webhook_secret_grace_hours if hours is None else hours)


@endpoint_app.command("rotate-secret")
@handle_errors
def endpoint_rotate(
    endpoint_id: str = typer.Argument(..., metavar="ENDPOINT"),
    grace_hours: float | None = typer.Option(None, "--grace-hours", min=0,
                                             help="How long the old secret keeps signing (default "
                                                  "BILLING_WEBHOOK_SECRET_GRACE_HOURS, 24); 0 after a leak."),
    json_out: bool = JsonOpt,
) -> None:
    """A new secret; during the grace period every delivery carries both signatures."""
    settings = get_settings()
    with unit_of_work() as s:
        ep = webhook_endpoints.rotate_secret(s, webhook_endpoints.get(s, endpoint_id), now=datetime.now(UTC),
                                             grace=_grace(settings, grace_hours), actor=cli_actor())
        out = webhook_endpoints.summary(ep, with_secret=True)
    if json_out:
        print_json(out)
        return
    _show(out, secret_note=True)
    until = out["previous_secret_expires_at"]
    console.print(f"the old secret signs too until {until.isoformat()}" if until else "the old secret no longer signs",
                  highlight=False)


# --------------------------------------------------------------------------- deliver / resend


def deliver_after_run(settings: Settings) -> webhook_delivery.DeliveryReport:
    """The webhook pass `billing run-cycle` runs after its billing work (outside it)."""
    return webhook_delivery.deliver(engine(), settings, now=datetime.now(UTC))


def _print_report(report: webhook_delivery.DeliveryReport, json_out: bool) -> None:
    if json_out:
        print_json(report.as_dict())
    else:
        console.print(f"webhooks: {report.succeeded} delivered, {report.failed_attempts} failed attempt(s) "
                      f"(retried later), {report.exhausted} gave up; {report.queued} newly queued", highlight=False)
    warn_disabled(report.disabled)


@webhook_app.command("deliver")
@handle_errors
def deliver_cmd(
    limit: int = typer.Option(1000, "--limit", min=1, help="At most N POSTs per pass."),
    loop: bool = typer.Option(False, "--loop", help="Keep delivering (a pass every --interval seconds)."),
    interval: float = typer.Option(5.0, "--interval", min=0.1, max=3600),
    json_out: bool = JsonOpt,
) -> None:
    """Send due webhook deliveries (new events and retries). One pass, for cron; --loop for a worker."""
    settings = get_settings()
    while True:
        report = webhook_delivery.deliver(engine(), settings, now=datetime.now(UTC), limit=limit)
        if not loop or report.succeeded or report.failed_attempts or report.disabled:
            _print_report(report, json_out)
        if not loop:
            return
        if report.succeeded + report.failed_attempts < limit:
            time.sleep(interval)


@webhook_app.command("resend")
@handle_errors
def resend_cmd(
    event: str | None = typer.Argument(None, metavar="[EVENT_ID]", help="The event to send again (evt_...)."),
    from_: str | None = typer.Option(None, "--from", help="Resend every event created at or after (ISO-8601)."),
    to: str | None = typer.Option(None, "--to", help="... and before this instant (default: no end)."),
    endpoint_id: str | None = typer.Option(None, "--endpoint", help="Only to this endpoint (default: every "
                                           "enabled endpoint subscribed to the event)."),
    type_: list[str] | None = typer.Option(None, "--type", help="Only these public types (with --from)."),
    queue_only: bool = typer.Option(False, "--queue-only", help="Queue; let the next deliver pass send them."),
    json_out: bool = JsonOpt,
) -> None:
    """Send an event (or every event of a time range) again, however old."""
    if (event is None) == (from_ is None):
        raise ValidationError("give an EVENT_ID or --from (not both)", field="--from")
    if event is not None and (to is not None or type_):
        raise ValidationError("--to and --type go with --from", field="--to")
    now = datetime.now(UTC)
    settings = get_settings()
    eng = engine()
    if event is not None:
        n = webhook_delivery.resend(eng, now=now, event_id=event_feed.parse_event_id(event, field="EVENT_ID"),
                                    endpoint_id=endpoint_id)
    else:
        start = _when(from_, "--from")
        end = _when(to, "--to")
        assert start is not None
        if end is not None and end <= start:
            raise ValidationError("must be after --from", field="--to")
        n = webhook_delivery.resend(eng, now=now, created_gte=start, created_lt=end, endpoint_id=endpoint_id,
                                    types=event_feed.parse_types(type_, field="--type"))
    report = None if queue_only else webhook_delivery.deliver(eng, settings, now=now)
    if json_out:
        print_json({"queued": n, "delivery": report.as_dict() if report else None})
        return
    console.print(f"{n} delivery(ies) queued", highlight=False)
    if report is not None:
        _print_report(report, False)


@webhook_app.command("deliveries")
@handle_errors
def deliveries_cmd(
    endpoint_id: str | None = typer.Option(None, "--endpoint"),
    event: str | None = typer.Option(None, "--event", help="evt_..."),
    status: str | None = typer.Option(None, "--status", help="pending | sending | succeeded | failed"),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
    json_out: bool = JsonOpt,
) -> None:
    """Recent deliveries, newest first."""
    if status is not None and status not in {s.value for s in WebhookDeliveryStatus}:
        raise ValidationError(f"must be one of {', '.join(s.value for s in WebhookDeliveryStatus)}", field="--status")
    with Session(engine()) as s:
        rows = [webhook_delivery.delivery_summary(d) for d in webhook_delivery.list_deliveries(
            s, endpoint_id=endpoint_id, event_id=event_feed.parse_event_id(event, field="--event") if event else None,
            status=status, limit=limit)]
    if json_out:
        print_json(rows)
        return
    t = make_table("id", "endpoint", "event", "status", "attempts", "next attempt", "last error")
    for d in rows:
        t.add_row(d["id"], d["endpoint_id"], d["event_id"], d["status"], str(d["attempts"]),
                  d["next_attempt_at"].isoformat()[:19] if d["next_attempt_at"] else "", (d["last_error"] or "")[:60])
    console.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")
    app.add_typer(endpoint_app, name="webhook-endpoint")
    app.add_typer(webhook_app, name="webhook")
    app.add_typer(webhook_app, name="webhooks", hidden=True)  # `billing webhooks deliver` reads naturally too
