"""`billing import csv|stripe|cutover|reconcile`: move in from Stripe Billing or a CSV.

Step by step: docs/migrating-from-stripe.md."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from billing_engine.audit import cli_actor
from billing_engine.imports.records import HOLD
from billing_engine.money import format_minor
from billing_engine.settings import get_settings
from cli.common import (
    EXIT_CONFLICT,
    EXIT_INVALID,
    JsonOpt,
    console,
    engine,
    err_console,
    fail,
    handle_errors,
    parse_at,
    print_json,
)

if TYPE_CHECKING:  # imported by the commands that use them: they load the Stripe SDK (~50 ms at every start)
    from billing_engine.imports import service

import_app = typer.Typer(help="Import customers, consented cards and subscriptions from Stripe or a CSV.",
                         no_args_is_help=True)

DryRunOpt = typer.Option(False, "--dry-run", help="Print what would be created (and what cannot be); change nothing.")
ChargeFromOpt = typer.Option(
    None, "--charge-from",
    help="The engine charges the imported subscriptions from this ISO instant only (the cut-over).")


def _print_report(report: service.Report, json_out: bool) -> None:
    if json_out:
        print_json(report.as_dict())
        return
    r = report.result
    verb = "would create" if report.dry_run else "created"
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in r.created.items())
    for p in r.planned:
        amount = format_minor(p["amount_minor"], p["currency"])
        hold = ("; charged by Stripe until `billing import cutover`" if p.get("charge_from") == HOLD else
                f"; charging from {p['charge_from'].isoformat()}" if p.get("charge_from") else "")
        end = "; ends at period end" if p["cancel_at_period_end"] else ""
        console.print(f"{verb}: {p['external_id']} {p['customer']} {p['plan']} {amount} {p['currency']} "
                      f"{p['status']}, next charge {p['next_charge_at'].isoformat()}{end}{hold}", highlight=False)
    for u in report.unsupported:
        console.print(f"[yellow]cannot import:[/] {u['object']} {u['id']}: {u['reason']}", highlight=False)
    console.print(f"{report.source}: {verb} {counts}; {r.already_imported} subscription(s) already imported"
                  + (f"; {len(report.unsupported)} object(s) cannot be imported" if report.unsupported else "")
                  + ("; nothing was changed" if report.dry_run else ""), highlight=False)


@import_app.command("csv")
@handle_errors
def csv_cmd(
    path: Path = typer.Argument(..., help="CSV file (format: docs/migrating-from-stripe.md), '-' for stdin."),
    dry_run: bool = DryRunOpt,
    charge_from: str | None = ChargeFromOpt,
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Import subscriptions whose cards are already gateway tokens. Every row is checked
    first: any bad row is listed (line, column, problem) and nothing is imported (exit 2)."""
    from billing_engine.imports import csv_source, service

    now = parse_at(at)
    start = parse_at(charge_from, "--charge-from") if charge_from else None
    try:
        text = typer.get_text_stream("stdin").read() if str(path) == "-" else path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: cannot read: {exc}", EXIT_INVALID)
    try:
        report = service.import_csv(engine(), text, now=now, default_gateway=get_settings().gateway_name,
                                    dry_run=dry_run, charge_from=start, actor=cli_actor())
    except csv_source.ImportInvalid as exc:
        for p in exc.problems[:csv_source.MAX_PROBLEMS_SHOWN]:
            err_console.print(f"[bold red]error:[/] {p}", highlight=False, soft_wrap=True)
        more = len(exc.problems) - csv_source.MAX_PROBLEMS_SHOWN
        fail(f"{len(exc.problems)} bad row(s)" + (f" ({more} not shown)" if more > 0 else "")
             + "; nothing was imported", EXIT_INVALID)
        return
    _print_report(report, json_out)


