"""The client-side token bucket."""

from __future__ import annotations

import threading
import time

import pytest

from billing_engine.gateway import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_burst_is_free_then_requests_are_spaced() -> None:
    clock = Clock()
    bucket = TokenBucket(10, burst=3, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2])  # reservations queue up
    assert clock.slept == pytest.approx([0.1, 0.2])


def test_tokens_refill_with_time() -> None:
    clock = Clock()
    bucket = TokenBucket(4, clock=clock, sleep=clock.sleep)
    assert bucket.acquire() == 0.0
    clock.now += 0.25
    assert bucket.acquire() == 0.0
    clock.now += 10  # refills only up to the burst
    assert [bucket.acquire() for _ in range(2)] == pytest.approx([0.0, 0.25])


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(1, burst=0.5)


def test_threads_never_exceed_the_rate() -> None:
    bucket = TokenBucket(500, burst=1)
    n_threads, per_thread = 4, 25

    def worker() -> None:
        for _ in range(per_thread):
            bucket.acquire()

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    # 100 tokens at 500/s with a burst of 1: at least 99 / 500 s
    assert elapsed >= (n_threads * per_thread - 1) / 500 * 0.95
