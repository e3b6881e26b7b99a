"""CPU per request of the list and show endpoints, in-process: the ASGI app called directly
(no HTTP, no client, no neighbours' noise in the figure), sequentially.

    python bench/api_cpu.py --database sqlite:////tmp/list-api.db --endpoint list --requests 1500

Uses a database seeded by bench/api_bench.py (it reads the subscription ids). Prints the
median / min / mean / p99 of ``time.process_time`` per request and the garbage collector's
pauses during the run (``--freeze``: ``gc.freeze()`` after the warm-up, as ``billing serve``
does).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-admin-token-" + "x" * 32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", required=True, help="SQLAlchemy URL of a database seeded by api_bench.py")
    ap.add_argument("--endpoint", choices=("list", "show"), default="list")
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--freeze", action="store_true", help="gc.freeze() after the warm-up")
    args = ap.parse_args()
    os.environ.update(BILLING_DATABASE_URL=args.database, BILLING_ADMIN_TOKENS=TOKEN,
                      BILLING_SECRET_KEY="bench-secret-key-" + "y" * 32, BILLING_ENV="development",
                      BILLING_GATEWAY="fake", BILLING_MAIL_TRANSPORT="none")
    from sqlalchemy import text

    from api.app import create_app
    from billing_engine.db import make_engine

    engine = make_engine(args.database)
    with engine.connect() as c:
        ids = [r[0] for r in c.execute(text("SELECT id FROM subscriptions ORDER BY id"))]
    engine.dispose()
    app = create_app()
    rnd = random.Random(1)
    if args.endpoint == "list":
        paths = [("/v1/subscriptions", f"limit=50&after={rnd.choice(ids[:-50])}") for _ in range(200)]
    else:
        paths = [(f"/v1/subscriptions/{i}", "") for i in rnd.sample(ids, min(200, len(ids)))]
    headers = [(b"authorization", f"Bearer {TOKEN}".encode()), (b"host", b"127.0.0.1")]

    async def one(path: str, query: str) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                 "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
                 "state": {}}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    async def run() -> None:
        for p in paths[:20]:
            await one(*p)
        if args.freeze:
            gc.collect()
            gc.freeze()
        pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        started = [0.0]

        def watch(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                pauses[info["generation"]].append(time.perf_counter() - started[0])

        gc.callbacks.append(watch)
        times = []
        for i in range(args.requests):
            t = time.process_time()
            await one(*paths[i % len(paths)])
            times.append(time.process_time() - t)
        gc.callbacks.remove(watch)
        times.sort()
        n = len(times)
        print(f"{args.endpoint}: median {times[n // 2] * 1000:.2f} ms, min {times[0] * 1000:.2f} ms, "
              f"mean {sum(times) / n * 1000:.2f} ms, p99 {times[int(n * 0.99)] * 1000:.2f} ms CPU/request "
              f"(n={n}; load average {os.getloadavg()[0]:.1f})")
        for gen, values in pauses.items():
            if values:
                print(f"  gc generation {gen}: {len(values)} collections, longest {max(values) * 1000:.1f} ms, "
                      f"total {sum(values) * 1000:.0f} ms")

    asyncio.run(run())


if __name__ == "__main__":
    main()
