"""Invoices and payment attempts (read only): ``/v1/invoices``, ``/v1/payment-attempts``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator

from api import presenters as P
from api.auth import ADMIN
from api.deps import EngineDep
from api.pagination import page
from api.ranges import RangesDep
from api.responses import admin
from api.schemas import InvoiceDetail, InvoiceOut, Limit, ListOf, Page, PaymentAttemptOut, clean_optional, clean_text
from billing_engine import invoices
from billing_engine.db import transaction
from billing_engine.errors import NotFound, ValidationError
from billing_engine.listing import Ranges
from billing_engine.models import InvoiceStatus, PaymentAttempt

router = APIRouter(tags=["invoices"], dependencies=ADMIN)

InvoiceId = Annotated[str, Path(min_length=1, max_length=40, description="Invoice id (in_...)."), AfterValidator(clean_text)]
AttemptId = Annotated[str, Path(min_length=1, max_length=40, description="Payment attempt id (pay_...)."), AfterValidator(clean_text)]


@router.get("/v1/invoices", response_model=Page[InvoiceOut], responses=admin(404),
            summary="List invoices (oldest first), filtered, in cursor pages")
def list_invoices(
    engine: EngineDep,
    subscription: Annotated[str | None, Query(max_length=40, description="Subscription id (404 if none)."), AfterValidator(clean_optional)] = None,
    customer: Annotated[str | None, Query(max_length=40, description="Customer id or external reference (404 if none)."), AfterValidator(clean_optional)] = None,
    status: Annotated[str | None, Query(max_length=20, description="open | paid | uncollectible | void"), AfterValidator(clean_optional)] = None,
    limit: Annotated[Limit, Query()] = 100,
    after: Annotated[str | None, Query(max_length=40, description="Cursor: the next_cursor of the previous page."), AfterValidator(clean_optional)] = None,
    ranges: RangesDep = Ranges(),
) -> Page[InvoiceOut]:
    if status and status not in {s.value for s in InvoiceStatus}:
        raise ValidationError(f"must be one of {', '.join(s.value for s in InvoiceStatus)}", field="status")
    with transaction(engine) as s:
        rows = invoices.list_invoices(s, subscription_id=subscription, customer_id=customer, status=status,
                                      limit=limit + 1, after=after, ranges=ranges)
        return page(rows, limit, P.invoice)


@router.get("/v1/invoices/{invoice}", response_model=InvoiceDetail, responses=admin(404),
            summary="Show an invoice with its payment attempts and refunds")
def show_invoice(invoice: InvoiceId, engine: EngineDep) -> InvoiceDetail:
    with transaction(engine) as s:
        return P.invoice_detail(s, invoices.get(s, invoice))


@router.get("/v1/invoices/{invoice}/payment-attempts", response_model=ListOf[PaymentAttemptOut],
            responses=admin(404), summary="List an invoice's payment attempts")
def list_attempts(invoice: InvoiceId, engine: EngineDep) -> ListOf[PaymentAttemptOut]:
    with transaction(engine) as s:
        inv = invoices.get(s, invoice)
        return ListOf[PaymentAttemptOut](data=[P.attempt(a) for a in invoices.attempts(s, inv.id)])


@router.get("/v1/payment-attempts/{attempt}", response_model=PaymentAttemptOut, responses=admin(404),
            summary="Show one payment attempt")
def show_attempt(attempt: AttemptId, engine: EngineDep) -> PaymentAttemptOut:
    with transaction(engine) as s:
        a = s.get(PaymentAttempt, attempt)
        if a is None:
            raise NotFound(f"no payment attempt {attempt!r}", field="attempt")
        return P.attempt(a)


