"""Production safety as an admin meets it: `billing ...` refuses to start (exit 78, one
line saying what to set) with a public signing key, weak admin tokens or no gateway
choice, wherever the engine is clearly not a demo; the demo and local SQLite still work
with no setting at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BILLING = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]
STRONG = "k" * 43
PG_UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/never"  # the check runs before any connection
HINT = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: no mode (production rules decide), no keys, no gateway."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    e.update(PYTHONPATH=str(ROOT), BILLING_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}")
    return e


def billing(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BILLING, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def one_line(p: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_serve_with_live_stripe_key_and_default_secret_key_exits_78(env: dict[str, str], tmp_path: Path) -> None:
    env.update(BILLING_GATEWAY="stripe", BILLING_STRIPE_API_KEY="sk_live_" + "x" * 24,
               BILLING_PUBLIC_BASE_URL="https://billing.example.com", BILLING_ADMIN_TOKENS=STRONG)
    p = billing(env, tmp_path, "serve", "--port", "1")
    assert p.returncode == 78
    line = one_line(p)
    assert "BILLING_SECRET_KEY" in line and HINT in line


def test_live_stripe_key_is_production_even_in_development_mode(env: dict[str, str], tmp_path: Path) -> None:
    env.update(BILLING_ENV="development", BILLING_GATEWAY="stripe", BILLING_STRIPE_API_KEY="sk_live_" + "x" * 24)
    p = billing(env, tmp_path, "plan", "list")
    assert p.returncode == 78 and "BILLING_SECRET_KEY" in one_line(p)


@pytest.mark.parametrize("command", [("plan", "list"), ("run-cycle", "--dry-run"), ("cancel-link", "sub_x")])
def test_every_command_on_postgresql_refuses_a_short_secret_key(
    env: dict[str, str], tmp_path: Path, command: tuple[str, ...]
) -> None:
    env.update(BILLING_DATABASE_URL=PG_UNREACHABLE, BILLING_SECRET_KEY="short-but-not-default",
               BILLING_GATEWAY="stripe", BILLING_STRIPE_API_KEY="sk_test_x")
    p = billing(env, tmp_path, *command)
    assert p.returncode == 78
    line = one_line(p)
    assert "BILLING_SECRET_KEY is too short" in line and HINT in line


def test_production_mode_refuses_the_built_in_key_even_on_sqlite(env: dict[str, str], tmp_path: Path) -> None:
    env.update(BILLING_ENV="production", BILLING_GATEWAY="fake")
    p = billing(env, tmp_path, "plan", "list")
    assert p.returncode == 78 and "built-in key is public" in one_line(p)


def test_serve_in_production_needs_long_admin_tokens(env: dict[str, str], tmp_path: Path) -> None:
    env.update(BILLING_ENV="production", BILLING_GATEWAY="fake", BILLING_SECRET_KEY=STRONG)
    p = billing(env, tmp_path, "serve", "--port", "1")
    assert p.returncode == 78 and "BILLING_ADMIN_TOKENS is not set" in one_line(p)
    env["BILLING_ADMIN_TOKENS"] = f"{STRONG},letmein"
    p = billing(env, tmp_path, "serve", "--port", "1")
    assert p.returncode == 78
    line = one_line(p)
    assert "BILLING_ADMIN_TOKENS has a token shorter than 32 bytes" in line and HINT in line


def test_run_cycle_on_postgresql_without_gateway_exits_78_naming_it(env: dict[str, str], tmp_path: Path) -> None:
    env.update(BILLING_DATABASE_URL=PG_UNREACHABLE, BILLING_SECRET_KEY=STRONG)
    p = billing(env, tmp_path, "run-cycle")
    assert p.returncode == 78
    line = one_line(p)
    assert "BILLING_GATEWAY is not set" in line and "BILLING_GATEWAY=stripe" in line


def test_rotated_keys_are_checked_too(env: dict[str, str], tmp_path: Path) -> None:
    env.update(BILLING_ENV="production", BILLING_GATEWAY="fake", BILLING_SECRET_KEYS=f"{STRONG},old-short-key")
    p = billing(env, tmp_path, "plan", "list")
    assert p.returncode == 78 and "BILLING_SECRET_KEYS is too short" in one_line(p)


def test_local_sqlite_with_no_setting_still_works(env: dict[str, str], tmp_path: Path) -> None:
    p = billing(env, tmp_path, "plan", "list", "--json")
    assert p.returncode == 0, p.stderr
    p = billing(env, tmp_path, "run-cycle", "--json")
    assert p.returncode == 0, p.stderr
    assert "warning" not in p.stderr


def test_demo_needs_no_setting_even_where_production_rules_apply(env: dict[str, str], tmp_path: Path) -> None:
    env.update(BILLING_DATABASE_URL=PG_UNREACHABLE)  # the demo brings its own SQLite file
    p = billing(env, tmp_path, "demo", "--fixtures", str(ROOT / "fixtures"), "--months", "1")
    assert p.returncode == 0, p.stderr
    # stderr is a pipe here (`make demo 2>&1 | tee`): the demo's own story, not two JSON log
    # lines per simulated day (BILLING_LOG_LEVEL=info brings them back)
    assert '"level"' not in p.stderr, p.stderr[:2000]


def test_the_demo_leaves_its_settings_so_its_data_can_be_served_as_it_was_billed(env: dict[str, str],
                                                                                  tmp_path: Path) -> None:
    """demo.env: the same seller, the same signing key (the e-mailed cancel links verify), the
    demo's database and e-mail directory, and an admin token. Before, serving demo.db showed
    'Your Newsletter' and a new key broke every link in demo-mail/."""
    import re
    import stat

    p = billing(env, tmp_path, "demo", "--fixtures", str(ROOT / "fixtures"), "--months", "1")
    assert p.returncode == 0, p.stderr
    env_file = tmp_path / "demo.env"
    assert "set -a; . ./demo.env; set +a" in p.stdout
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # it holds the demo's signing key
    token = re.search(r"/cancel/([A-Za-z0-9._-]+)", "".join(
        f.read_text() for f in sorted((tmp_path / "demo-mail").glob("*.eml"))[:5])).group(1)  # type: ignore[union-attr]
    check = ("from datetime import datetime, UTC; from billing_engine.settings import get_settings; "
             "from billing_engine.links import verify_cancel_token; s = get_settings(); "
             "print(s.company_name, s.database_url.endswith('demo.db'), "  # verified in the demo's (simulated) January
             f"verify_cancel_token(s, {token!r}, datetime(2026, 1, 20, tzinfo=UTC)).startswith('sub_'), "
             "len(s.admin_secrets()))")
    clean = {k: v for k, v in env.items() if not k.startswith("BILLING_")}
    out = subprocess.run(["sh", "-c", f'set -a; . ./demo.env; set +a; exec "{sys.executable}" -c "{check}"'],
                         cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "The Ledger True True 1"


def test_explicit_fake_gateway_on_postgresql_runs_with_one_warning(
    env: dict[str, str], tmp_path: Path, _pg_database: str | None
) -> None:
    if _pg_database is None:
        pytest.skip("PostgreSQL tests need BILLING_TEST_DATABASE_URL")
    env.update(BILLING_DATABASE_URL=_pg_database, BILLING_SECRET_KEY=STRONG, BILLING_GATEWAY="fake",
               # the seller is named (else the placeholder warnings of tests/test_branding.py add lines)
               BILLING_COMPANY_NAME="The Ledger", BILLING_COMPANY_ADDRESS="1 Example Street",
               BILLING_COMPANY_TAX_ID="EIN 00-0000000", BILLING_SUPPORT_EMAIL="help@ledger.example",
               BILLING_MAIL_FROM="The Ledger <billing@ledger.example>")
    p = billing(env, tmp_path, "run-cycle", "--json", "--no-email")
    assert p.returncode == 0, p.stderr
    # stderr is not a terminal: the logs are JSON lines (the run's own at info); the warning is one of them
    import json

    events = [json.loads(ln)["event"] for ln in p.stderr.splitlines() if ln.strip()]
    [line] = [e for e in events if "BILLING_GATEWAY=fake" in e]
    assert line.startswith("warning:") and "without charging" in line
    assert billing(env, tmp_path, "plan", "list", "--json").stderr == ""  # only where a gateway is used


def test_a_stripe_key_line_left_empty_names_the_setting(env: dict[str, str], tmp_path: Path) -> None:
    """deploy/billing.env.example has `BILLING_STRIPE_API_KEY=` to fill in; left empty, the run
    said "the payment gateway refused the request (...): Stripe API key is missing"."""
    env.update(BILLING_GATEWAY="stripe", BILLING_STRIPE_API_KEY="", BILLING_STRIPE_WEBHOOK_SECRET="",
               BILLING_SECRET_KEY=STRONG, BILLING_MAIL_TRANSPORT="none")
    assert billing(env, tmp_path, "db", "upgrade").returncode == 0
    p = billing(env, tmp_path, "run-cycle")
    assert p.returncode == 78
    line = one_line(p)
    assert "BILLING_STRIPE_API_KEY is required" in line and "refused" not in line, line
