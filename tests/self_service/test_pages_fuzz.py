"""Property test of the self-service routes: any token, path, method and form body gets
a 2xx/3xx/4xx page, never a 5xx; a forged token never changes anything; a genuine token
never reaches another customer's subscription or invoice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from api.app import create_app
from billing_engine import links
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Event, Invoice
from billing_engine.settings import load_settings
from tests.factories import make_plan, make_subscription

SETTINGS = load_settings(secret_key="fuzz-self-" + "f" * 30, mail_transport="none")
TOKENS = st.one_of(
    st.text(min_size=0, max_size=120),
    st.from_regex(r"[A-Za-z0-9_.\-]{1,200}", fullmatch=True),
    st.just("ImN1c18wMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMCI.aVt9kA.forged"),
)
FORMS = st.dictionaries(st.sampled_from(["test_token", "x", "reason"]), st.text(max_size=500), max_size=3)


@pytest.fixture
def world(sqlite_engine: Engine, now: datetime) -> Iterator[tuple[TestClient, Engine, dict[str, str]]]:
    with transaction(sqlite_engine) as s:
        plan = make_plan(s, now)
        mine = make_subscription(s, now, plan=plan, email="ada@example.com")
        other = make_subscription(s, now, plan=plan, email="bob@example.com")
        ids = {"token": links.make_account_token(SETTINGS, mine.customer_id, now), "mine": mine.id,
               "other": other.id}
    run_cycle(sqlite_engine, FakeGateway(), now=now, settings=SETTINGS)
    with Session(sqlite_engine) as s:
        ids["other_invoice"] = s.exec(select(Invoice.id).where(Invoice.subscription_id == ids["other"])).one()
    app = create_app(settings=SETTINGS, engine=sqlite_engine, gateway=FakeGateway(), clock=lambda: now)
    with TestClient(app, follow_redirects=False, raise_server_exceptions=False,
                    client=("192.0.2.1", 1000)) as client:
        yield client, sqlite_engine, ids


def _events(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(Event)).one())


def _suffixes(ids: dict[str, str]) -> st.SearchStrategy[str]:
    subs = st.sampled_from([ids["mine"], ids["other"], "sub_nope", "..", "%00"])
    return st.one_of(
        st.just(""),
        st.builds(lambda s, a: f"/subscriptions/{s}/{a}", subs, st.sampled_from(["cancel", "undo", "card", "x"])),
        st.builds(lambda i, e: f"/receipts/{i}{e}", st.sampled_from([ids["other_invoice"], "in_x", "..."]),
                  st.sampled_from(["", ".pdf"])),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data(), token=TOKENS, method=st.sampled_from(["GET", "POST", "HEAD"]), form=FORMS)
def test_forged_tokens_never_error_and_never_change_anything(world, data, token: str, method: str,
                                                            form: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    client, engine, ids = world
    suffix = data.draw(_suffixes(ids))
    before = _events(engine)
    r = client.request(method, f"/account/{quote(token, safe='')}{suffix}", data=form if method == "POST" else None)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    assert _events(engine) == before


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data(), method=st.sampled_from(["GET", "POST", "HEAD"]), form=FORMS)
def test_genuine_token_never_errors_nor_reaches_another_customer(world, data, method: str,
                                                                 form: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    client, engine, ids = world
    suffix = data.draw(_suffixes(ids))
    r = client.request(method, f"/account/{ids['token']}{suffix}", data=form if method == "POST" else None)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if ids["other"] in suffix or ids["other_invoice"] in suffix:
        assert r.status_code in (404, 405)  # not found, or a method the route does not take
