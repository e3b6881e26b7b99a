"""`billing demo`: a year of billing on SQLite with the fake gateway and fixtures/."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from billing_engine.db import make_engine, upgrade
from billing_engine.demo import run_demo
from billing_engine.money import format_minor
from billing_engine.periods import parse_datetime
from billing_engine.settings import load_settings
from cli.common import console, handle_errors


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @handle_errors
    def demo_cmd(
        database: Path = typer.Option(Path("demo.db"), help="SQLite file to (re)create for the demo."),
        start: str = typer.Option("2026-01-01T09:00:00Z", help="First simulated day (UTC)."),
        months: int = typer.Option(12, min=1, max=60, help="How many months to simulate."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Print every notable event."),
    ) -> None:
        """Simulate a year of a paid newsletter: sign-ups, renewals, declines, dunning, cancellations."""
        start_at = parse_datetime(start, "--start")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{database}"
        settings = load_settings(database_url=url)
        engine = make_engine(url)
        upgrade(engine)
        console.print(f"[bold]Demo[/]: {months} months from {start_at.date()} on {database} (fake gateway, fixtures/)")
        with console.status("simulating day by day ...") as status:
            result = run_demo(engine, start=start_at, months=months, settings=settings,
                              on_day=lambda d, _s: status.update(f"simulating {d.date()} ..."))
        currencies = sorted({c for m in result.months for c in m.collected})
        t = Table(title="Month by month (collected in major units)")
        for col in ("month", "new", "paid", "soft decl.", "hard decl.", "invol. churn", "ended", *currencies, "live"):
            t.add_column(col, justify="left" if col == "month" else "right")
        for m in result.months:
            t.add_row(m.month, str(m.new), str(m.succeeded), str(m.declined_soft), str(m.declined_hard),
                      str(m.canceled_involuntary), str(m.cancellations_effective),
                      *[format_minor(m.collected.get(c, 0), c) for c in currencies], str(m.active_at_end))
        console.print(t)
        console.print("subscriptions by status: " + ", ".join(f"{k}={v}" for k, v in sorted(result.statuses.items())))
        console.print(f"e-mails queued in the outbox: {result.notifications}")
        if verbose:
            for line in result.log:
                console.print(line, highlight=False)
        console.print(
            f"\nExplore it: BILLING_DATABASE_URL={url} billing subscription list | billing report churn "
            f"--from {start_at.date()} --to ...", highlight=False)
