"""A client-side token bucket, so a burst of renewals stays under Stripe's rate limit.

Stripe allows about 25 requests/s in test mode and 100/s live (per account). One
bucket throttles one process; share a bucket between gateways in the same process.
Several worker processes each need a proportionally smaller rate (or rely on the
429 retries, which are always safe with an idempotency key).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

STRIPE_TEST_RATE = 25.0
STRIPE_LIVE_RATE = 100.0
# Share of a hard limit the shared bucket paces at: the rest absorbs the jitter between a
# token's due time and the moment its thread really sends (threads wake late under load).
PACE = 0.98
WINDOW_MAX_LIMIT = 500.0
LATE = 0.01  # seconds a call may leave after its reserved send time


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
    tokens away from everyone. Same interface as :class:`TokenBucket` (``acquire``).

    ``limit`` (calls per second, the gateway's hard limit): pace at ``PACE`` of it, and
    also keep a sliding window over the real send times of ALL workers: a ring of
    ``limit - 2`` send slots in ``rate_buckets`` rows (see :meth:`_hold_to_window`), so
    no second of sends holds more than ``limit - 2`` calls, with one call of slack for a
    thread descheduled between its check and its send.
    Pacing alone is not enough: threads wake late under load and send in clumps with the
    ones due after them (measured: 2 workers paced at 98 % still put ~1,000 of 6,000 calls
    over a strict 1-s window). The window costs one short transaction per call, so it is
    kept for limits up to ``WINDOW_MAX_LIMIT`` calls/s; above that, pacing alone."""

    def __init__(self, engine: Any, name: str, rate: float | None = None, *, limit: float | None = None,
                 burst: float | None = None, chunk: int | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate is None:
            if limit is None:
                raise ValueError("give a rate or a limit")
            rate = limit * PACE
        if rate <= 0 or (limit is not None and limit < 3):
            raise ValueError("rate must be > 0 calls per second (limit >= 3)")
        self.engine, self.name, self.rate = engine, name, float(rate)
        self.chunk = chunk or max(1, min(int(rate * 0.1), 20))  # one database round trip per chunk
        self.burst = float(burst if burst is not None else 1.0)  # no stored-up burst above the rate
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._ready: list[float] = []  # times at which reserved tokens may be used
        self._window = math.floor(limit) - 2 if limit is not None and limit <= WINDOW_MAX_LIMIT else None
        self._window_lock = threading.Lock()  # one window transaction at a time per process
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
        if self._window is not None:  # the ring of send times: a sequence row + one row per slot
            names = [self._slot("seq"), *(self._slot(f"w{i}") for i in range(self._window))]
            with self.engine.begin() as c:
                have = {r[0] for r in c.execute(text("SELECT name FROM rate_buckets WHERE name LIKE :p"),
                                                {"p": self.name + "|%"})}
                missing = [{"n": n, "t": 0.0, "u": 0.0} for n in names if n not in have]
                if missing:
                    try:
                        with c.begin_nested():
                            c.execute(text("INSERT INTO rate_buckets (name, tokens, updated_at) VALUES (:n, :t, :u)"),
                                      missing)
                    except Exception:  # another worker created them first
                        pass

    def _slot(self, suffix: str) -> str:
        return f"{self.name}|{suffix}"

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
        if self._window is not None:
            wait = max(wait, 0.0) + self._hold_to_window()
        return max(wait, 0.0)

    def _hold_to_window(self) -> float:
        """Reserve a send time in the ring and send at it.

        Slot ``seq % (limit - 2)`` of the ring holds the time it was last reserved for; the
        next reservation of that slot is at least ``1 + LATE`` seconds after it. With
        ``limit - 2`` slots, any window of ``1 + LATE`` seconds holds at most ``limit - 2``
        reservations, and a call sends within ``LATE`` of its reservation or reserves again
        (a thread that woke late would clump with the ones due after it): so no second of
        real send times, across every worker, holds more than ``limit - 2`` calls. One
        statement per call on PostgreSQL (the database's clock, one for all machines)."""
        assert self._window is not None
        waited = 0.0
        while True:
            with self._window_lock:  # one reservation in flight per process
                at = self._reserve_send_time()
            wait = at - time.time()
            if wait > 0:
                time.sleep(wait)  # real time, like the send times the ring keeps
                waited += wait
            if time.time() - at <= LATE:
                return waited

    def _reserve_send_time(self) -> float:
        from sqlalchemy import text

        assert self._window is not None
        spacing = 1.0 + LATE
        with self.engine.begin() as c:
            if c.dialect.name == "postgresql":
                c.execute(text("SET LOCAL synchronous_commit = off"))  # the ring is not worth a WAL flush
                at, db_now = c.execute(text(
                    "WITH s AS (UPDATE rate_buckets SET tokens = tokens + 1 WHERE name = :seq RETURNING tokens) "
                    "UPDATE rate_buckets AS r SET updated_at = GREATEST(EXTRACT(EPOCH FROM clock_timestamp()), "
                    "r.updated_at + :spacing) FROM s WHERE r.name = :prefix || (CAST(s.tokens AS BIGINT) % :k) "
                    "RETURNING r.updated_at, EXTRACT(EPOCH FROM clock_timestamp())"),
                    {"seq": self._slot("seq"), "prefix": self._slot("w"), "k": self._window,
                     "spacing": spacing}).one()
                return float(at) - float(db_now) + time.time()  # on this machine's clock
            seq = c.execute(text("UPDATE rate_buckets SET tokens = tokens + 1 WHERE name = :n RETURNING tokens"),
                            {"n": self._slot("seq")}).scalar_one()
            slot = self._slot(f"w{int(seq) % self._window}")
            last = float(c.execute(text("SELECT updated_at FROM rate_buckets WHERE name = :n"),
                                   {"n": slot}).scalar_one())
            at = max(time.time(), last + spacing)
            c.execute(text("UPDATE rate_buckets SET updated_at = :t WHERE name = :n"), {"t": at, "n": slot})
            return at

    def slow_down(self) -> None:
        """The gateway answered 429 anyway: everyone pauses for about a second."""
        from sqlalchemy import text

        with self.engine.begin() as c:
            c.execute(text("UPDATE rate_buckets SET tokens = tokens - :r WHERE name = :n"),
                      {"r": self.rate, "n": self.name})
