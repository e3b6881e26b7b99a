"""`billing db upgrade|current`."""

from __future__ import annotations

import typer

from billing_engine.db import current_revision, head_revision, make_engine, upgrade
from billing_engine.settings import get_settings
from cli.common import console, handle_errors

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@db_app.command("upgrade")
@handle_errors
def upgrade_cmd() -> None:
    """Migrate the database to the latest schema (safe to run again)."""
    eng = make_engine(get_settings().database_url)
    before, after = upgrade(eng)
    if before == after:
        console.print(f"database already at {after}")
    else:
        console.print(f"database upgraded {before or 'empty'} -> {after}")


@db_app.command("current")
@handle_errors
def current_cmd() -> None:
    """Show the schema revision of the database and of this code."""
    eng = make_engine(get_settings().database_url)
    console.print(f"database: {current_revision(eng) or 'empty'}; code: {head_revision()}")
