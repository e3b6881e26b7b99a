"""`billing ARGS` run inside the test process, for the set-up steps of CLI tests whose process
boundary is not what the test checks (making a plan, a customer, a card, a subscription):
the same typer commands, without the ~1.5 s of CPU a new interpreter spends importing.

The commands used here keep a real-process test of their own (tests/cli/test_cli.py's admin
flow: plan create, customer create, payment-method add, subscribe, run-cycle), and the
commands each test checks still run as real processes there.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner


def invoke(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Like ``subprocess.run([billing, *args], env=env, cwd=cwd)``: the BILLING_* variables of
    ``env`` (and no others) for the command's settings, ``cwd`` for relative paths."""
    from billing_engine.settings import get_settings
    from cli.main import app

    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("BILLING_") and k not in env]:
            mp.delenv(k)
        for k, v in env.items():
            if k.startswith("BILLING_"):
                mp.setenv(k, v)
        mp.chdir(cwd)
        get_settings.cache_clear()
        try:  # (the logging it configures is put back after the test: tests/conftest.py)
            res = CliRunner().invoke(app, list(args))
        finally:
            get_settings.cache_clear()
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return subprocess.CompletedProcess(list(args), res.exit_code, res.stdout, res.stderr)
