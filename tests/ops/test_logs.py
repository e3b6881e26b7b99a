"""Structured logs: JSON off a terminal, the charge path's identifiers on every line, and
no secret or capability token in any line (grepped from real captured output)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from billing_engine import logs
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.settings import load_settings
from tests.factories import make_plan, make_subscription

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 10, 9, tzinfo=UTC)


def _capture(level: str = "debug") -> io.StringIO:
    buf = io.StringIO()  # not a terminal: JSON
    logs.configure(level=level, fmt="auto", secrets=[], stream=buf)
    return buf


def _reset() -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == logs.HANDLER_NAME]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def test_run_cycle_logs_json_with_run_worker_subscription_and_attempt_ids(engine) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, NOW)
        ok = make_subscription(s, NOW, plan=plan, email="a@example.com").id
        bad = make_subscription(s, NOW, plan=plan, email="b@example.com",
                                token="pm_card_chargeDeclinedInsufficientFunds").id
    buf = _capture()
    try:
        summary = run_cycle(engine, FakeGateway(), now=NOW, settings=load_settings(env="test"))
    finally:
        _reset()
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]  # every line is JSON
    charge_path = [ln for ln in lines if ln["logger"] == "billing_engine.cycle"]
    assert charge_path and all(ln["run_id"] == summary.run_id for ln in charge_path)
    assert all(ln["worker_id"] for ln in charge_path)
    settled = {ln["subscription_id"]: ln for ln in charge_path if ln["event"].startswith("run-cycle: renewal settled")}
    assert set(settled) == {ok, bad}
    assert settled[ok]["outcome"] == "succeeded" and settled[bad]["outcome"] == "declined_soft"
    assert all(ln["attempt_id"].startswith("pay_") for ln in settled.values())
    assert all(ln["level"] == "debug" for ln in settled.values())  # per renewal: DEBUG only
    info = [ln for ln in charge_path if ln["level"] == "info"]
    assert [ln["event"] for ln in info] == ["run-cycle: started", "run-cycle: batch settled", "run-cycle: finished"]
    assert info[1]["outcomes"] == {"succeeded": 1, "declined_soft": 1}
    assert summary.declines_by_code == {"insufficient_funds": 1}


def test_info_level_has_no_line_per_renewal(engine) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, NOW)
        for i in range(5):
            make_subscription(s, NOW, plan=plan, email=f"c{i}@example.com")
    buf = _capture("info")
    try:
        run_cycle(engine, FakeGateway(), now=NOW, settings=load_settings(env="test"), batch_size=2)
    finally:
        _reset()
    events = [json.loads(line)["event"] for line in buf.getvalue().splitlines()]
    assert events.count("run-cycle: batch settled") == 3
    assert not any("renewal settled" in e for e in events)


def test_redaction_masks_secret_shapes_and_configured_secrets() -> None:
    buf = io.StringIO()
    logs.configure(level="info", fmt="json", secrets=["configured-admin-token-abcdefghijklmnop"], stream=buf)
    log = logging.getLogger("billing.test")
    try:
        log.info("GET /cancel/eyJzdWIiOiJzdWJfMSJ9.abc.def/undo?token=s3cr3t with Bearer abc.def.ghi")
        log.info("key sk_live_51Habcdef and whsec_abcDEF123 card pm_card_visa tok_visa pm_1NabcXYZ",
                 extra={"admin_token": "x", "payment_method": "pm_01JH8Z7Q2W3E4R5T6Y7V8K9M0P",
                        "note": "configured-admin-token-abcdefghijklmnop"})
    finally:
        _reset()
    text = buf.getvalue()
    for secret in ("eyJzdWIiOiJzdWJfMSJ9", "s3cr3t", "abc.def.ghi", "sk_live_51Habcdef", "whsec_abcDEF123",
                   "pm_card_visa", "tok_visa", "pm_1NabcXYZ", "configured-admin-token"):
        assert secret not in text, secret
    second = json.loads(text.splitlines()[1])
    assert second["admin_token"] == logs.MASK
    assert second["payment_method"] == "pm_01JH8Z7Q2W3E4R5T6Y7V8K9M0P"  # our own ids stay readable


def test_no_secret_or_capability_token_in_the_logs_of_a_real_cli_session(tmp_path: Path) -> None:
    admin = "ops:" + "A" * 40
    secrets = {"admin": "A" * 40, "signing": "S" * 40, "stripe": "sk_test_" + "K" * 30, "metrics": "M" * 40,
               "card": "pm_card_visa"}
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "PYTHONPATH": str(ROOT),
           "BILLING_ENV": "development", "BILLING_ADMIN_TOKENS": admin, "BILLING_SECRET_KEY": secrets["signing"],
           "BILLING_STRIPE_API_KEY": secrets["stripe"], "BILLING_METRICS_TOKEN": secrets["metrics"],
           "BILLING_GATEWAY": "fake", "BILLING_LOG_LEVEL": "debug", "BILLING_LOG_FORMAT": "json",
           "BILLING_MAIL_TRANSPORT": "file", "BILLING_MAIL_DIR": str(tmp_path / "mail")}
    (tmp_path / "terms.txt").write_text("7.00 USD monthly until you cancel.")
    at = "2026-01-10T09:00:00Z"
    stderr: list[str] = []

    def billing(*args: str) -> dict:  # type: ignore[type-arg]
        p = subprocess.run([sys.executable, "-m", "cli.main", *args, "--json"], capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=120)
        assert p.returncode == 0, p.stderr
        stderr.append(p.stderr)
        return json.loads(p.stdout)  # type: ignore[no-any-return]

    billing("plan", "create", "--code", "basic", "--name", "Basic", "--amount", "7.00", "--currency", "USD",
            "--at", at)
    cust = billing("customer", "create", "--email", "ada@example.com", "--at", at)
    pm = billing("payment-method", "add", cust["id"], "--token", secrets["card"], "--consent-ip", "203.0.113.9",
                 "--consent-user-agent", "Mozilla/5.0", "--terms-version", "v1", "--terms-file", "terms.txt",
                 "--consent-amount", "7.00", "--consent-currency", "USD", "--at", at)
    sub = billing("subscribe", "--customer", cust["id"], "--plan", "basic", "--payment-method", pm["id"],
                  "--defer-first-charge", "--at", at)
    summary = billing("run-cycle", "--at", at)
    link = billing("cancel-link", sub["id"], "--at", at)
    assert summary["succeeded"] == 1
    text = "".join(stderr)
    run_lines = [json.loads(ln) for ln in text.splitlines() if '"run-cycle: ' in ln]
    assert run_lines and all(ln["run_id"] == summary["run_id"] for ln in run_lines)
    token = link["url"].rstrip("/").rsplit("/", 1)[-1]
    for name, value in {**secrets, "cancel link": token}.items():
        assert value not in text, f"{name} leaked into the logs"


def test_a_scheduled_run_cycle_log_is_json_lines_warnings_included(tmp_path: Path) -> None:
    """The cron line sends stderr to a file: the production warnings (seller settings not
    set, metrics not written) were plain "warning: ..." lines in that JSON log, so
    `jq . run-cycle.log` stopped at the first one; and a missing textfile directory was
    named by the temporary file the atomic write tried ("billing.prom.4711.1407...")."""
    strong = "s3cr3t-" + "x" * 40
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(PYTHONPATH=str(ROOT), BILLING_ENV="production", BILLING_GATEWAY="fake", BILLING_SECRET_KEY=strong,
               BILLING_DATABASE_URL=f"sqlite:///{tmp_path / 'p.db'}", BILLING_MAIL_TRANSPORT="none")
    cli = [sys.executable, "-m", "cli.main"]
    assert subprocess.run([*cli, "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, timeout=120).returncode == 0
    missing = tmp_path / "node_exporter" / "textfile"
    p = subprocess.run([*cli, "run-cycle", "--metrics-textfile", str(missing / "billing.prom")], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stderr.splitlines()]  # every line is JSON
    warnings = [e["event"] for e in lines if e["level"] == "warning"]
    assert any(w.startswith("warning: BILLING_COMPANY_NAME is not set") for w in warnings), warnings
    [metrics] = [w for w in warnings if "--metrics-textfile" in w]
    assert f"directory {missing} does not exist" in metrics and "billing.prom." not in metrics
    assert [e["event"] for e in lines if e["event"].startswith("run-cycle: ")] == ["run-cycle: started",
                                                                                  "run-cycle: finished"]


def test_uvicorn_colour_codes_stay_out_of_the_json_lines() -> None:
    # as `billing serve` configures them (cli/serve.log_config): propagating to the root's JSON
    # handler -- a uvicorn.Server started in-process by an earlier test of this worker (the
    # browser tests) leaves uvicorn's own config behind: "uvicorn" not propagating, a level set
    saved = [(lg, lg.propagate, lg.level, lg.disabled) for lg in map(logging.getLogger, ("uvicorn", "uvicorn.error"))]
    for lg, *_ in saved:
        lg.propagate, lg.disabled = True, False
        lg.setLevel(logging.NOTSET)
    buf = _capture("info")
    try:
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 4711,
                                                extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"})
    finally:
        _reset()
        for lg, propagate, level, disabled in saved:
            lg.propagate, lg.disabled = propagate, disabled
            lg.setLevel(level)
    [line] = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert line["event"] == "Started server process [4711]" and "color_message" not in line
    assert "\x1b" not in buf.getvalue() and "\\u001b" not in buf.getvalue()
