"""`billing consent show SUB_OR_PM`: the consent evidence for a chargeback dispute."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from billing_engine.settings import get_settings
from cli.common import JsonOpt, console, handle_errors, make_table, print_json, print_record, unit_of_work

consent_app = typer.Typer(help="Consent evidence (who agreed, when, from where, to which terms).",
                          no_args_is_help=True)


@consent_app.command("show")
@handle_errors
def show(
    ref: str = typer.Argument(..., help="Subscription (sub_...), payment method (pm_...) or consent (cns_...) id."),
    export: Path | None = typer.Option(None, "--export", help="Directory: write <consent>.json and <consent>.html "
                                                                "(the dispute file; print the HTML to PDF)."),
    json_out: bool = JsonOpt,
) -> None:
    """Show the full consent record: who, when, IP, user agent, terms (version, hash, text),
    amount, interval, and the charges and e-mails under it."""
    from billing_engine import evidence  # here: it loads jinja2 (HTML export)

    with unit_of_work() as s:
        records = [evidence.record(s, c) for c in evidence.find(s, ref)]
    if export is not None:
        export.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        for rec in records:
            (export / f"{rec['consent_id']}.json").write_text(evidence.to_json(rec), encoding="utf-8")
            (export / f"{rec['consent_id']}.html").write_text(
                evidence.to_html(rec, company_name=get_settings().company_name, generated_at=now), encoding="utf-8")
    if json_out:
        print_json(records[0] if len(records) == 1 else records)
        return
    for rec in records:
        print_record({k: v for k, v in rec.items() if k not in ("subscriptions", "charges", "emails", "customer",
                                                                "payment_method")}
                     | {"customer": f"{rec['customer']['name']} <{rec['customer']['email']}>",
                        "card": f"{rec['payment_method']['brand']} ····{rec['payment_method']['last4']}"})
        t = make_table("paid at", "invoice", "amount")
        for c in rec["charges"]:
            t.add_row(str(c["paid_at"])[:19], c["invoice_id"], f"{c['amount']} {c['currency']}")
        console.print(t)
        console.print(f"{len(rec['emails'])} e-mails about these charges; "
                      f"retained until {rec['retain_until'] or 'at least 3 years after the subscription ends'}")
    if export is not None:
        console.print(f"exported {len(records)} consent record(s) to {export}/ (.json and .html)")


def register(app: typer.Typer) -> None:
    app.add_typer(consent_app, name="consent")
