"""The `billing` command."""

from __future__ import annotations

import gc

# Start-up cost: the imports below (SQLAlchemy, pydantic, the models, typer, rich) allocate
# hundreds of thousands of long-lived objects and no garbage. With the collector on, its
# full collections re-scan that growing heap several times while importing: ~0.3 s of CPU
# of every `billing` command. It is off while importing; then the imported objects are
# frozen (left out of later collections) and it is back on for the command itself.
gc.disable()

import typer

from billing_engine.errors import ConfigurationError
from cli import (
    account_links,
    consents,
    cycle,
    demo,
    imports,
    invoices,
    lifecycle,
    links,
    notifications,
    pricing,
    refunds,
    reports,
    serve,
    webhooks,
)
from cli.catalog import customer_app, plan_app, pm_app
from cli.common import BillingGroup, describe, fail, handle_errors
from cli.db import db_app
from cli.subscriptions import sub_app, subscribe

app = typer.Typer(
    name="billing",
    cls=BillingGroup,
    help="Recurring-billing engine: plans, consented cards, renewals, one-click cancel, reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # billing --install-completion / --show-completion (bash, zsh, fish, PowerShell)
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"billing {version('billing-engine')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            typer.echo("billing (not installed)")
        raise typer.Exit(0)


@app.callback()
def _root(
    _show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the installed version and exit."),
) -> None:
    """Recurring-billing engine: plans, consented cards, renewals, one-click cancel, reports."""
    from billing_engine import logs
    from billing_engine.settings import get_settings

    try:
        settings = get_settings()
    except ConfigurationError:  # reported as one line by the command itself
        return
    logs.configure(level=settings.log_level, fmt=settings.log_format)
app.add_typer(db_app, name="db")
app.add_typer(plan_app, name="plan")
app.add_typer(customer_app, name="customer")
app.add_typer(pm_app, name="payment-method")
app.add_typer(sub_app, name="subscription")
app.command("subscribe")(handle_errors(subscribe))

# Feature modules each define `register(app: typer.Typer) -> None`.
for _module in (cycle, demo, invoices, notifications, links, reports, serve, refunds, webhooks, imports, account_links,
                lifecycle, pricing, consents):
    _module.register(app)

gc.freeze()
gc.enable()


def main() -> None:
    try:
        app()
    except ConfigurationError as exc:  # e.g. invalid settings while the commands are being built
        fail(*describe(exc))


if __name__ == "__main__":
    main()
