"""CLI polish an admin notices: --version, shell completion, --json everywhere, cursor pages
that say when more exist, a run-cycle progress bar with its total and rate."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BILLING = [sys.executable, "-m", "cli.main"]
AT = "2026-01-10T09:00:00Z"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PYTHONPATH": str(ROOT),
         "BILLING_MAIL_TRANSPORT": "none"}
    e.pop("BILLING_GATEWAY", None)
    return e


def run(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*BILLING, *args], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == code, p.stderr
    return p


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    p = subprocess.run([*BILLING, "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    assert p.stdout.strip() == f"billing {version('billing-engine')}"


def test_shell_completion_completes_commands(env: dict[str, str]) -> None:
    billing = str(Path(sys.executable).parent / "billing")  # the installed entry point: its name picks the variable
    p = subprocess.run([billing], capture_output=True, text=True, timeout=60,
                       env={**env, "_BILLING_COMPLETE": "complete_bash", "COMP_WORDS": "billing subs", "COMP_CWORD": "1"})
    assert p.stdout.split() == ["subscribe", "subscription"]


def test_db_current_and_upgrade_take_json(env: dict[str, str]) -> None:
    up = json.loads(run(env, "db", "upgrade", "--json").stdout)
    assert up["after"] and up["changed"] is True
    cur = json.loads(run(env, "db", "current", "--json").stdout)
    assert cur == {"database": up["after"], "code": up["after"], "up_to_date": True}
    assert json.loads(run(env, "db", "upgrade", "--json").stdout)["changed"] is False


def _seed(env: dict[str, str], n: int) -> None:
    """n customers, each with a card and a subscription, made in this process (fast)."""
    from datetime import UTC, datetime

    from billing_engine.db import make_engine, transaction, upgrade
    from tests.factories import make_plan, make_subscription

    eng = make_engine(env["BILLING_DATABASE_URL"])
    try:
        upgrade(eng)
        now = datetime(2026, 1, 10, 9, tzinfo=UTC)
        with transaction(eng) as s:
            plan = make_plan(s, now, code="basic")
            for i in range(n):
                make_subscription(s, now, plan=plan, email=f"c{i}@example.com")
    finally:
        eng.dispose()


def test_lists_page_with_a_cursor_and_say_when_more_exist(env: dict[str, str]) -> None:
    _seed(env, 5)
    first = run(env, "subscription", "list", "--limit", "2", "--json")
    page1 = json.loads(first.stdout)
    assert len(page1) == 2
    assert f"run again with --after {page1[-1]['id']}" in first.stderr
    rest = run(env, "subscription", "list", "--limit", "3", "--after", page1[-1]["id"], "--json")
    page2 = json.loads(rest.stdout)
    assert len(page2) == 3 and not {r["id"] for r in page1} & {r["id"] for r in page2}
    assert "more results" not in rest.stderr  # the last page says nothing
    customers = run(env, "customer", "list", "--limit", "4", "--json")
    assert len(json.loads(customers.stdout)) == 4 and "--after" in customers.stderr
    table = run(env, "customer", "list", "--limit", "4")
    assert "more results: run again with --after cus_" in table.stderr
    typo = run(env, "subscription", "list", "--after", "garbage", "--json", code=2)  # not the whole list again
    assert typo.returncode == 2 and typo.stdout == "" and len(typo.stderr.strip().splitlines()) == 1
    assert "after: not a cursor of this list" in typo.stderr and "sub_" in typo.stderr
    unknown = run(env, "subscription", "list", "--plan", "nope-monthly", "--json", code=3)  # not an empty list
    assert unknown.stdout == "" and unknown.stderr.strip() == "error: --plan: no plan 'nope-monthly'"


def test_run_cycle_progress_shows_total_and_rate(env: dict[str, str]) -> None:
    _seed(env, 30)
    leader, follower = pty.openpty()
    p = subprocess.Popen([*BILLING, "run-cycle", "--at", "2026-01-10T10:00:00Z", "--no-email"], env={
        **env, "TERM": "xterm", "COLUMNS": "160"}, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    out = b""
    while True:
        r, _, _ = select.select([leader], [], [], 60)
        if not r:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert p.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode(errors="replace"))
    assert re.search(r"\b30/30\b", text), text[-2000:]
    assert re.search(r"\d+/s", text)
    assert "/?" not in text



_HEAD_20 = """
import io, os, sys
class Head20(io.TextIOWrapper):  # `| head -20`: once 20 lines went out, the reader is gone
    lines = 0
    def write(self, s):
        if s and Head20.lines >= 20:
            raise BrokenPipeError(32, "Broken pipe")
        Head20.lines += s.count("\\n")
        return super().write(s)
sys.stdout = Head20(open(os.devnull, "wb"))
sys.argv = ["billing", *sys.argv[1:]]
from cli.main import main
main()
"""


@pytest.mark.parametrize("args", [["plan", "create", "--help"], ["run-cycle", "--help"]])
def test_output_piped_into_a_reader_that_quits_is_not_an_internal_error(env: dict[str, str], args: list[str]) -> None:
    """`billing plan create --help | head -20`: head quit while the help was being written and
    the admin saw "error: internal error (BrokenPipeError ...)" plus a traceback in the log."""
    p = subprocess.run([sys.executable, "-c", _HEAD_20, *args], capture_output=True, text=True, env=env,
                       timeout=120)
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 1  # click's quiet exit for a closed stdout, as for `billing --help | head`
