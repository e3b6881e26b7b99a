"""``POST /v1/run-cycle`` refuses an ``at`` ahead of the clock with a real gateway (issue #13:
a typo, 2028 for 2026, billed 697 periods ahead in one call) and dates out of range (422,
never 500); catch-up in the past and explicit simulations still run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Invoice
from tests.api.conftest import AUTH, Clock, create_plan, make_client, subscribe


class LiveGateway(FakeGateway):
    """Stands for Stripe at the boundary: what the check looks at is the gateway's name."""

    name = "stripe"


@pytest.fixture
def live(engine: Engine, clock: Clock) -> Iterator[tuple[TestClient, LiveGateway]]:
    gw = LiveGateway()
    with make_client(engine, gw, clock) as c:
        c.headers.update(AUTH)
        yield c, gw


def _iso(clock: Clock, delta: timedelta) -> str:
    return (clock.now + delta).isoformat().replace("+00:00", "Z")


def test_far_future_run_with_a_real_gateway_is_refused_and_charges_nothing(
        live: tuple[TestClient, LiveGateway], engine: Engine) -> None:
    client, gw = live
    create_plan(client)
    subscribe(client)
    r = client.post("/v1/run-cycle", json={"at": "2028-12-02T00:00:00Z", "send_emails": False})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == "at" and "simulate" in r.json()["detail"]
    assert [c for c in gw.calls if c[0] == "charge"] == []
    with Session(engine) as s:
        assert s.exec(select(Invoice)).all() == []


def test_a_few_minutes_of_clock_skew_and_catch_up_in_the_past_are_allowed(
        live: tuple[TestClient, LiveGateway], clock: Clock) -> None:
    client, gw = live
    create_plan(client)
    subscribe(client)
    past = client.post("/v1/run-cycle", json={"at": _iso(clock, timedelta(days=-3)), "send_emails": False})
    assert past.status_code == 200, past.text
    skew = client.post("/v1/run-cycle", json={"at": _iso(clock, timedelta(minutes=4)), "send_emails": False})
    assert skew.status_code == 200, skew.text
    assert skew.json()["succeeded"] == 1


def test_an_explicit_simulation_may_run_ahead_with_a_real_gateway(
        live: tuple[TestClient, LiveGateway], clock: Clock) -> None:
    client, gw = live
    create_plan(client)
    subscribe(client)
    client.post("/v1/run-cycle", json={"send_emails": False})
    client.post("/v1/run-cycle", json={"at": _iso(clock, timedelta(days=24)), "simulate": True,
                                       "send_emails": False})  # the renewal's reminder, 7 days ahead
    r = client.post("/v1/run-cycle", json={"at": _iso(clock, timedelta(days=32)), "simulate": True,
                                           "send_emails": False})
    assert r.status_code == 200, r.text
    assert r.json()["succeeded"] == 1 and gw.total_collected("USD") == 3400


def test_the_fake_gateway_in_test_mode_still_simulates_ahead(client: TestClient, clock: Clock) -> None:
    create_plan(client)
    subscribe(client)
    r = client.post("/v1/run-cycle", json={"at": _iso(clock, timedelta(days=40)), "send_emails": False})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("at", ["9999-12-31T00:00:00Z", "3000-01-01T00:00:00Z", "0001-01-02T00:00:00Z"])
def test_dates_outside_the_supported_range_answer_422_not_500(client: TestClient, at: str) -> None:
    create_plan(client)
    subscribe(client)
    r = client.post("/v1/run-cycle", json={"at": at, "simulate": True, "send_emails": False})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "at"
