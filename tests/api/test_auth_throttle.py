"""Guessing admin tokens is throttled per client address and every failure is logged."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.auth import FailureThrottle
from billing_engine.gateway.fake import FakeGateway
from tests.api.conftest import AUTH, TOKEN, Clock, make_client


class Seconds:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _wrong(c: TestClient, n: int) -> None:
    for i in range(n):
        r = c.get("/v1/subscriptions", headers={"Authorization": f"Bearer guess-{i}"})
        assert r.status_code == 401


def test_the_eleventh_wrong_token_in_a_minute_is_429_with_retry_after(
    engine: Engine, gateway: FakeGateway, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with make_client(engine, gateway, clock) as c, caplog.at_level(logging.WARNING, logger="api.auth"):
        _wrong(c, 10)
        r = c.get("/v1/subscriptions", headers={"Authorization": "Bearer guess-11"})
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "too_many_failures" and 1 <= int(r.headers["retry-after"]) <= 60
        assert c.get("/v1/subscriptions", headers=AUTH).status_code == 429  # even the right one, for now
    failures = [rec.getMessage() for rec in caplog.records if rec.name == "api.auth"]
    assert len(failures) == 10 and all("invalid admin token from testclient" in m for m in failures)
    assert not any("guess-" in m for m in failures)  # the guessed token is never logged


def test_the_window_slides_and_other_addresses_are_not_blocked(
    engine: Engine, gateway: FakeGateway, clock: Clock
) -> None:
    seconds = Seconds()
    with make_client(engine, gateway, clock) as c:
        c.app.state.auth_throttle = FailureThrottle(clock=seconds)  # type: ignore[attr-defined]
        _wrong(c, 10)
        assert c.get("/v1/subscriptions", headers=AUTH).status_code == 429
        other = TestClient(c.app, client=("203.0.113.9", 4000))
        assert other.get("/v1/subscriptions", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        seconds.t += 61
        assert c.get("/v1/subscriptions", headers=AUTH).status_code == 200


def test_missing_tokens_are_not_counted_as_guesses(engine: Engine, gateway: FakeGateway, clock: Clock) -> None:
    with make_client(engine, gateway, clock) as c:
        for _ in range(15):
            assert c.get("/v1/subscriptions").status_code == 401
        assert c.get("/v1/subscriptions", headers=AUTH).status_code == 200


def test_dashboard_logins_are_throttled_too(engine: Engine, gateway: FakeGateway, clock: Clock) -> None:
    with make_client(engine, gateway, clock) as c:
        for _ in range(10):
            r = c.post("/dashboard/login", data={"token": "guess"}, follow_redirects=False)
            assert r.status_code == 401
        r = c.post("/dashboard/login", data={"token": TOKEN}, follow_redirects=False)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "Too many failed logins" in r.text
        assert c.get("/v1/subscriptions", headers=AUTH).status_code == 429  # one throttle for both doors
