"""The `billing` command."""

from __future__ import annotations

import importlib

import typer

from billing_engine.errors import ConfigurationError
from cli.catalog import customer_app, plan_app, pm_app
from cli.common import fail, handle_errors
from cli.db import db_app
from cli.subscriptions import sub_app, subscribe

app = typer.Typer(
    name="billing",
    help="Recurring-billing engine: plans, consented cards, renewals, one-click cancel, reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db_app, name="db")
app.add_typer(plan_app, name="plan")
app.add_typer(customer_app, name="customer")
app.add_typer(pm_app, name="payment-method")
app.add_typer(sub_app, name="subscription")
app.command("subscribe")(handle_errors(subscribe))

# Feature modules register themselves on `app` when imported: each defines
# `register(app: typer.Typer) -> None`.
for _mod in ("cli.cycle", "cli.demo", "cli.invoices", "cli.notifications", "cli.links", "cli.reports", "cli.serve", "cli.refunds"):
    try:
        module = importlib.import_module(_mod)
    except ModuleNotFoundError as exc:
        if exc.name != _mod:
            raise
        continue
    module.register(app)


def main() -> None:
    try:
        app()
    except ConfigurationError as exc:
        fail(str(exc), exc.exit_code)


if __name__ == "__main__":
    main()
