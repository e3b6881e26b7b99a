"""`billing demo`: a year of billing on SQLite with the fake gateway and fixtures/."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.table import Table

from billing_engine.db import make_engine, upgrade
from billing_engine.errors import ValidationError
from billing_engine.money import format_minor
from billing_engine.periods import parse_datetime
from billing_engine.settings import Settings, load_settings
from cli.common import JsonOpt, console, handle_errors_demo, print_json


def find_fixtures(given: Path | None) -> Path:
    """--fixtures, else the source tree's fixtures/, else ./fixtures (a plain `pip install .`)."""
    from billing_engine.demo import FIXTURES

    candidates = [given] if given is not None else [FIXTURES, Path.cwd() / "fixtures"]
    for c in candidates:
        if c is not None and all((c / f).is_file() for f in ("plans.json", "customers.json", "terms.txt")):
            return c
    where = given if given is not None else Path.cwd() / "fixtures"
    raise ValidationError(f"no demo fixtures (plans.json, customers.json, terms.txt) in {where}; "
                          "run from the project directory or pass --fixtures DIR", field="--fixtures")


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @handle_errors_demo
    def demo_cmd(
        database: Path = typer.Option(Path("demo.db"), help="SQLite file to (re)create for the demo."),
        mail_dir: Path = typer.Option(Path("demo-mail"), help="Where the customers' e-mails are written (.eml)."),
        fixtures: Path | None = typer.Option(None, help="Directory with plans.json, customers.json, terms.txt "
                                             "(default: the project's fixtures/)."),
        start: str = typer.Option("2026-01-01T09:00:00Z", help="First simulated day (UTC)."),
        months: int = typer.Option(12, min=1, max=60, help="How many months to simulate."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Print every notable event."),
        json_out: bool = JsonOpt,
    ) -> None:
        """Simulate a year of a paid newsletter: sign-ups, renewals, declines, dunning, cancellations."""
        # here, not at start-up: the simulation and the reports are only loaded by this command
        from billing_engine.demo import DEMO_SELLER, MONTH_COLUMNS, month_by_month, report_range, run_demo

        start_at = parse_datetime(start, "--start")
        fixtures_dir = find_fixtures(fixtures)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{database}"
        if mail_dir.exists():
            for old in mail_dir.glob("*.eml"):
                old.unlink()
        settings = load_settings(env="demo", gateway="fake", database_url=url, mail_transport="file", mail_dir=str(mail_dir),
                                 **DEMO_SELLER)
        if settings.log_level is None:  # the demo tells its own story: not 2 log lines per simulated day
            logging.getLogger().setLevel(logging.WARNING)  # (BILLING_LOG_LEVEL=info shows them)
        engine = make_engine(url)
        upgrade(engine)
        env_file = write_env_file(database, settings)
        from billing_engine.notifications import deliver_pending

        def deliver(eng, now):  # type: ignore[no-untyped-def]
            return deliver_pending(eng, now, settings)

        if json_out:
            result = run_demo(engine, start=start_at, months=months, settings=settings, deliver=deliver,
                              fixtures=fixtures_dir)
            print_json({"database": url, "mail_dir": str(mail_dir), "env_file": str(env_file), "months": [{k: dict(v) if isinstance(v, dict) else v for k, v in vars(m).items()}
                                                                for m in result.months],
                        "statuses": result.statuses, "notifications": result.notifications})
            return
        console.print(f"[bold]Demo[/]: {months} months from {start_at.date()} on {database} (fake gateway, fixtures/)")
        with console.status("simulating day by day ...") as status:
            result = run_demo(engine, start=start_at, months=months, settings=settings, deliver=deliver,
                              fixtures=fixtures_dir,
                              on_day=lambda d, _s: status.update(f"simulating {d.date()} ..."))
        currencies = sorted({c for m in result.months for c in m.collected})
        t = Table(title="Month by month (new subscribers and churn as in `billing report churn`; "
                        "collected in major units)")
        for col in (*MONTH_COLUMNS, *currencies, "live"):
            t.add_column(col, justify="left" if col == "month" else "right")
        for row in month_by_month(engine, result, start=start_at, months=months):
            t.add_row(*[str(row[c]) for c in MONTH_COLUMNS],
                      *[format_minor(row["collected"].get(c, 0), c) for c in currencies], str(row["live"]))
        console.print(t)
        console.print("subscriptions by status: " + ", ".join(f"{k}={v}" for k, v in sorted(result.statuses.items())))
        sent = len(list(mail_dir.glob("*.eml"))) if mail_dir.exists() else 0
        console.print(f"e-mails: {result.notifications} queued, {sent} delivered to {mail_dir}/ "
                      "(reminders, receipts, payment failures, cancellation confirmations)")
        from billing_engine.reports import build_query, churn_report, revenue_report

        first_day, last_day = report_range(start_at, months)
        q = build_query(start=first_day, end=last_day, period="all", now=start_at)
        console.print(f"\n[bold]Reports[/] for {first_day} .. {last_day} (the same as `billing report ...`):")
        churn = {r["currency"]: r for r in churn_report(engine, q).rows}
        revenue = {r["currency"]: r for r in revenue_report(engine, q).rows}
        rt = Table(title="Churn and revenue (voluntary = the customer chose to leave; involuntary = payment failed)")
        for col in ("currency", "new subs", "voluntary churn", "involuntary churn", "of which dunning exhausted",
                    "of which hard decline", "recovered by dunning", "gross", "refunds", "net"):
            rt.add_column(col, justify="left" if col == "currency" else "right")
        for cur in sorted(set(churn) | set(revenue)):
            c, r = churn.get(cur, {}), revenue.get(cur, {})
            rt.add_row(cur, str(c.get("new", 0)), str(c.get("voluntary", 0)), str(c.get("involuntary", 0)),
                       str(c.get("involuntary_payment_failed", 0)), str(c.get("involuntary_hard_decline", 0)),
                       format_minor(c.get("recovered_minor", 0), cur), format_minor(r.get("gross_minor", 0), cur),
                       format_minor(r.get("refunds_minor", 0), cur), format_minor(r.get("net_minor", 0), cur))
        console.print(rt)
        if verbose:
            for line in result.log:
                console.print(line, highlight=False)
        console.print(
            f"\nExplore it (after `. .venv/bin/activate`):\n"
            f"  set -a; . ./{env_file}; set +a   # the demo's settings: its database, seller, signing key, e-mails\n"
            f"  billing subscription list --status canceled\n"
            f"  billing report churn --from {start_at.date()} --to {last_day} --by plan\n"
            f"  billing report revenue --from {start_at.date()} --to {last_day} --format csv\n"
            f"  ls {mail_dir}/   # the e-mails the customers received\n"
            f"  billing serve    # their cancel links work at {settings.public_base_url}; admin API: "
            f"Bearer ${{BILLING_ADMIN_TOKENS#demo:}}", highlight=False)


def write_env_file(database: Path, settings: Settings) -> Path:
    """``<database>.env`` (``demo.env``): the settings the demo ran with, for ``set -a; .
    ./demo.env; set +a`` -- so that the CLI and ``billing serve`` afterwards show the same
    seller, sign links with the same key (the e-mailed cancel links keep working) and write
    e-mails to the same directory -- plus an admin token for trying the API. Readable by its
    owner only (it holds the signing key of this demo)."""
    import secrets
    import shlex

    from billing_engine.demo import DEMO_SELLER

    values = {"BILLING_ENV": "demo", "BILLING_DATABASE_URL": f"sqlite:///{database.resolve()}", "BILLING_GATEWAY": "fake",
              "BILLING_MAIL_TRANSPORT": "file", "BILLING_MAIL_DIR": str(Path(settings.mail_dir).resolve()),
              "BILLING_SECRET_KEY": settings.secret_key.get_secret_value(),
              "BILLING_PUBLIC_BASE_URL": settings.public_base_url,
              "BILLING_ADMIN_TOKENS": "demo:" + secrets.token_urlsafe(32),
              **{f"BILLING_{k.upper()}": str(getattr(settings, k)) for k in DEMO_SELLER}}
    path = database.with_suffix(".env")
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text("# written by `billing demo`: its settings (set -a; . ./" + path.name + "; set +a)\n"
                    + "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()))
    return path
