"""The `billing` command."""

from __future__ import annotations

import typer

from billing_engine.errors import ConfigurationError
from cli import consents, cycle, demo, invoices, links, notifications, refunds, reports, serve
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
    add_completion=False,
)
app.add_typer(db_app, name="db")
app.add_typer(plan_app, name="plan")
app.add_typer(customer_app, name="customer")
app.add_typer(pm_app, name="payment-method")
app.add_typer(sub_app, name="subscription")
app.command("subscribe")(handle_errors(subscribe))

# Feature modules each define `register(app: typer.Typer) -> None`.
for _module in (cycle, demo, invoices, notifications, links, reports, serve, refunds, consents):
    _module.register(app)


def main() -> None:
    try:
        app()
    except ConfigurationError as exc:  # e.g. invalid settings while the commands are being built
        fail(*describe(exc))


if __name__ == "__main__":
    main()
