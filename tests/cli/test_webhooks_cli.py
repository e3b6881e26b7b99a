"""`billing events list`, `billing webhook-endpoint ...`, `billing webhook deliver|resend` and
the delivery at the end of `billing run-cycle`: real process, real SQLite file, a real
receiver on 127.0.0.1 that verifies signatures with standardwebhooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.inproc import invoke
from tests.webhooks_out.receiver import Receiver

BILLING = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]
AT = "2026-01-10T09:00:00Z"


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PYTHONPATH": str(ROOT),
           "BILLING_MAIL_TRANSPORT": "none"}
    env.pop("BILLING_GATEWAY", None)

    def _run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([*BILLING, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        if ok:
            assert p.returncode == 0, p.stderr
        return p

    def _setup(*args: str) -> subprocess.CompletedProcess[str]:  # set-up, in this process (tests/cli/inproc.py)
        p = invoke(env, tmp_path, *args)
        assert p.returncode == 0, p.stderr
        return p

    _run.setup = _setup  # type: ignore[attr-defined]
    return _run


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _json(p: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(p.stdout)


def _customers(run: Any, n: int) -> list[str]:
    return [_json(run.setup("customer", "create", "--email", f"c{i}@example.com", "--at", AT, "--json"))["id"]
            for i in range(n)]


def test_register_an_endpoint_and_receive_a_renewal_after_run_cycle(run: Any, receiver: Receiver,
                                                                    tmp_path: Path) -> None:
    ep = _json(run("webhook-endpoint", "create", "--url", receiver.url, "--events", "subscription.*,invoice.paid",
                   "--json"))
    assert ep["secret"].startswith("whsec_") and "subscription.canceled" in ep["events"]
    receiver.secrets.append(ep["secret"])
    (tmp_path / "terms.txt").write_text("We charge 7.00 USD monthly until you cancel.")
    run.setup("plan", "create", "--code", "basic", "--name", "Basic", "--amount", "7.00", "--currency", "usd",
              "--at", AT)
    cust = _json(run.setup("customer", "create", "--email", "ada@example.com", "--at", AT, "--json"))
    pm = _json(run.setup("payment-method", "add", cust["id"], "--token", "pm_card_visa", "--consent-ip", "203.0.113.9",
                   "--consent-user-agent", "Mozilla/5.0", "--terms-version", "v1", "--terms-file", "terms.txt",
                   "--consent-amount", "7.00", "--consent-currency", "USD", "--at", AT, "--json"))
    run.setup("subscribe", "--customer", cust["id"], "--plan", "basic", "--payment-method", pm["id"], "--at", AT)
    summary = _json(run("run-cycle", "--at", AT, "--json"))
    assert summary["webhooks"]["succeeded"] == 3
    assert receiver.types() == ["subscription.created", "invoice.paid", "subscription.activated"]
    assert receiver.received[1]["data"]["amount_minor"] == 700
    listed = _json(run("webhook-endpoint", "list", "--json"))
    assert [e["id"] for e in listed] == [ep["id"]] and "secret" not in listed[0]
    # disable: nothing is sent; enable: what queued meanwhile goes out
    run("webhook-endpoint", "disable", ep["id"])
    run("subscription", "cancel", _sub_id(run), "--reason", "too_expensive", "--at", AT)
    assert _json(run("webhook", "deliver", "--json"))["succeeded"] == 0
    warn = run("webhook-endpoint", "list")
    assert "disabled" in warn.stderr
    run("webhook-endpoint", "enable", ep["id"])
    assert _json(run("webhooks", "deliver", "--json"))["succeeded"] == 1
    assert receiver.types()[-1] == "subscription.canceled"
    assert receiver.received[-1]["data"]["reason"] == "too_expensive"


def _sub_id(run: Any) -> str:
    out = _json(run("subscription", "list", "--json"))
    rows = out["data"] if isinstance(out, dict) else out
    return str(rows[0]["id"])


def test_events_list_pages_with_a_cursor_and_says_when_there_is_more(run: Any) -> None:
    ids = _customers(run, 5)
    page1 = _json(run("events", "list", "--type", "customer.created", "--limit", "2", "--json"))
    assert [e["data"]["customer_id"] for e in page1["data"]] == ids[:2] and page1["has_more"]
    page2 = _json(run("events", "list", "--type", "customer.created", "--limit", "2", "--after",
                      page1["next_cursor"], "--json"))
    assert [e["data"]["customer_id"] for e in page2["data"]] == ids[2:4] and page2["has_more"]
    table = run("events", "list", "--limit", "2")
    assert f"--after {page1['next_cursor']}" in table.stdout
    last = run("events", "list", "--after", page2["next_cursor"])
    assert "no more" in last.stdout
    assert _json(run("events", "list", "--created-from", "2026-01-11T00:00:00Z", "--json"))["data"] == []
    bad = run("events", "list", "--type", "subscription.exploded", ok=False)
    assert bad.returncode == 2 and "unknown event type" in bad.stderr and "Traceback" not in bad.stderr


def test_resend_one_event_and_a_time_range(run: Any, receiver: Receiver) -> None:
    _customers(run, 2)  # before the endpoint existed
    ep = _json(run("webhook-endpoint", "create", "--url", receiver.url, "--json"))
    receiver.secrets.append(ep["secret"])
    assert _json(run("webhook", "deliver", "--json"))["succeeded"] == 0
    first = _json(run("events", "list", "--json"))["data"][0]["id"]
    assert _json(run("webhook", "resend", first, "--json"))["queued"] == 1
    assert [p["id"] for p in receiver.received] == [first]
    out = _json(run("webhook", "resend", "--from", "2026-01-01T00:00:00Z", "--to", "2026-02-01T00:00:00Z", "--json"))
    assert out["queued"] == 2 and out["delivery"]["succeeded"] == 2
    assert len(receiver.received) == 3
    bad = run("webhook", "resend", ok=False)
    assert bad.returncode == 2 and "EVENT_ID or --from" in bad.stderr
    missing = run("webhook", "resend", "evt_999999", ok=False)
    assert missing.returncode == 3


def test_rotate_secret_prints_the_new_one_and_the_grace(run: Any, receiver: Receiver) -> None:
    ep = _json(run("webhook-endpoint", "create", "--url", receiver.url, "--json"))
    rotated = _json(run("webhook-endpoint", "rotate-secret", ep["id"], "--grace-hours", "2", "--json"))
    assert rotated["secret"] != ep["secret"] and rotated["previous_secret_expires_at"]
    receiver.secrets.append(ep["secret"])  # the merchant has not deployed the new one yet
    _customers(run, 1)
    assert _json(run("webhook", "deliver", "--json"))["succeeded"] == 1 and receiver.rejected == 0


def test_bad_urls_are_one_line_errors(run: Any) -> None:
    p = run("webhook-endpoint", "create", "--url", "not a url", ok=False)
    assert p.returncode == 2 and "url" in p.stderr and "Traceback" not in p.stderr
    p = run("webhook-endpoint", "disable", "we_nope", ok=False)
    assert p.returncode == 3


def test_lists_say_when_more_exist_and_filter_by_time(run: Any) -> None:
    ids = _customers(run, 3)
    p = run("customer", "list", "--limit", "2")
    assert f"--after {ids[1]}" in p.stderr  # the next-page hint goes to stderr (cli.paging.one_page)
    p = run("customer", "list", "--limit", "2", "--json")
    assert [c["id"] for c in json.loads(p.stdout)] == ids[:2] and f"--after {ids[1]}" in p.stderr
    rest = run("customer", "list", "--limit", "2", "--after", ids[1], "--json")
    assert [c["id"] for c in json.loads(rest.stdout)] == ids[2:] and "more" not in rest.stderr
    assert json.loads(run("customer", "list", "--created-from", "2026-01-11T00:00:00Z", "--json").stdout) == []
    assert len(json.loads(run("customer", "list", "--updated-to", "2026-01-11T00:00:00Z", "--json").stdout)) == 3
    bad = run("subscription", "list", "--updated-from", "2026-01-11T00:00:00Z", "--updated-to",
              "2026-01-10T00:00:00Z", ok=False)
    assert bad.returncode == 2 and "--updated-to" in bad.stderr
