"""Shared CLI plumbing: one readable error line, exit codes, --json output, --at."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlmodel import Session, SQLModel
from typer._click import Context
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer._click.globals import get_current_context
from typer.core import TyperGroup

from billing_engine.db import get_engine, transaction
from billing_engine.errors import BillingError, ConfigurationError
from billing_engine.gateway.protocol import GatewayError
from billing_engine.periods import parse_datetime
from billing_engine.settings import Settings, branding_warnings, get_settings

console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


log = logging.getLogger("billing.cli")
log.addHandler(logging.NullHandler())  # tracebacks go to the configured log, never to the terminal

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_DATABASE = 70  # EX_SOFTWARE, as documented in the README
EXIT_CANT_CREATE = 73  # EX_CANTCREAT: an output file cannot be written
EXIT_UNAVAILABLE = 75  # EX_TEMPFAIL: gateway unreachable, retry later
EXIT_CONFIG = 78  # EX_CONFIG


def fail(message: str, code: int = 1) -> None:
    """Print one line to stderr and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {_one_line(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def checked_settings(*, serving_api: bool = False) -> Settings:
    """The environment's settings, refused (exit 78, one line) when they are unsafe for
    production: see :meth:`Settings.check_production_safety`."""
    settings = get_settings()
    settings.check_production_safety(serving_api=serving_api)
    return settings


def warn(message: str) -> None:
    """One warning on stderr: ``warning: ...`` on a terminal; a JSON log line (level
    warning, event ``warning: ...``) when the logs are JSON -- stderr is a pipe or a file
    (cron, systemd, containers) -- so that log stays one JSON object per line (``jq .``)."""
    from billing_engine import logs

    if logs.json_enabled():
        log.warning("warning: %s", _one_line(message))
    else:
        err_console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def warn_branding(settings: Settings) -> None:
    """Production only: one line per seller setting still a placeholder (customers would
    see it). Printed by the commands that e-mail or serve customers, after their checks."""
    for warning in branding_warnings(settings):
        warn(warning)


def _one_line(message: str) -> str:
    return " ".join(message.split())


def describe(exc: BaseException) -> tuple[str, int]:
    """THE mapping of an error to the one line a user reads and the exit code (README).

    Engine errors carry their own exit code; the gateway refusing a request (bad API key,
    wrong account, invalid request) is our configuration, not the card: exit 78.
    Database errors exit 70; their traceback goes to the log only.
    """
    if isinstance(exc, BillingError):  # includes GatewayUnreachable (75) and ConfigurationError (78)
        return str(exc), exc.exit_code
    if isinstance(exc, GatewayError):
        return (f"the payment gateway refused the request (check BILLING_GATEWAY / BILLING_STRIPE_API_KEY): {exc}",
                EXIT_CONFIG)
    if isinstance(exc, DBAPIError):
        log.error("database error", exc_info=exc)
        first = str(exc.orig).strip().splitlines() if exc.orig is not None else []
        return f"database error: {first[0] if first else type(exc.orig).__name__}", EXIT_DATABASE
    if isinstance(exc, SQLAlchemyError):
        log.error("database error", exc_info=exc)
        return f"database error: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}", EXIT_DATABASE
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    log.error("unexpected error", exc_info=exc)
    return f"internal error ({type(exc).__name__}: {exc}); details in the log", 1


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
        except (typer.Exit, typer.Abort, ClickException, BrokenPipeError):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            message, code = describe(exc)
            if isinstance(exc, BillingError) and (option := option_for(exc.field)) is not None:
                message = f"{option}: {exc.message.removeprefix(f'{exc.field}:').strip()}"
            fail(message, code)

    return wrapper  # type: ignore[return-value]


def option_for(field: str | None) -> str | None:
    """The running command's option for an engine error's field, so the line names what the
    user typed: ``trial_days`` -> ``--trial-days``, ``consent.channel`` -> ``--consent-channel``,
    ``consent.terms_text`` -> ``--terms-text``. None when no option matches (the field as is)."""
    ctx = get_current_context(silent=True)
    if not field or field.startswith("-") or ctx is None:
        return None
    last = field.rsplit(".", 1)[-1]
    names = {field.replace(".", "_"), last}
    flags = {"--" + field.replace(".", "-").replace("_", "-"), "--" + last.replace("_", "-")}
    for param in ctx.command.params:
        if param.param_type_name == "option" and (param.name in names or flags & set(param.opts)):
            longs = [o for o in param.opts if o.startswith("--")]
            return longs[0] if longs else None
    return None


class BillingGroup(TyperGroup):
    """The root command: every error of every command, and every usage error, ends as ONE
    line on stderr and an exit code -- no traceback, no boxed usage text."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, ClickException, BrokenPipeError):
            # BrokenPipeError: the reader of stdout went away (`billing ... | head`); click's
            # main exits 1 quietly, as for `billing --help | head`. Not an internal error.
            raise
        except (Exception, KeyboardInterrupt) as exc:
            message, code = describe(exc)
            fail(message, code)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False,
                              windows_expand_args=windows_expand_args, **extra)
        except NoArgsIsHelpError as exc:
            if exc.format_message().strip():  # rich help was printed when the error was built
                typer.echo(exc.format_message())
            code = exc.exit_code
        except UsageError as exc:
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            err_console.print(f"[bold red]error:[/] {_one_line(where + exc.format_message())}{hint}",
                              highlight=False, soft_wrap=True)
            code = exc.exit_code
        except ClickException as exc:
            err_console.print(f"[bold red]error:[/] {_one_line(exc.format_message())}", highlight=False,
                              soft_wrap=True)
            code = exc.exit_code
        except typer.Abort:
            err_console.print("[bold red]error:[/] aborted", highlight=False)
            code = 1
        else:
            # typer returns the code of an explicit Exit, else the command's (unused) return value
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
            if not standalone_mode:
                return rv
        if not standalone_mode:
            return code
        sys.exit(code)


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
