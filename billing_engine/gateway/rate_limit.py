"""A client-side token bucket, so a burst of renewals stays under Stripe's rate limit.

Stripe allows about 25 requests/s in test mode and 100/s live (per account). One
bucket throttles one process; share a bucket between gateways in the same process.
Several worker processes each need a proportionally smaller rate (or rely on the
429 retries, which are always safe with an idempotency key).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

STRIPE_TEST_RATE = 25.0
STRIPE_LIVE_RATE = 100.0


def default_rate(api_key: str) -> float:
    """Stripe's documented limit for this kind of key (test or live)."""
    return STRIPE_TEST_RATE if api_key.startswith(("sk_test_", "rk_test_")) else STRIPE_LIVE_RATE


class TokenBucket:
    """``rate`` operations per second, at most ``burst`` at once. Thread-safe.

    :meth:`acquire` reserves a slot and sleeps until it is due, so concurrent callers
    queue fairly instead of spinning. ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0 operations per second")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._last = clock()

    def acquire(self) -> float:
        """Take one token, sleeping if needed. Returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class SharedTokenBucket:
    """``rate`` calls/s shared by every worker on every machine, through the database.

    Tokens live in one ``rate_buckets`` row. A worker reserves a small chunk with one
    ``UPDATE ... RETURNING`` (refill by elapsed wall-clock time, capped at ``burst``) and
    hands the chunk out to its threads; when the bucket is in debt the reserving thread
    sleeps until its chunk is due, so all workers together never exceed ``rate`` plus a
    burst of ``burst``. :meth:`slow_down` (a 429 that still came) takes a second of
    tokens away from everyone. Same interface as :class:`TokenBucket` (``acquire``)."""

    def __init__(self, engine: Any, name: str, rate: float, *, burst: float | None = None,
                 chunk: int | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0 calls per second")
        self.engine, self.name, self.rate = engine, name, float(rate)
        self.chunk = chunk or max(1, min(int(rate * 0.1), 20))  # one database round trip per chunk
        self.burst = float(burst if burst is not None else 1.0)  # no stored-up burst above the rate
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._ready: list[float] = []  # times at which reserved tokens may be used
        self._ensure_row()

    def _ensure_row(self) -> None:
        from sqlalchemy import text

        with self.engine.begin() as c:
            exists = c.execute(text("SELECT 1 FROM rate_buckets WHERE name = :n"), {"n": self.name}).first()
            if exists is None:
                try:
                    with c.begin_nested():
                        c.execute(text("INSERT INTO rate_buckets (name, tokens, updated_at) VALUES (:n, :t, :u)"),
                                  {"n": self.name, "t": self.burst, "u": self._clock()})
                except Exception:  # another worker created it first
                    pass

    def _reserve(self, k: int) -> float:
        """Take ``k`` tokens; returns the tokens left (negative: the debt to wait out)."""
        from sqlalchemy import text

        now = self._clock()
        with self.engine.begin() as c:
            row = c.execute(text(
                "UPDATE rate_buckets SET tokens = CASE WHEN tokens + (:now - updated_at) * :rate > :burst "
                "THEN :burst ELSE tokens + (:now - updated_at) * :rate END - :k, "
                "updated_at = CASE WHEN :now > updated_at THEN :now ELSE updated_at END "
                "WHERE name = :n RETURNING tokens"),
                {"now": now, "rate": self.rate, "burst": self.burst, "k": k, "n": self.name}).first()
        return float(row[0]) if row is not None else 0.0

    def acquire(self) -> float:
        """Take one token, sleeping until it is due. Returns the seconds waited."""
        with self._lock:  # held for a reservation's round trip, never while sleeping
            if not self._ready:
                left = self._reserve(self.chunk)
                now = time.monotonic()
                # token i of the chunk is due once the debt before it is paid back
                self._ready = [now + max(0.0, -(left + self.chunk - 1 - i)) / self.rate for i in range(self.chunk)]
            due = self._ready.pop(0)
        wait = due - time.monotonic()
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def slow_down(self) -> None:
        """The gateway answered 429 anyway: everyone pauses for about a second."""
        from sqlalchemy import text

        with self.engine.begin() as c:
            c.execute(text("UPDATE rate_buckets SET tokens = tokens - :r WHERE name = :n"),
                      {"r": self.rate, "n": self.name})
