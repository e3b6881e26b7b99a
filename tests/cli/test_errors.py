"""Every error a command lets escape, and every usage error, is ONE line on stderr and the
README's exit code: no traceback, no boxed usage text."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from billing_engine import errors
from billing_engine.gateway.protocol import GatewayError, GatewayUnreachable
from cli.common import BillingGroup

ROOT = Path(__file__).resolve().parents[2]


def _app(exc: BaseException) -> typer.Typer:
    app = typer.Typer(cls=BillingGroup, pretty_exceptions_enable=False, add_completion=False)

    @app.command("boom")
    def boom() -> None:
        raise exc

    @app.command("other")
    def other() -> None:  # a second command, so "boom" is a subcommand like in `billing`
        pass

    return app


@pytest.mark.parametrize(("exc", "code", "line"), [
    (errors.ValidationError("must be positive", field="--amount"), 2, "error: --amount: must be positive"),
    (errors.NotFound("no plan 'x'", field="plan"), 3, "error: plan: no plan 'x'"),
    (errors.Conflict("already canceled"), 4, "error: already canceled"),
    (errors.ConfigurationError("BILLING_STRIPE_API_KEY is required"), 78, "error: BILLING_STRIPE_API_KEY is required"),
    (GatewayUnreachable("connection reset"), 75, "error: connection reset"),
    (GatewayError("Invalid API Key provided"), 78, "error: the payment gateway refused the request"),
    (OperationalError("SELECT 1", {}, Exception("database is locked")), 70, "error: database error: database is locked"),
], ids=["validation", "not-found", "conflict", "config", "unreachable", "gateway-refused", "database"])
def test_an_escaping_error_is_one_line_and_its_exit_code(exc: BaseException, code: int, line: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="billing.cli")
    r = CliRunner().invoke(_app(exc), ["boom"])
    assert r.exit_code == code
    assert r.stderr.startswith(line)
    assert r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr and r.stdout == ""
    if code == 70:  # the traceback is in the log, not on the terminal
        assert any(rec.exc_info for rec in caplog.records)


def _billing(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)


@pytest.mark.parametrize(("args", "option"), [
    (("plan", "create", "--code", "basic"), "--name"),
    (("plan", "create", "--bogus", "1"), "--bogus"),
    (("serve", "--port", "abc"), "--port"),
])
def test_a_usage_error_is_one_line_naming_the_option(args: tuple[str, ...], option: str, tmp_path: Path) -> None:
    p = _billing(*args, tmp_path=tmp_path)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("error: ") and option in p.stderr
    assert "╭" not in p.stderr


def test_no_arguments_still_prints_the_help(tmp_path: Path) -> None:
    p = _billing(tmp_path=tmp_path)
    assert "Usage" in p.stdout and "run-cycle" in p.stdout


def test_an_engine_error_names_the_option_the_user_typed(tmp_path: Path) -> None:
    """The engine names its fields (trial_days, consent.ip_address, plan); the CLI line names
    the option of the command that was run (--trial-days, --consent-ip, --plan)."""
    from tests.cli.inproc import invoke

    env = {"BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "BILLING_ENV": "development"}
    p = invoke(env, tmp_path, "plan", "create", "--code", "basic", "--name", "Basic", "--amount", "7.00",
               "--currency", "USD", "--interval", "month", "--trial-days", "-1")
    assert (p.returncode, p.stderr.strip()) == (2, "error: --trial-days: must be between 0 and 730")
    cust = invoke(env, tmp_path, "customer", "create", "--email", "ada@example.com", "--name", "Ada", "--json")
    import json

    cid = json.loads(cust.stdout)["id"]
    common = ("--token", "pm_card_visa", "--consent-user-agent", "x", "--terms-version", "v1", "--terms-text", "t",
              "--consent-amount", "7.00", "--consent-currency", "USD")
    p = invoke(env, tmp_path, "payment-method", "add", cid, "--consent-ip", "999.1.1.1", *common)
    assert (p.returncode, p.stderr.strip()) == (2, "error: --consent-ip: not an IP address: '999.1.1.1'")
    p = invoke(env, tmp_path, "payment-method", "add", cid, "--consent-ip", "1.1.1.1", "--consent-channel", "owl",
               *common)
    assert p.returncode == 2 and p.stderr.startswith("error: --consent-channel: must be one of web")
    p = invoke(env, tmp_path, "subscribe", "--customer", cid, "--plan", "nope", "--payment-method", "pm_x")
    assert (p.returncode, p.stderr.strip()) == (3, "error: --plan: no plan 'nope'")
