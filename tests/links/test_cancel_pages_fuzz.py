"""Property test of the customer pages (outside the OpenAPI document, so schemathesis
does not reach them): any token, path suffix, method and form body gets a 2xx/3xx/4xx
page, never a 5xx, and only a genuine token's POST can change anything."""

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
from billing_engine.models import Event
from billing_engine.settings import load_settings
from tests.factories import make_subscription

SETTINGS = load_settings(secret_key="fuzz-secret-" + "f" * 30, mail_transport="none")
SUFFIXES = st.sampled_from(["", "/feedback", "/undo", "/resend", "/x", "/../healthz"])
TOKENS = st.one_of(
    st.text(min_size=0, max_size=120),
    st.from_regex(r"[A-Za-z0-9_.\-]{1,200}", fullmatch=True),
    st.just("InN1Yl8wMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMCI.aVt9kA.forged"),
)
FORMS = st.dictionaries(st.sampled_from(["reason", "comment", "List-Unsubscribe", "x"]),
                        st.text(max_size=3000), max_size=4)


@pytest.fixture
def world(sqlite_engine: Engine, now: datetime) -> Iterator[tuple[TestClient, Engine, str]]:
    with transaction(sqlite_engine) as s:
        sub_id = make_subscription(s, now).id
    run_cycle(sqlite_engine, FakeGateway(), now=now, settings=SETTINGS)
    app = create_app(settings=SETTINGS, engine=sqlite_engine, gateway=FakeGateway(), clock=lambda: now)
    with TestClient(app, follow_redirects=False, raise_server_exceptions=False) as client:
        yield client, sqlite_engine, links.make_cancel_token(SETTINGS, sub_id, now)


def _events(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(Event)).one())


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(token=TOKENS, suffix=SUFFIXES, method=st.sampled_from(["GET", "POST", "HEAD", "PUT"]), form=FORMS)
def test_forged_tokens_never_error_and_never_change_anything(world, token: str, suffix: str, method: str,
                                                            form: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    client, engine, _genuine = world
    before = _events(engine)
    r = client.request(method, f"/cancel/{quote(token, safe='')}{suffix}", data=form if method == "POST" else None)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    assert _events(engine) == before


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(suffix=SUFFIXES, method=st.sampled_from(["GET", "POST", "HEAD"]), form=FORMS)
def test_genuine_token_with_any_form_never_errors(world, suffix: str, method: str,
                                                  form: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    client, _engine, genuine = world
    r = client.request(method, f"/cancel/{genuine}{suffix}", data=form if method == "POST" else None)
    assert r.status_code < 500, (r.status_code, r.text[:300])
