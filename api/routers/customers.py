"""``/v1/customers``: create, list (cursor pages), show."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator
from sqlmodel import Session

from api import idempotency
from api import presenters as P
from api.auth import ADMIN, actor
from api.deps import EngineDep, NowDep
from api.idempotency import IdempotencyKey
from api.pagination import page
from api.ranges import RangesDep
from api.responses import admin
from api.schemas import CustomerCreate, CustomerLocale, CustomerOut, Limit, Page, clean_optional, clean_text
from billing_engine import customers
from billing_engine.db import transaction
from billing_engine.listing import Ranges

router = APIRouter(prefix="/v1/customers", tags=["customers"], dependencies=ADMIN)

CustomerRef = Annotated[str, Path(min_length=1, max_length=200, description="Customer id (cus_...) or your external ref."), AfterValidator(clean_text)]


@router.post("", status_code=201, response_model=CustomerOut, responses=admin(409), summary="Create a customer")
def create_customer(request: Request, body: CustomerCreate, engine: EngineDep, now: NowDep,
                    idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> CustomerOut:
        c = customers.create(s, email=body.email, name=body.name, external_ref=body.external_ref,
                             gateway_customer_id=body.gateway_customer_id, locale=body.locale, now=now,
                             actor=actor(request))
        return P.customer(c)

    return idempotency.in_transaction(request, engine, idempotency_key, body, 201, action)


@router.get("", response_model=Page[CustomerOut], responses=admin(), summary="List customers (oldest first)")
def list_customers(
    engine: EngineDep,
    email: Annotated[str | None, Query(max_length=320, description="Only this e-mail address."), AfterValidator(clean_optional)] = None,
    limit: Annotated[Limit, Query()] = 100,
    after: Annotated[str | None, Query(max_length=40, description="Cursor: the next_cursor of the previous page."), AfterValidator(clean_optional)] = None,
    ranges: RangesDep = Ranges(),
) -> Page[CustomerOut]:
    with transaction(engine) as s:
        rows = customers.list_customers(s, email=email, limit=limit + 1, after=after, ranges=ranges)
        return page(rows, limit, P.customer)


@router.get("/{customer}", response_model=CustomerOut, responses=admin(404), summary="Show a customer")
def show_customer(customer: CustomerRef, engine: EngineDep) -> CustomerOut:
    with transaction(engine) as s:
        return P.customer(customers.get(s, customer))


@router.put("/{customer}/locale", response_model=CustomerOut, responses=admin(404),
            summary="Set the language of the customer's e-mails and pages")
def set_customer_locale(request: Request, customer: CustomerRef, body: CustomerLocale, engine: EngineDep,
                        now: NowDep) -> CustomerOut:
    with transaction(engine) as s:
        c = customers.set_locale(s, customers.get(s, customer), body.locale, now=now, actor=actor(request))
        return P.customer(c)
