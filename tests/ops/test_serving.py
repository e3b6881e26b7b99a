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


# `billing serve` as `python -m cli.main`, or with httptools hidden (uvicorn's h11 parser must serve)
SERVE = {"httptools": [sys.executable, "-m", "cli.main"],
         "h11": [sys.executable, "-c", "import runpy, sys; sys.modules['httptools'] = None; "
                 "runpy.run_module('cli.main', run_name='__main__', alter_sys=True)"]}
NO_HTTPTOOLS = "httptools is not installed: serving with uvicorn's pure-Python h11 parser"


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    parser = getattr(request, "param", "httptools")
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "PYTHONPATH": str(ROOT),
           "BILLING_ENV": "development", "BILLING_ADMIN_TOKENS": TOKEN, "BILLING_MAIL_TRANSPORT": "none",
           "BILLING_FAKE_LATENCY_MS": "1500"}
    env.pop("BILLING_GATEWAY", None)
    _seed(env)
    port = _free_port()
    proc = subprocess.Popen([*SERVE[parser], "serve", "--port", str(port), "--read-timeout", "1",
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


@pytest.mark.parametrize("server", ["httptools", "h11"], indirect=True)
def test_a_client_trickling_its_headers_is_cut_off(server, request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    """Also without httptools installed: uvicorn's h11 parser serves, with the same deadline."""
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
    r = httpx.get(f"http://127.0.0.1:{port}/v1/subscriptions?limit=1", headers={"Authorization": f"Bearer {TOKEN}"},
                  timeout=10)
    assert r.status_code == 200 and len(r.json()["data"]) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    warned = NO_HTTPTOOLS in proc.communicate()[1]
    assert warned == (request.node.callspec.params["server"] == "h11")


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
    log = tmp_path / "serve.log"  # a file, not a pipe nobody reads while waiting (a full pipe blocks the server)
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "2"],
                                env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err, text=True)
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
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"no exit 60 s after SIGTERM; its log:\n{log.read_text()[-4000:]}")
        assert code == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and SO_REUSEPORT workers: Linux")
def test_sigterm_is_acted_on_at_once_while_a_worker_does_not_answer_its_health_ping(tmp_path: Path) -> None:
    """A worker that does not answer the supervisor's ping (here: SIGSTOPped; in life a worker
    stuck starting or busy) held up SIGTERM for the whole health-check timeout (60 s). Now the
    supervisor stops the other workers within seconds, and exits 0 once the silent one goes."""
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "PYTHONPATH": str(ROOT),
           "BILLING_ENV": "development", "BILLING_ADMIN_TOKENS": TOKEN}
    env.pop("BILLING_GATEWAY", None)
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "2"],
                                env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    stopped: int | None = None
    try:
        deadline = time.monotonic() + 120
        while True:
            workers = [int(p) for p in os.listdir("/proc")
                       if p.isdigit() and _ppid(int(p)) == proc.pid and _listening(int(p), port)]
            if len(workers) == 2:
                break
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-4000:]
            time.sleep(0.2)
        stopped, running = workers
        os.kill(stopped, signal.SIGSTOP)
        time.sleep(2.5)  # the supervisor's loop (every 0.5 s) is now waiting for the stopped worker's answer
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(running) and time.monotonic() < deadline:
            time.sleep(0.1)
        still = _alive(running)
        os.kill(stopped, signal.SIGCONT)
        stopped = None
        assert not still, f"the answering worker still runs 10 s after SIGTERM; log:\n{log.read_text()[-4000:]}"
        assert proc.wait(timeout=60) == 0, log.read_text()[-4000:]
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


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


def _established_per_process(pids: list[int], port: int) -> dict[int, int]:
    """How many ESTABLISHED server-side TCP connections on ``port`` each of ``pids`` holds (Linux /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    inodes.add(fields[9])
    counts = {}
    for pid in pids:
        fds = os.listdir(f"/proc/{pid}/fd")
        counts[pid] = sum(1 for fd in fds if os.readlink(f"/proc/{pid}/fd/{fd}").removeprefix("socket:[")
                          .removesuffix("]") in inodes)
    return counts


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads connections on Linux only")
def test_keep_alive_connections_are_spread_over_the_workers(tmp_path: Path) -> None:
    """60 connections opened together: each of 2 workers gets at least 12 (one socket per worker,
    SO_REUSEPORT; with one shared socket the first worker to wake took nearly all of them, e.g. 49/1)."""
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "PYTHONPATH": str(ROOT),
           "BILLING_ENV": "development", "BILLING_ADMIN_TOKENS": TOKEN}
    env.pop("BILLING_GATEWAY", None)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "2"],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conns: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 120
        while True:  # both workers up: each answers on its own socket
            workers = [int(p) for p in os.listdir("/proc")  # (not the multiprocessing resource tracker)
                       if p.isdigit() and _ppid(int(p)) == proc.pid and _listening(int(p), port)]
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                ok = False
            if ok and len(workers) == 2:
                break
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        for _ in range(60):
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(c)
        for c in conns:
            assert c.recv(1024).startswith(b"HTTP/1.1 200")  # accepted and answered, kept alive
        counts = _established_per_process(workers, port)
        assert sum(counts.values()) == 60
        assert min(counts.values()) >= 12, counts
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        for c in conns:
            c.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _listening(pid: int, port: int) -> bool:
    """Whether ``pid`` holds a socket LISTENing on ``port``."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").removeprefix("socket:[").removesuffix("]") in inodes
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


@pytest.mark.parametrize("problem", ["stripe without a key", "database unreachable"])
def test_a_multi_worker_server_that_cannot_start_says_why_once_and_exits_78(tmp_path: Path, problem: str) -> None:
    """As with one worker: one line and exit 78. Before, each of the 2 workers died at start-up
    with a traceback and the supervisor started a new one every second, forever."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BILLING_ENV": "development", "BILLING_ADMIN_TOKENS": TOKEN,
           "BILLING_MAIL_TRANSPORT": "none", "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    env.pop("BILLING_STRIPE_API_KEY", None)
    if problem == "stripe without a key":
        env["BILLING_GATEWAY"], expected = "stripe", "error: BILLING_STRIPE_API_KEY is required"
    else:
        env["BILLING_GATEWAY"], expected = "fake", "error: cannot open the database"
        env["BILLING_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/nothing_listens"
    try:
        done = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--port", str(_free_port()), "--workers", "2"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"still running after 60 s: {str(exc.stderr)[-2000:]}")
    assert done.returncode == 78, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(expected), done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_a_worker_whose_app_cannot_be_built_exits_as_a_startup_failure(tmp_path: Path) -> None:
    """If a worker still cannot build its app (the database went away after the supervisor's
    check), it exits with uvicorn's STARTUP_FAILURE after one line: the supervisor then
    stops, and `billing serve` exits 78, instead of replacing it every second."""
    from uvicorn.config import STARTUP_FAILURE

    env = {**os.environ, "PYTHONPATH": str(ROOT), "BILLING_ENV": "development", "BILLING_ADMIN_TOKENS": TOKEN,
           "BILLING_MAIL_TRANSPORT": "none", "BILLING_GATEWAY": "stripe",
           "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    env.pop("BILLING_STRIPE_API_KEY", None)
    done = subprocess.run([sys.executable, "-c", "from api.serving import worker_app; worker_app()"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == STARTUP_FAILURE, done.stderr[-2000:]
    assert "a worker could not start: BILLING_STRIPE_API_KEY is required" in done.stderr
    assert "Traceback" not in done.stderr
