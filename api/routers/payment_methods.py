"""Payment methods with consent: ``/v1/customers/{customer}/payment-methods`` and
``/v1/payment-methods/{id}``. A card is stored only with the customer's recorded consent
to off-session charges; the engine never sees a card number, only the gateway token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator
from sqlmodel import Session

from api import idempotency
from api import presenters as P
from api.auth import ADMIN, actor
from api.deps import EngineDep, GatewayDep, NowDep
from api.idempotency import IdempotencyKey
from api.responses import admin
from api.schemas import ListOf, PaymentMethodCreate, PaymentMethodOut, clean_text
from billing_engine import card_setup, customers, payment_methods, plans
from billing_engine.consents import ConsentInput
from billing_engine.db import transaction
from billing_engine.errors import GatewayUnavailable, ValidationError
from billing_engine.gateway.protocol import CardDetails, GatewayError, GatewayUnreachable, PaymentGateway

router = APIRouter(tags=["payment methods"], dependencies=ADMIN)

CustomerRef = Annotated[str, Path(min_length=1, max_length=200, description="Customer id (cus_...) or your external ref."), AfterValidator(clean_text)]
PaymentMethodId = Annotated[str, Path(min_length=1, max_length=40, description="Payment method id (pm_...)."), AfterValidator(clean_text)]


def card_details(gateway: PaymentGateway, token: str) -> CardDetails:
    """Brand / last4 / expiry from the gateway (same errors as ``billing payment-method add``)."""
    try:
        return gateway.card_details(token)
    except GatewayUnreachable as exc:
        raise GatewayUnavailable(f"gateway unreachable: {exc}") from None
    except GatewayError as exc:
        raise ValidationError(f"the gateway does not know this token: {exc}", field="token") from None
    except OSError as exc:
        raise GatewayUnavailable(f"gateway unreachable: {exc}") from None


@router.post("/v1/customers/{customer}/payment-methods", status_code=201, response_model=PaymentMethodOut,
             responses=admin(404, 409), summary="Add a card token with the customer's consent")
def add_payment_method(request: Request, customer: CustomerRef, body: PaymentMethodCreate, engine: EngineDep,
                       gateway: GatewayDep, now: NowDep, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    token = payment_methods.validate_token(body.token)
    with transaction(engine) as s:
        cust_id = customers.get(s, customer).id
    card = card_details(gateway, token)
    c = body.consent

    def action(s: Session) -> PaymentMethodOut:
        plan_id = plans.get(s, c.plan_id).id if c.plan_id is not None else None
        consent = ConsentInput(
            accepted_at=c.accepted_at or now, ip_address=c.ip_address, user_agent=c.user_agent,
            terms_version=c.terms_version, terms_text=c.terms_text, terms_sha256=c.terms_sha256,
            amount_minor=c.amount_minor, currency=c.currency, interval=c.interval, interval_count=c.interval_count,
            channel=c.channel, plan_id=plan_id, gateway_setup_id=c.gateway_setup_id,
        )
        if consent.gateway_setup_id is None:
            # no SetupIntent from the front end: set the card up for off-session use now
            pm, _ = card_setup.add_with_setup(s, gateway, customer_id=cust_id, token=token, consent=consent,
                                              now=now, actor=actor(request))
        else:
            pm, _ = payment_methods.add(s, customer_id=cust_id, token=token, gateway=gateway.name, card=card,
                                        consent=consent, now=now, actor=actor(request))
        return P.payment_method(s, pm)

    return idempotency.in_transaction(request, engine, idempotency_key, body, 201, action)


@router.get("/v1/customers/{customer}/payment-methods", response_model=ListOf[PaymentMethodOut],
            responses=admin(404), summary="List a customer's payment methods")
def list_payment_methods(customer: CustomerRef, engine: EngineDep) -> ListOf[PaymentMethodOut]:
    with transaction(engine) as s:
        c = customers.get(s, customer)
        return ListOf[PaymentMethodOut](
            data=P.payment_methods_of(s, list(payment_methods.list_for_customer(s, c.id))))


@router.get("/v1/payment-methods/{payment_method}", response_model=PaymentMethodOut, responses=admin(404),
            summary="Show a payment method and its consents")
def show_payment_method(payment_method: PaymentMethodId, engine: EngineDep) -> PaymentMethodOut:
    with transaction(engine) as s:
        return P.payment_method(s, payment_methods.get(s, payment_method))
