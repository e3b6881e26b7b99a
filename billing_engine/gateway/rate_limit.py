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
