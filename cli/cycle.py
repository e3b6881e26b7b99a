"""`billing run-cycle`: charge everything that is due, exactly once."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import Engine

from billing_engine.cycle import CycleSummary, run_cycle
from billing_engine.gateway.factory import build_gateway
from billing_engine.money import format_minor
from billing_engine.settings import get_settings
from cli.common import JsonOpt, console, engine, handle_errors, parse_at, print_json


def _deliver() -> Callable[[Engine, datetime], int]:
    from billing_engine.notifications import deliver_pending

    settings = get_settings()
    return lambda eng, now: deliver_pending(eng, now, settings)


def print_summary(summary: CycleSummary) -> None:
    title = f"run-cycle at {summary.at.isoformat().replace('+00:00', 'Z')}" + (" (dry run)" if summary.dry_run else "")
    if summary.dry_run:
        t = Table(title=title)
        for col in ("subscription", "customer", "plan", "action", "amount", "due at"):
            t.add_column(col)
        for w in summary.would_charge:
            t.add_row(w["subscription_id"], w["customer_email"], w["plan"], w["action"],
                      f"{w['amount']} {w['currency']}", str(w["due_at"])[:19])
        console.print(t)
        console.print(f"{summary.due} subscription(s) due; nothing was changed.")
        return
    t = Table(title=title, show_header=False)
    rows = [
        ("due", summary.due), ("charges sent", summary.charged), ("succeeded", summary.succeeded),
        ("declined (soft, will retry)", summary.declined_soft), ("declined (hard)", summary.declined_hard),
        ("outcome unknown (reconciled next run)", summary.unknown), ("reconciled", summary.reconciled),
        ("canceled involuntary", summary.canceled_involuntary),
        ("cancellations effective", summary.cancellations_effective), ("not charged (blocked)", summary.blocked),
        ("reminders queued", summary.reminders_queued), ("e-mails sent", summary.notifications_sent),
    ]
    for k, v in rows:
        t.add_row(k, str(v))
    for cur, minor in sorted(summary.collected.items()):
        t.add_row(f"collected {cur}", format_minor(minor, cur))
    console.print(t)
    for e in summary.errors:
        console.print(f"[yellow]warning:[/] {e}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("run-cycle")
    @handle_errors
    def run_cycle_cmd(
        at: str | None = typer.Option(None, "--at", help="Run as of this ISO-8601 instant (default: now)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="List what would be charged; change nothing."),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Process at most N subscriptions."),
        no_email: bool = typer.Option(False, "--no-email", help="Queue e-mails but do not send them now."),
        json_out: bool = JsonOpt,
    ) -> None:
        """Charge due renewals, retry dunning, end scheduled cancellations, queue reminders.

        Exit code 0 when the run completed (declines are business outcomes, not failures)."""
        now = parse_at(at)
        settings = get_settings()
        eng = engine()
        gateway = build_gateway(settings)
        deliver = None if (no_email or dry_run) else _deliver()
        if json_out or dry_run or not sys.stderr.isatty():
            summary = run_cycle(eng, gateway, now=now, settings=settings, limit=limit, dry_run=dry_run, deliver=deliver)
        else:
            with Progress(TextColumn("charging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=True) as progress:
                task = progress.add_task("run-cycle", total=None)
                summary = run_cycle(eng, gateway, now=now, settings=settings, limit=limit, dry_run=False,
                                    deliver=deliver, on_progress=lambda done, _t: progress.update(task, completed=done))
        if json_out:
            print_json(summary.as_dict())
        else:
            print_summary(summary)
