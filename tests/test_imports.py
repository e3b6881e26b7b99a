"""Modules are imported by name, plainly: a missing or broken one fails at start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_a_missing_router_module_stops_the_api_from_loading() -> None:
    p = _python("import sys; sys.modules['api.routers.reports'] = None; import api.app")
    assert p.returncode != 0
    assert "api.routers.reports" in p.stderr


def test_a_missing_command_module_stops_the_cli_from_loading() -> None:
    p = _python("import sys; sys.modules['cli.reports'] = None; import cli.main")
    assert p.returncode != 0
    assert "cli.reports" in p.stderr


def test_auth_does_not_import_the_error_handlers() -> None:
    p = _python("import sys, api.auth; assert 'api.errors' not in sys.modules, 'import loop'")
    assert p.returncode == 0, p.stderr


def test_every_router_is_mounted() -> None:
    p = _python(
        "from api.app import create_app\n"
        "from billing_engine.settings import load_settings\n"
        "app = create_app(settings=load_settings(database_url='sqlite://'))\n"
        "paths = set(app.openapi()['paths'])\n"
        "need = ['/healthz', '/v1/plans', '/v1/customers', '/v1/refunds', '/v1/reports/{name}', '/webhooks/stripe',\n"
        "        '/v1/notifications']\n"
        "missing = [n for n in need if n not in paths]\n"
        "assert not missing, missing\n"
    )
    assert p.returncode == 0, p.stderr


def test_the_cli_starts_without_the_modules_only_some_commands_need() -> None:
    """`billing` start-up stays light (every command pays it): the Stripe SDK (import
    commands), the consent-evidence HTML (consent show) and the demo simulation load when
    their command runs. And the garbage collector, off while the commands are imported,
    is back on."""
    p = _python("import gc, sys, cli.main\n"
                "heavy = [m for m in ('stripe', 'billing_engine.evidence', 'billing_engine.demo') if m in sys.modules]\n"
                "assert not heavy, heavy\n"
                "assert gc.isenabled()\n")
    assert p.returncode == 0, p.stderr
