"""``/v1/refunds``: refund a paid invoice (fully or partly) and read refunds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator

from api import idempotency
from api import presenters as P
from api.auth import ADMIN, actor
from api.deps import EngineDep, GatewayDep, NowDep
from api.idempotency import IdempotencyKey
from api.pagination import page
from api.responses import admin
from api.schemas import Limit, Page, RefundCreate, RefundOut, clean_optional, clean_text
from billing_engine import refunds
from billing_engine.db import transaction

router = APIRouter(prefix="/v1/refunds", tags=["refunds"], dependencies=ADMIN)

RefundId = Annotated[str, Path(min_length=1, max_length=40, description="Refund id (re_...)."), AfterValidator(clean_text)]


@router.post("", status_code=201, response_model=RefundOut, responses=admin(404, 409),
             summary="Refund a paid invoice (omit amount_minor for everything still refundable)")
def create_refund(request: Request, body: RefundCreate, engine: EngineDep, gateway: GatewayDep, now: NowDep,
                  idempotency_key: IdempotencyKey = None) -> JSONResponse:
    key = idempotency.check_key(idempotency_key)

    def action() -> RefundOut:
        r = refunds.create(engine, gateway, invoice_id=body.invoice_id, amount_minor=body.amount_minor,
                           reason=body.reason, currency=body.currency, now=now, request_key=key, actor=actor(request))
        return P.refund(r)

    return idempotency.after_effect(request, engine, key, body, 201, action)


@router.get("", response_model=Page[RefundOut], responses=admin(), summary="List refunds (oldest first)")
def list_refunds(
    engine: EngineDep,
    invoice: Annotated[str | None, Query(max_length=40, description="Only refunds of this invoice."), AfterValidator(clean_optional)] = None,
    limit: Annotated[Limit, Query()] = 100,
    after: Annotated[str | None, Query(max_length=40, description="Cursor: the next_cursor of the previous page."), AfterValidator(clean_optional)] = None,
) -> Page[RefundOut]:
    with transaction(engine) as s:
        return page(refunds.list_refunds(s, invoice_id=invoice, limit=limit + 1, after=after), limit, P.refund)


@router.get("/{refund}", response_model=RefundOut, responses=admin(404), summary="Show a refund")
def show_refund(refund: RefundId, engine: EngineDep) -> RefundOut:
    with transaction(engine) as s:
        return P.refund(refunds.get(s, refund))


@router.post("/{refund}/retry", response_model=RefundOut, responses=admin(404, 409),
             summary="Send a refund left pending (gateway unreachable) again, with its original idempotency key")
def retry_refund(request: Request, refund: RefundId, engine: EngineDep, gateway: GatewayDep, now: NowDep,
                 idempotency_key: IdempotencyKey = None) -> JSONResponse:
    return idempotency.after_effect(request, engine, idempotency_key, None, 200, lambda: P.refund(
        refunds.send(engine, gateway, refund, now=now, actor=actor(request))))
