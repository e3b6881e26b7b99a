"""Fixtures for the gateway tests: a scripted Stripe and adapters wired to it."""

from __future__ import annotations

import pytest

from billing_engine.gateway import FakeGateway, RetryPolicy, StripeGateway, TokenBucket

from .stripe_sim import StripeSim

TEST_RETRY = RetryPolicy(max_attempts=4, max_elapsed=5.0, initial_wait=0.5, max_wait=4.0)


@pytest.fixture
def sim() -> StripeSim:
    return StripeSim()


@pytest.fixture
def sleeps() -> list[float]:
    """Backoff waits the adapter asked for (never actually slept)."""
    return []


@pytest.fixture
def stripe_gateway(sim: StripeSim, sleeps: list[float]) -> StripeGateway:
    return StripeGateway(
        "sk_test_sim",
        http_client=sim,
        retry=TEST_RETRY,
        rate_limiter=TokenBucket(1_000_000, burst=1_000_000),
        sleep=sleeps.append,
    )


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()
