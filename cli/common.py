"""Shared CLI plumbing: one readable error line, exit codes, --json output, --at."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlmodel import Session, SQLModel

from billing_engine.db import get_engine, transaction
from billing_engine.errors import BillingError, ConfigurationError
from billing_engine.periods import parse_datetime
from billing_engine.settings import Settings, get_settings

console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def fail(message: str, code: int = 1) -> None:
    """Print one line to stderr and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def checked_settings(*, serving_api: bool = False) -> Settings:
    """The environment's settings, refused (exit 78, one line) when they are unsafe for
    production: see :meth:`Settings.check_production_safety`."""
    settings = get_settings()
    settings.check_production_safety(serving_api=serving_api)
    return settings


def handle_errors(fn: F) -> F:
    """Check the settings (production safety), then run the command, turning engine errors
    into one line on stderr and a non-zero exit code."""
    return _wrap(fn, check_settings=True)


def handle_errors_demo(fn: F) -> F:
    """:func:`handle_errors` for `billing demo`, which brings its own settings (demo mode)."""
    return _wrap(fn, check_settings=False)


def _wrap(fn: F, *, check_settings: bool) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if check_settings:
                checked_settings()
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BillingError as exc:
            fail(str(exc), exc.exit_code)
        except OperationalError as exc:
            fail(f"database error: {str(exc.orig).strip().splitlines()[0]}", 70)
        except SQLAlchemyError as exc:
            fail(f"database error: {str(exc).strip().splitlines()[0]}", 70)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def engine() -> Engine:
    try:
        return get_engine()
    except ConfigurationError as exc:
        fail(str(exc), exc.exit_code)
        raise  # unreachable


@contextmanager
def unit_of_work() -> Iterator[Session]:
    with transaction(engine()) as session:
        yield session


def parse_at(value: str | None, field: str = "--at") -> datetime:
    if value is None:
        return datetime.now(UTC)
    return parse_datetime(value, field)


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, SQLModel | BaseModel):
        return to_jsonable(obj.model_dump())
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat().replace("+00:00", "Z")
    return obj


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, sort_keys=False, default=str) + "\n")


def make_table(*headers: str, title: str | None = None) -> Any:
    """A rich table whose cells wrap instead of truncating (ids must stay copyable)."""
    from rich.table import Table

    t = Table(title=title)
    for h in headers:
        if h in ("id", "subscription", "customer id"):
            t.add_column(h, no_wrap=True, min_width=30)
        else:
            t.add_column(h, overflow="fold")
    return t


def print_record(data: dict[str, Any], *, skip: tuple[str, ...] = ()) -> None:
    """One object as a two-column field/value table (``skip``: nested lists shown apart)."""
    from rich.table import Table

    t = Table(show_header=False)
    for k, v in data.items():
        if k not in skip:
            t.add_row(k, "" if v is None else str(v))
    console.print(t)
