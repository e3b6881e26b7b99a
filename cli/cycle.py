"""`billing run-cycle`: charge everything that is due, exactly once."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy.engine import Engine

from billing_engine import audit, claims
from billing_engine.clock import check_run_instant
from billing_engine.cycle import CycleSummary, run_cycle
from billing_engine.gateway.factory import build_gateway
from billing_engine.money import format_minor
from billing_engine.settings import Mode, get_settings
from cli import webhooks
from cli.common import JsonOpt, console, engine, fail, handle_errors, parse_at, print_json, warn, warn_branding


def _deliver() -> Callable[[Engine, datetime], int]:
    from billing_engine.notifications import deliver_pending

    settings = get_settings()
    return lambda eng, now: deliver_pending(eng, now, settings)


def print_summary(summary: CycleSummary) -> None:
    title = f"run-cycle at {summary.at.isoformat().replace('+00:00', 'Z')}" + (" (dry run)" if summary.dry_run else "")
    if summary.dry_run:
        t = Table(title=title)
        for col in ("subscription", "customer", "plan", "action", "reason", "amount", "due at"):
            t.add_column(col)
        for w in summary.would_charge:
            t.add_row(w["subscription_id"], w["customer_email"], w["plan"], w["action"], w.get("reason") or "",
                      f"{w['amount']} {w['currency']}", str(w["due_at"])[:19])
        console.print(t)
        console.print(f"{summary.due} subscription(s) due; nothing was changed.")
        return
    t = Table(title=title, show_header=False)
    rows = [
        ("due", summary.due), ("charges sent", summary.charged), ("succeeded", summary.succeeded),
        ("declined (soft, will retry)", summary.declined_soft), ("declined (hard)", summary.declined_hard),
        ("outcome unknown (reconciled next run)", summary.unknown), ("reconciled", summary.reconciled),
        ("left unresolved by an error (reconciled next run)", summary.unresolved),
        ("refunded: charged after the customer cancelled", summary.refunded_after_cancel),
        ("held by other workers (not processed here)", summary.held_by_other_workers),
        ("canceled involuntary", summary.canceled_involuntary),
        ("cancellations effective", summary.cancellations_effective), ("not charged (blocked)", summary.blocked),
        ("reminders queued", summary.reminders_queued),
        ("waiting for their reminder", summary.waiting_for_reminder), ("e-mails sent", summary.notifications_sent),
    ]
    for k, v in rows:
        t.add_row(k, str(v))
    for cur, minor in sorted(summary.collected.items()):
        t.add_row(f"collected {cur}", format_minor(minor, cur))
    console.print(t)
    for e in summary.errors:
        console.print(f"[yellow]warning:[/] {e}", highlight=False)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM / SIGINT: stop claiming, finish and settle in-flight calls, release claims."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _why_not_written(target: str, exc: Exception) -> str:
    """The reason an admin can act on: a missing textfile directory is named as such, not
    by the temporary file the atomic write tried to create in it."""
    if isinstance(exc, FileNotFoundError) and "://" not in target:
        folder = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(folder):
            return f"directory {folder} does not exist (create it, writable by this user)"
    if isinstance(exc, PermissionError) and "://" not in target:
        return f"permission denied writing in {os.path.dirname(os.path.abspath(target))}"
    return f"{type(exc).__name__}: {exc}"


def _export_metrics(eng: Engine, summary: CycleSummary, textfile: str | None, pushgateway: str | None) -> None:
    """The run's counters and the backlog gauges, to a textfile and/or a Pushgateway. A
    failure here is a warning: the billing run itself completed."""
    if summary.dry_run or not (textfile or pushgateway):
        return
    from billing_engine import metrics

    registry, run = metrics.registry_for(eng, clock=lambda: summary.at)  # backlog as of the run (--at)
    if textfile:
        metrics.carry_over(textfile, run)  # counters keep counting up across runs
    run.record(summary)
    for what, target in (("--metrics-textfile", textfile), ("--metrics-pushgateway", pushgateway)):
        if not target:
            continue
        try:
            if what == "--metrics-textfile":
                metrics.write_textfile(target, registry)
            else:
                metrics.push(target, registry)
        except Exception as exc:  # noqa: BLE001 - metrics never fail a billing run
            warn(f"{what}: metrics not written: {_why_not_written(target, exc)}")


def _refresh_reports(eng: Engine, summary: CycleSummary) -> dict[str, Any] | None:
    """After the charges, outside their transactions: fold the run's changes into the report
    rollups, so the first report finance opens does not pay for it (docs/reports.md). Workers
    that finish together take turns (one refresh at a time); the later ones find little left.
    Cheap when nothing changed (two index look-ups). Trouble here never fails a billing run."""
    from billing_engine.reports import rollups

    t0 = time.perf_counter()
    try:
        r = rollups.refresh_if_built(eng)
    except Exception as exc:
        summary.errors.append(f"report refresh: {type(exc).__name__}: {exc}")
        return None
    if r is None:  # never built: the first report (or `billing report refresh`) builds them
        return None
    return {"seconds": round(time.perf_counter() - t0, 3), "rebuilt": r.rebuilt,
            "events_folded": max(r.folded_to - r.folded_after, 0)}


def _print_status(json_out: bool) -> None:
    holders = claims.holders(engine())
    if json_out:
        print_json([{"worker": h.worker, "subscriptions": h.subscriptions, "expires_at": h.expires_at,
                     "live": h.live} for h in holders])
        return
    t = Table(title="run-cycle claims")
    for col in ("worker", "subscriptions", "lease expires", "state"):
        t.add_column(col)
    for h in holders:
        t.add_row(h.worker, str(h.subscriptions), h.expires_at.isoformat()[:19], "live" if h.live else "expired")
    console.print(t if holders else "no claims held")


def register(app: typer.Typer) -> None:
    @app.command("run-cycle")
    @handle_errors
    def run_cycle_cmd(
        at: str | None = typer.Option(None, "--at", help="Run as of this ISO-8601 instant (default: now)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="List what would be charged; change nothing."),
        simulate: bool = typer.Option(False, "--simulate", help="Allow an --at later than the clock with a real "
                                      "gateway (a simulation: renewals are charged before they are due)."),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Process at most N subscriptions."),
        no_email: bool = typer.Option(False, "--no-email", help="Queue e-mails but do not send them now."),
        no_webhooks: bool = typer.Option(False, "--no-webhooks", help="Do not deliver webhooks after the run "
                                         "(billing webhook deliver does)."),
        json_out: bool = JsonOpt,
        status: bool = typer.Option(False, "--status", help="List the workers holding claims on subscriptions; change nothing."),
        metrics_textfile: str | None = typer.Option(
            None, "--metrics-textfile", metavar="PATH",
            help="Write Prometheus metrics to PATH (node-exporter textfile collector; default "
            "BILLING_METRICS_TEXTFILE)."),
        metrics_pushgateway: str | None = typer.Option(
            None, "--metrics-pushgateway", metavar="URL",
            help="Push Prometheus metrics to this Pushgateway (default BILLING_METRICS_PUSHGATEWAY)."),
        release_claims: str | None = typer.Option(
            None, "--release-claims", metavar="WORKER|expired",
            help="Release the claims of a worker that died (its id from --status), or every expired claim."),
        no_report_refresh: bool = typer.Option(
            False, "--no-report-refresh", help="Do not fold this run's changes into the report rollups after the "
            "run (the first report then does it)."),
    ) -> None:
        """Charge due renewals, retry dunning, end scheduled cancellations, queue reminders.

        Exit codes: 0 the run completed (declines are business outcomes, not failures);
        2 invalid option or --at (e.g. later than the clock with a real gateway, without --simulate);
        75 the gateway was unreachable (breaker); 78 the gateway refused our configuration;
        70 database error; 143 stopped by SIGTERM/SIGINT after settling in-flight charges."""
        if status:
            _print_status(json_out)
            return
        if release_claims is not None:
            n = claims.release_all(engine(), worker=None if release_claims == "expired" else release_claims)
            if json_out:
                print_json({"released": n})
            else:
                console.print(f"released {n} claim(s)")
            return
        now = parse_at(at)
        settings = get_settings()
        eng = engine()
        gateway = build_gateway(settings, engine=eng)  # paced by the limit all workers share
        check_run_instant(now, datetime.now(UTC), gateway_name=gateway.name, simulate=simulate,
                          production=settings.mode is Mode.PRODUCTION, field="--at")
        warn_branding(settings)
        deliver = None if (no_email or dry_run) else _deliver()
        with _stop_on_signals() as stop:
            if json_out or dry_run or not sys.stderr.isatty():
                summary = run_cycle(eng, gateway, now=now, settings=settings, limit=limit, dry_run=dry_run,
                                    deliver=deliver, stop=stop)
            else:
                with Progress(TextColumn("charging"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                              TextColumn("{task.fields[rate]}/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                              console=console, transient=True) as progress:
                    task = progress.add_task("run-cycle", total=None, rate="0", visible=False)  # shown once counted

                    def on_progress(done: int, total: int) -> None:
                        # total: counted before the run; a late run's catch-up renewals add to it
                        elapsed = progress.tasks[0].elapsed or 0.0
                        progress.update(task, completed=done, total=max(total, done) or None, visible=True,
                                        rate=f"{done / elapsed:.0f}" if elapsed > 0 else "0")
                    summary = run_cycle(eng, gateway, now=now, settings=settings, limit=limit, dry_run=False,
                                        deliver=deliver, on_progress=on_progress, stop=stop)
        audit.run_cycle_completed(eng, summary, actor=audit.cli_actor(), simulate=simulate)
        _export_metrics(eng, summary, metrics_textfile or settings.metrics_textfile,
                        metrics_pushgateway or settings.metrics_pushgateway)
        hooks = None
        if not dry_run and not no_webhooks and summary.stopped is None:
            try:  # after the run, outside its transactions; webhook trouble never fails a billing run
                hooks = webhooks.deliver_after_run(settings)
            except Exception as exc:
                summary.errors.append(f"webhooks: {type(exc).__name__}: {exc}")
        refreshed = None
        if not dry_run and not no_report_refresh and summary.stopped is None:
            refreshed = _refresh_reports(eng, summary)
        if json_out:
            print_json(summary.as_dict() | ({"webhooks": hooks.as_dict()} if hooks else {})
                       | ({"report_refresh": refreshed} if refreshed else {}))
        else:
            print_summary(summary)
            if hooks is not None and (hooks.succeeded or hooks.failed_attempts):
                console.print(f"webhooks: {hooks.succeeded} delivered, {hooks.failed_attempts} failed attempt(s)",
                              highlight=False)
        if hooks is not None:
            webhooks.warn_disabled(hooks.disabled)
        if summary.stopped is not None:
            fail(f"run-cycle stopped: {summary.stop_message}; {summary.unresolved} attempt(s) left unresolved and "
                 f"{max(summary.total_due - summary.due, 0)} due subscription(s) not processed; "
                 "nothing was charged twice — run again once fixed", summary.exit_code)