@import_app.command("stripe")
@handle_errors
def stripe_cmd(
    dry_run: bool = DryRunOpt,
    charge_from: str | None = typer.Option(
        None, "--charge-from",
        help="The engine charges the imported subscriptions from this ISO instant (default: not before "
             "`billing import cutover` hands each one over)."),
    page_size: int = typer.Option(100, "--page-size", min=1, max=100, help="Subscriptions per Stripe page (and per "
                                  "committed step)."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Import customers, default cards, prices and active / trialing / past_due subscriptions
    from the Stripe account of BILLING_STRIPE_API_KEY (resumes a run that crashed)."""
    from billing_engine.imports import service

    now = parse_at(at)
    start = parse_at(charge_from, "--charge-from") if charge_from else HOLD
    settings = get_settings()
    report = service.import_stripe(engine(), settings, now=now, dry_run=dry_run, charge_from=start,
                                   actor=cli_actor(), page_size=page_size)
    if report.resumed_from and not json_out:
        console.print(f"resumed an interrupted import ({report.resumed_from})", highlight=False)
    _print_report(report, json_out)


@import_app.command("cutover")
@handle_errors
def cutover_cmd(
    yes: bool = typer.Option(False, "--yes", help="Do it (without: print what would be done, change nothing)."),
    pause: bool = typer.Option(False, "--pause", help="Pause collection in Stripe (void its invoices) instead of "
                               "cancelling the Stripe subscriptions at their period end."),
    at: str | None = typer.Option(None, "--at", help="Act as of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """Hand the imported Stripe subscriptions over to the engine: Stripe stops renewing
    each one after its current period, and the engine charges from that period's end."""
    from billing_engine.imports import cutover, service

    now = parse_at(at)
    held = cutover.pending(engine())
    how = "pause collection (void invoices) of" if pause else "set cancel_at_period_end on"
    if not yes:
        if json_out:
            print_json({"would_hand_over": [vars(h) for h in held], "changed": False})
            return
        for h in held:
            console.print(f"would {how} Stripe {h.stripe_id} ({h.email}, {h.plan_code} "
                          f"{format_minor(h.amount_minor, h.currency)} {h.currency}); the engine charges {h.id} "
                          f"from the end of Stripe's current period (now {h.current_period_end.isoformat()})",
                          highlight=False)
        console.print(f"{len(held)} subscription(s) to hand over; nothing was changed. Run again with --yes to do it.",
                      highlight=False)
        return
    settings = get_settings()
    result = cutover.execute(engine(), service.stripe_client(engine(), settings), now=now, pause=pause,
                             actor=cli_actor())
    if json_out:
        print_json(result.as_dict())
        return
    for x in result.handed_over:
        console.print(f"handed over {x['subscription_id']} (Stripe {x['stripe_id']}): the engine charges from "
                      f"{x['engine_charges_from'].isoformat()}", highlight=False)
    for x in result.not_handed_over:
        console.print(f"[yellow]not handed over:[/] {x['subscription_id']} (Stripe {x['stripe_id']}): {x['reason']}",
                      highlight=False)
    console.print(f"{len(result.handed_over)} handed over, {len(result.not_handed_over)} left held", highlight=False)


@import_app.command("reconcile")
@handle_errors
def reconcile_cmd(
    at: str | None = typer.Option(None, "--at", help="As of this ISO time (default: now)."),
    json_out: bool = JsonOpt,
) -> None:
    """After the cut-over: was every period of every imported subscription charged by
    exactly one side (Stripe's paid invoices vs the engine's)? Exit 4 when not."""
    from billing_engine.imports import cutover, service

    now = parse_at(at)
    checked, findings = cutover.reconcile(engine(), service.stripe_client(engine(), get_settings()), now=now)
    if json_out:
        print_json({"checked": checked, "findings": [vars(f) for f in findings]})
    else:
        for f in findings:
            console.print(f"{f.problem}: {f.subscription_id} (Stripe {f.stripe_id}) period from "
                          f"{f.period_start.isoformat()}: {f.detail}", highlight=False)
        console.print(f"{checked} subscription(s) checked: " + (
            "every period charged by exactly one side" if not findings else f"{len(findings)} finding(s)"),
            highlight=False)
    if findings:
        raise typer.Exit(EXIT_CONFLICT)


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
