"""`billing serve` under hostile conditions: a client trickling its request is cut off
after --read-timeout; SIGTERM lets an in-flight request finish and exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "T" * 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed(env: dict[str, str]) -> None:
    code = """
from datetime import datetime, UTC
from billing_engine.db import get_engine, transaction
from tests.factories import make_plan, make_subscription
now = datetime(2026, 1, 10, 9, tzinfo=UTC)
with transaction(get_engine()) as s:
    make_subscription(s, now, plan=make_plan(s, now))
"""
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120, cwd=ROOT)


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "PYTHONPATH": str(ROOT),
           "BILLING_ENV": "development", "BILLING_ADMIN_TOKENS": TOKEN, "BILLING_MAIL_TRANSPORT": "none",
           "BILLING_FAKE_LATENCY_MS": "1500"}
    env.pop("BILLING_GATEWAY", None)
    _seed(env)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--read-timeout", "1",
                             "--log-level", "info"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"server did not start: {proc.communicate()[1]}")
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_a_client_trickling_its_headers_is_cut_off(server) -> None:  # type: ignore[no-untyped-def]
    proc, port = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ...and never the blank line
        started = time.monotonic()
        for _ in range(20):
            try:
                slow.sendall(b"X")
            except OSError:
                break
            time.sleep(0.2)
            slow.settimeout(0.01)
            try:
                if slow.recv(1024) == b"":
                    break
            except TimeoutError:
                pass
        closed_after = time.monotonic() - started
    assert closed_after < 3.5  # cut off after --read-timeout 1 (not kept while it trickles)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as body:
        body.sendall(b"POST /v1/plans HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nAuthorization: Bearer "
                     + TOKEN.encode() + b"\r\n\r\n{")
        body.settimeout(5)
        t = time.monotonic()
        data = body.recv(1024)
        assert time.monotonic() - t < 4 and not data.startswith(b"HTTP/1.1 2")
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200  # others still served


def test_sigterm_drains_in_flight_requests_and_exits_0(server) -> None:  # type: ignore[no-untyped-def]
    proc, port = server
    answers: list[int] = []

    def slow_request() -> None:  # the run-cycle waits 1.5 s for the (fake) gateway
        r = httpx.post(f"http://127.0.0.1:{port}/v1/run-cycle", json={"at": "2026-01-10T10:00:00Z"},
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        answers.append(r.status_code)

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.7)
    proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert proc.wait(timeout=30) == 0
    assert answers == [200]


def test_sigterm_to_a_multi_worker_server_exits_0(tmp_path: Path) -> None:
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "PYTHONPATH": str(ROOT),
           "BILLING_ENV": "development", "BILLING_ADMIN_TOKENS": TOKEN}
    env.pop("BILLING_GATEWAY", None)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "2"],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """`kill -9` of a `--workers 2` server: its workers go too, instead of holding the port."""
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "PYTHONPATH": str(ROOT),
           "BILLING_ENV": "development", "BILLING_ADMIN_TOKENS": TOKEN}
    env.pop("BILLING_GATEWAY", None)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "2"],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not start")
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            except httpx.TransportError:
                break  # nobody listens any more
            time.sleep(0.2)
        else:
            pytest.fail("the workers still answer 30 s after their supervisor was killed")
    finally:
        if proc.poll() is None:
            proc.kill()
