"""The run-cycle with the real Stripe adapter (official SDK) over the scripted Stripe."""

from __future__ import annotations

import pytest

from billing_engine.gateway import RetryPolicy, StripeGateway, TokenBucket
from billing_engine.settings import Settings, load_settings
from tests.gateway.stripe_sim import StripeSim

NO_WAIT_RETRY = RetryPolicy(max_attempts=4, max_elapsed=30.0, initial_wait=0.0, max_wait=0.0, jitter=0.0)


@pytest.fixture
def sim() -> StripeSim:
    return StripeSim()


@pytest.fixture
def backoffs() -> list[float]:
    """Backoff waits the adapter asked for (never slept)."""
    return []


@pytest.fixture
def stripe_gateway(sim: StripeSim, backoffs: list[float]) -> StripeGateway:
    return StripeGateway(
        "sk_test_e2e",
        http_client=sim,
        retry=NO_WAIT_RETRY,
        rate_limiter=TokenBucket(1_000_000, burst=1_000_000),
        sleep=backoffs.append,
    )


@pytest.fixture
def settings(db_url: str) -> Settings:
    return load_settings(database_url=db_url, gateway="stripe", stripe_api_key="sk_test_e2e")
