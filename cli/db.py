"""`billing db upgrade|current`."""

from __future__ import annotations

import typer

from billing_engine.db import current_revision, head_revision, make_engine, upgrade
from billing_engine.settings import get_settings
from cli.common import JsonOpt, console, handle_errors, print_json

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@db_app.command("upgrade")
@handle_errors
def upgrade_cmd(json_out: bool = JsonOpt) -> None:
    """Migrate the database to the latest schema (safe to run again)."""
    eng = make_engine(get_settings().database_url)
    before, after = upgrade(eng)
    if json_out:
        print_json({"before": before, "after": after, "changed": before != after})
    elif before == after:
        console.print(f"database already at {after}")
    else:
        console.print(f"database upgraded {before or 'empty'} -> {after}")


@db_app.command("current")
@handle_errors
def current_cmd(json_out: bool = JsonOpt) -> None:
    """Show the schema revision of the database and of this code."""
    eng = make_engine(get_settings().database_url)
    if json_out:
        db, code = current_revision(eng), head_revision()
        print_json({"database": db, "code": code, "up_to_date": db == code})
        return
    console.print(f"database: {current_revision(eng) or 'empty'}; code: {head_revision()}")
