"""``POST /v1/customers/{customer}/account-link`` (admin): the customer's self-service link."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import links
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Event
from billing_engine.settings import load_settings
from tests.api.conftest import AUTH, Clock, make_client
from tests.factories import make_customer


def test_admin_mints_an_account_link_and_it_is_audited(engine: Engine, now: datetime) -> None:
    with transaction(engine) as s:
        customer_id = make_customer(s, now).id
    with make_client(engine, FakeGateway(), Clock(now)) as client:
        assert client.post(f"/v1/customers/{customer_id}/account-link").status_code == 401
        r = client.post(f"/v1/customers/{customer_id}/account-link", headers=AUTH)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["customer_id"] == customer_id and "/account/" in body["url"]
        token = body["url"].rsplit("/", 1)[1]
        settings = load_settings(database_url=engine.url.render_as_string(hide_password=False))
        assert links.verify_account_token(settings, token, now) == customer_id
        missing = client.post("/v1/customers/cus_nobody/account-link", headers=AUTH)
        assert missing.status_code == 404 and missing.json()["field"] == "customer"
    with Session(engine) as s:
        audit = s.exec(select(Event).where(Event.customer_id == customer_id, Event.type == "cancel_link.minted")).one()
        assert token not in audit.payload and '"link": "account"' in audit.payload
