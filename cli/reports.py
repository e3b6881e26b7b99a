"""`billing report churn|revenue|mrr|segments|cohorts|retention|recovery|funnel` -- the finance
exports (docs/reports.md)."""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from billing_engine.errors import ValidationError
from billing_engine.reports import FORMATS, build_query, run_report, to_csv, to_json, to_rich_tables, to_xlsx
from billing_engine.settings import get_settings
from cli.common import JsonOpt, console, engine, fail, handle_errors, print_json

if TYPE_CHECKING:
    from billing_engine.reports.rollups import Refreshed

report_app = typer.Typer(
    help="Finance reports: churn, revenue, MRR, segments, cohorts, retention, recovery, funnel "
         "(table, CSV, JSON, XLSX).",
    no_args_is_help=True,
)

FromOpt = typer.Option(None, "--from", help="First day (inclusive), e.g. 2026-01-01. Default: 12 months before --to.")
ToOpt = typer.Option(None, "--to", help="Last day (inclusive for a bare date), e.g. 2026-12-31. Default: end of this month.")
PeriodOpt = typer.Option("month", "--period", help="day | week | month | quarter | year | all")
ByOpt = typer.Option(None, "--by", help="Split by: plan")
CurrencyOpt = typer.Option(None, "--currency", help="Only this currency (ISO-4217), e.g. USD")
FormatOpt = typer.Option("table", "--format", "-f", help="table | csv | json | xlsx")
OutputOpt = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout (required for xlsx on a terminal)")


def _run(name: str, start: str | None, end: str | None, period: str, by: str | None, currency: str | None,
         fmt: str, output: Path | None) -> None:
    fmt = (fmt or "table").strip().lower()
    if fmt not in FORMATS:
        raise ValidationError(f"must be one of {', '.join(FORMATS)}, got {fmt!r}", field="--format")
    now = datetime.now(UTC)
    try:
        q = build_query(start=start, end=end, period=period, by=by, currency=currency, now=now)
    except ValidationError as exc:
        raise ValidationError(exc.message, field=f"--{exc.field}" if exc.field else None) from None
    if output is not None and output.is_dir():
        raise ValidationError(f"{str(output)!r} is a directory; give a file name", field="--output")
    settings = get_settings()
    report = run_report(engine(), name, q, thresholds=settings.segment_thresholds_minor, generated_at=now)
    if fmt == "table":
        if output is not None:
            from rich.console import Console

            buffer = io.StringIO()
            file_console = Console(file=buffer, width=200)
            for table in to_rich_tables(report):
                file_console.print(table)
            _write(output, buffer.getvalue().encode("utf-8"))
        else:
            for table in to_rich_tables(report):
                console.print(table)
        return
    data: bytes = to_xlsx(report) if fmt == "xlsx" else (to_csv(report) if fmt == "csv" else to_json(report)).encode()
    if output is not None:
        _write(output, data)
        return
    if fmt == "xlsx" and sys.stdout.isatty():
        fail("xlsx is binary: pass --output FILE.xlsx (or redirect stdout)", 2)
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def _write(output: Path, data: bytes) -> None:
    """Write the export, or say in one line why the file cannot be written."""
    try:
        output.write_bytes(data)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValidationError(f"cannot write {str(output)!r}: {reason}", field="--output") from None


def _command(name: str, doc: str) -> None:
    @report_app.command(name, help=doc)
    @handle_errors
    def cmd(
        start: str | None = FromOpt,
        end: str | None = ToOpt,
        period: str = PeriodOpt,
        by: str | None = ByOpt,
        currency: str | None = CurrencyOpt,
        fmt: str = FormatOpt,
        output: Path | None = OutputOpt,
        json_out: bool = typer.Option(False, "--json", help="The same as --format json."),
    ) -> None:
        if json_out:
            if fmt.strip().lower() not in ("table", "json"):
                raise ValidationError(f"--json and --format {fmt} disagree: pass one of them", field="--json")
            fmt = "json"
        _run(name, start, end, period, by, currency, fmt, output)


_command("churn", "Subscribers at period start, new, voluntary / involuntary churn (by reason), rates, MRR lost, "
                  "revenue recovered by dunning.")
_command("revenue", "Gross collected, refunds, net, paying / new / returning customers per period and currency.")
_command("mrr", "MRR at period start and end with its movements: new, reactivation, expansion, contraction, churn.")
_command("segments", "Customers by lifetime value (BILLING_SEGMENT_THRESHOLDS_MINOR) and by plan tier, as of --to.")
_command("cohorts", "Customers by period of first payment x periods since: retained customers and their revenue.")
_command("retention", "Gross and net revenue retention (GRR / NRR) of the subscribers at each period start.")
_command("recovery", "Failed payments recovered, by what recovered them (automatic retry, the customer's new card, "
                     "the card updater, an admin): recovery rate and days to recovery.")
_command("funnel", "Involuntary churn funnel per decline code: failed -> recovered / still in dunning / lost (by reason).")


@report_app.command("refresh", help="Bring the report rollups up to date now (reports also do it themselves); "
                                   "--rebuild recomputes them from the raw tables.")
@handle_errors
def refresh_cmd(rebuild: bool = typer.Option(False, "--rebuild", help="Recompute every rollup from scratch."),
                json_out: bool = JsonOpt) -> None:
    from billing_engine.reports import rollups

    r = rollups.refresh(engine(), lag=rollups.LAG, rebuild=rebuild)
    if json_out:
        print_json({"rebuilt": r.rebuilt, "from_event_id": r.from_event_id,
                    "to_event_id": r.to_event_id, "folded_events": r.folded, "provisional_events": r.provisional,
                    "last_event_id": r.folded_to, "lag_seconds": int(rollups.LAG.total_seconds())})
        return
    console.print(refresh_summary(r, rollups.LAG), highlight=False)


def _events(n: int) -> str:
    return f"{n} event" if n == 1 else f"{n} events"


def refresh_summary(r: Refreshed, lag: timedelta) -> str:
    """What ``billing report refresh`` did, in words a finance user reads."""
    if r.rebuilt:
        head = (f"Report rollups rebuilt from the raw data: {_events(r.folded)} counted"
                + (f" (up to event #{r.folded_to})." if r.folded else "."))
    elif r.folded:
        head = (f"Report rollups updated: {_events(r.folded)} folded in "
                f"(events #{r.folded_after + 1} to #{r.folded_to}).")
    else:
        head = "Report rollups already up to date: no new events since the last refresh."
    if not r.provisional:
        return head
    minutes = max(1, int(lag.total_seconds() // 60))
    age = f"{minutes} minute" if minutes == 1 else f"{minutes} minutes"
    return (f"{head}\n{_events(r.provisional)} recorded in the last {age} "
            f"{'is' if r.provisional == 1 else 'are'} in the reports provisionally: "
            "the next refresh checks them again, in case a change from that time was still being saved.")


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")
