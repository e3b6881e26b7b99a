"""`billing run-cycle --at` ahead of the clock with a real gateway is refused (exit 2, one
line naming --at) unless --simulate is given; catch-up in the past still runs."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

BILLING = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stripe_env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    e.update(PYTHONPATH=str(ROOT), BILLING_ENV="test", BILLING_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
             BILLING_GATEWAY="stripe", BILLING_STRIPE_API_KEY="sk_test_" + "x" * 24,
             BILLING_STRIPE_API_BASE="http://127.0.0.1:1")  # never reached: nothing is due
    return e


def _run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BILLING, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def test_run_cycle_far_ahead_with_stripe_exits_2_naming_at(stripe_env: dict[str, str], tmp_path: Path) -> None:
    p = _run(stripe_env, tmp_path, "run-cycle", "--at", _iso(timedelta(days=727)), "--json")
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --at: ") and "--simulate" in lines[0], p.stderr
    assert p.stdout == ""


def test_run_cycle_in_the_past_or_simulated_runs(stripe_env: dict[str, str], tmp_path: Path) -> None:
    past = _run(stripe_env, tmp_path, "run-cycle", "--at", _iso(timedelta(days=-30)), "--json")
    assert past.returncode == 0, past.stderr
    sim = _run(stripe_env, tmp_path, "run-cycle", "--at", _iso(timedelta(days=727)), "--simulate", "--json")
    assert sim.returncode == 0, sim.stderr


def test_run_cycle_beyond_the_supported_range_exits_2(stripe_env: dict[str, str], tmp_path: Path) -> None:
    p = _run(stripe_env, tmp_path, "run-cycle", "--at", "9999-12-31T00:00:00Z", "--simulate")
    assert p.returncode == 2 and p.stderr.strip().startswith("error: --at: "), p.stderr
