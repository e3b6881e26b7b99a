"""``POST /v1/customers/{customer}/account-link``: mint the customer's self-service link."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict

from api.auth import ADMIN, actor
from api.deps import EngineDep, NowDep, SettingsDep
from api.responses import admin
from api.routers.customers import CustomerRef
from billing_engine import audit, customers, links
from billing_engine.db import transaction
from billing_engine.events import EventType

router = APIRouter(prefix="/v1/customers", tags=["customers"], dependencies=ADMIN)

MintKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=255,
    description="Accepted and not needed: minting is harmless to repeat (a retry mints a second link, "
    "equally valid; both are in the audit log). The answer is never stored, because the link is a "
    "capability that acts for the customer (it can cancel and change the card).")]


class AccountLinkOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "customer_id": "cus_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "url": "http://127.0.0.1:8000/account/ImN1c18w...", "expires_at": "2026-03-16T09:00:00Z"}]})

    customer_id: str
    url: str
    expires_at: datetime


@router.post("/{customer}/account-link", status_code=201, response_model=AccountLinkOut, responses=admin(404),
             summary="Mint the customer's signed self-service link (subscriptions, card, receipts)")
def account_link(request: Request, customer: CustomerRef, engine: EngineDep, settings: SettingsDep,
                 now: NowDep, idempotency_key: MintKey = None) -> AccountLinkOut:
    with transaction(engine) as s:
        customer_id = customers.get(s, customer).id
    url = links.make_account_url(settings, customer_id, now)
    expires_at = links.expires_at(settings, now)
    # audited like a cancel link (the page can cancel); never the link itself
    audit.record(engine, EventType.CANCEL_LINK_MINTED, at=now, actor=actor(request), customer_id=customer_id,
                 payload={"link": "account", "expires_at": expires_at})
    return AccountLinkOut(customer_id=customer_id, url=url, expires_at=expires_at)
