"""API latency under concurrent clients: `billing serve` on 127.0.0.1 only, bounded runs.

Seeds N subscriptions (bench/cycle_data.py), starts `billing serve` as a subprocess and,
for each client count, sends a fixed number of requests per endpoint with httpx
(asyncio, one connection per client), then prints requests/s and p50/p95/p99 latency:

- list:   GET /v1/subscriptions?limit=50&after=<random cursor>
- show:   GET /v1/subscriptions/<random id>            (with its events)
- cancel: GET /cancel/<signed token of a random subscription>   (the customer's page)

    python bench/api_bench.py --database sqlite:////tmp/api-bench.db
    python bench/api_bench.py --database postgresql+psycopg://postgres@127.0.0.1:5432/api_bench --workers 2

Bounded: at most --requests requests per (endpoint, clients) and --max-seconds each;
the server listens on 127.0.0.1 only and is stopped with SIGTERM at the end.

Besides latency it prints the CPU time per request of the server (all its worker processes,
from /proc: a load-independent figure) and of the client (this process), the load average
before each row, and at the end the verdict on the target (p99 < --target-ms at 50 clients
for list and show).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import cycle_data  # noqa: E402
from billing_engine import links  # noqa: E402
from billing_engine.db import make_engine  # noqa: E402
from billing_engine.settings import load_settings  # noqa: E402

TOKEN = "bench-admin-token-" + "x" * 32
SECRET = "bench-secret-key-" + "y" * 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` and its descendants (Linux /proc), else None."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        stats: dict[int, tuple[int, float]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    except OSError:
        return None
    if pid not in stats:
        return None
    family, total, grew = {pid}, 0.0, True
    while grew:
        grew = False
        for p, (ppid, _) in stats.items():
            if ppid in family and p not in family:
                family.add(p)
                grew = True
    for p in family:
        total += stats[p][1]
    return total


class _BackendCpu:
    """CPU seconds of the PostgreSQL backends serving database ``dbname`` (processes titled
    ``postgres: ... <user> <dbname> ...``, read from /proc every 50 ms by a thread): the
    database's share of a request, which the server's column does not count. A backend
    that appears during the run counts from zero (its start-up is a cost of the run); one
    that exits counts up to its last sample. ``sessions`` is the number of backends seen."""

    def __init__(self, dbname: str) -> None:
        import threading

        self.dbname = f" {dbname} "
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.own = 0.0  # the sampler thread's own CPU (taken out of the client's column)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _sample(self, initial: bool) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    title = f.read()
                if not title.startswith(b"postgres:") or self.dbname.encode() not in title:
                    continue
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            pid, cpu = int(entry), (int(fields[11]) + int(fields[12])) / self._tick
            if pid not in self.first:
                self.first[pid] = cpu if initial else 0.0
            self.last[pid] = cpu

    def _loop(self) -> None:
        t0 = time.thread_time()
        while not self._stop.wait(0.05):
            self._sample(False)
        self._sample(False)
        self.own = time.thread_time() - t0

    def __enter__(self) -> _BackendCpu:
        self._sample(True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.last[p] - self.first[p] for p in self.last)


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _raw_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, path: str) -> int:
    """One keep-alive HTTP/1.1 GET on an open connection; returns the status (body read and dropped)."""
    writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + head)
    await writer.drain()
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length, chunked = 0, False
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        await reader.readexactly(length)
        return status
    while (size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)) != 0:
        await reader.readexactly(size + 2)
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass
    return status


async def _run_raw(base: str, paths: list[str], clients: int, requests: int, max_seconds: float,
                   headers: dict[str, str]) -> tuple[list[float], int, float]:
    """Like :func:`_run` with a minimal asyncio HTTP/1.1 client (one keep-alive connection per
    client): ~0.1 ms of CPU per request instead of httpx's 1.5-5 ms, which on a 2-core machine
    would otherwise take the server's CPU."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    host, _, port = base.removeprefix("http://").partition(":")
    head = (f"Host: {host}:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    deadline = time.monotonic() + max_seconds

    async def worker() -> None:
        nonlocal sent, errors
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while sent < requests and time.monotonic() < deadline:
            sent += 1
            path = random.choice(paths)
            t = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection(host, int(port))
                status = await asyncio.wait_for(_raw_get(*conn, head, path), 30)
                if status >= 400:
                    errors += 1
            except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
                errors += 1
                if conn is not None:
                    conn[1].close()
                conn = None
            latencies.append(time.perf_counter() - t)
        if conn is not None:
            conn[1].close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors, time.perf_counter() - started


async def _run(base: str, paths: list[str], clients: int, requests: int, max_seconds: float,
               headers: dict[str, str]) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    deadline = time.monotonic() + max_seconds
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as client:
        async def worker() -> None:
            nonlocal sent, errors
            while sent < requests and time.monotonic() < deadline:
                sent += 1
                path = random.choice(paths)
                t = time.perf_counter()
                try:
                    r = await client.get(path)
                    if r.status_code >= 400:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", required=True, help="SQLAlchemy URL; the database is RESET and seeded")
    ap.add_argument("--subscriptions", type=int, default=5000)
    ap.add_argument("--clients", default="10,50,200")
    ap.add_argument("--requests", type=int, default=1500, help="per endpoint and client count")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="per endpoint and client count")
    ap.add_argument("--workers", type=int, default=2, help="billing serve --workers (its default on 2+ cores)")
    ap.add_argument("--endpoints", default="list,show,cancel")
    ap.add_argument("--target-ms", type=float, default=250.0, help="the p99 target at 50 clients (list, show)")
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw",
                    help="raw: a minimal asyncio HTTP/1.1 client (default; cheap, so the server gets the CPU); "
                    "httpx: httpx.AsyncClient (the figures before 2026-12-06 16:00 used it)")
    args = ap.parse_args()

    cycle_data.reset(args.database)
    cycle_data.generate(args.database, args.subscriptions)
    engine = make_engine(args.database)
    with engine.connect() as c:
        ids = [r[0] for r in c.execute(text("SELECT id FROM subscriptions ORDER BY id"))]
    engine.dispose()
    settings = load_settings(env="development", secret_key=SECRET, public_base_url="http://127.0.0.1")
    now = datetime.now(UTC)
    sample = random.sample(ids, min(len(ids), 500))
    paths = {
        "list": [f"/v1/subscriptions?limit=50&after={random.choice(ids[:-50])}" for _ in range(200)],
        "show": [f"/v1/subscriptions/{i}" for i in sample],
        "cancel": [links.make_cancel_url(settings, i, now).removeprefix("http://127.0.0.1") for i in sample],
    }

    port = _free_port()
    env = {**os.environ, "BILLING_DATABASE_URL": args.database, "BILLING_ADMIN_TOKENS": TOKEN,
           "BILLING_SECRET_KEY": SECRET, "BILLING_ENV": "development", "BILLING_GATEWAY": "fake",
           "BILLING_MAIL_TRANSPORT": "none", "BILLING_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", str(args.workers), "--log-level", "warning"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise SystemExit("server did not start")
        backend = "postgresql" if args.database.startswith("postgres") else "sqlite"
        dbname = make_url(args.database).database or ""
        print(f"# {backend}, {len(ids)} subscriptions, billing serve --workers {args.workers}, "
              f"{os.cpu_count()} CPUs (shared), {args.client} client")
        print(f"{'endpoint':8} {'clients':>7} {'requests':>8} {'errors':>6} {'rps':>8} "
              f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'srv cpu ms/req':>14} {'client ms/req':>13} {'load':>5}"
              + (f" {'db cpu ms/req':>13} {'db conns':>8}" if backend == "postgresql" else ""))
        p99s: dict[tuple[str, int], float] = {}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for clients in [int(c) for c in args.clients.split(",")]:
            for name in args.endpoints.split(","):
                run = _run_raw if args.client == "raw" else _run
                asyncio.run(run(base, paths[name], clients, min(clients * 2, 100), 10, headers))  # warm-up
                load = _load()
                db = _BackendCpu(dbname) if backend == "postgresql" else None
                if db is not None:
                    db.__enter__()
                cpu0, client0 = _cpu_seconds(server.pid), time.process_time()
                lat, errors, elapsed = asyncio.run(run(base, paths[name], clients, args.requests,
                                                        args.max_seconds, headers))
                cpu1, client1 = _cpu_seconds(server.pid), time.process_time()
                if db is not None:
                    db.__exit__()
                    client1 -= db.own
                ms = [x * 1000 for x in lat]
                n = max(1, len(lat))
                srv = f"{(cpu1 - cpu0) * 1000 / n:.2f}" if cpu0 is not None and cpu1 is not None else "n/a"
                p99s[(name, clients)] = _percentile(ms, 99) + (1e9 if errors else 0)
                print(f"{name:8} {clients:>7} {len(lat):>8} {errors:>6} {len(lat) / elapsed:>8.0f} "
                      f"{statistics.median(ms):>8.1f} {_percentile(ms, 95):>8.1f} {_percentile(ms, 99):>8.1f} "
                      f"{srv:>14} {(client1 - client0) * 1000 / n:>13.2f} {load:>5}"
                      + (f" {db.seconds * 1000 / n:>13.2f} {len(db.last):>8}" if db is not None else ""), flush=True)
        judged = {k: v for k, v in p99s.items() if k[1] == 50 and k[0] in ("list", "show")}
        if judged:
            met = all(v < args.target_ms for v in judged.values())
            print(f"# target p99 < {args.target_ms:.0f} ms at 50 clients (list, show): "
                  f"{'MET' if met else 'NOT MET'} ("
                  + ", ".join(f"{k[0]} {v:.0f} ms" if v < 1e9 else f"{k[0]} had errors" for k, v in judged.items())
                  + f"); load average now {_load()}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
        print(f"# billing serve exited {code} after SIGTERM")


if __name__ == "__main__":
    main()
