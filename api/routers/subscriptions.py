"""``/v1/subscriptions``: subscribe, show, list (filters + cursor pages), cancel (now / at
period end, with kind and reason), undo a cancellation, change the card, mint a
customer cancel link."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator
from sqlmodel import Session

from api import idempotency
from api import presenters as P
from api.auth import ADMIN, actor
from api.deps import EngineDep, NowDep, SettingsDep
from api.idempotency import IdempotencyKey
from api.pagination import page
from api.responses import admin
from api.schemas import (
    CancelLinkOut,
    CancelOut,
    CancelRequest,
    ChangePaymentMethod,
    Limit,
    Page,
    SubscriptionCreate,
    SubscriptionDetail,
    SubscriptionOut,
    clean_optional,
    clean_text,
)
from billing_engine import audit, cancellations, customers, links, subscriptions
from billing_engine.db import transaction
from billing_engine.events import EventType

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"], dependencies=ADMIN)

SubscriptionId = Annotated[str, Path(min_length=1, max_length=40, description="Subscription id (sub_...)."), AfterValidator(clean_text)]


@router.post("", status_code=201, response_model=SubscriptionOut, responses=admin(404, 409),
             summary="Subscribe a customer to a plan (the first charge is made by the next run-cycle)")
def create_subscription(request: Request, body: SubscriptionCreate, engine: EngineDep, now: NowDep,
                        idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        c = customers.get(s, body.customer)
        sub = subscriptions.create(s, customer_id=c.id, plan_id=body.plan, payment_method_id=body.payment_method,
                                   now=now, start_at=body.start_at, trial_days=body.trial_days, actor=actor(request),
                                   coupon=body.coupon, paused=body.paused, resumes_at=body.resumes_at)
        return P.subscription(s, sub)

    return idempotency.in_transaction(request, engine, idempotency_key, body, 201, action)


@router.get("", response_model=Page[SubscriptionOut], responses=admin(),
            summary="List subscriptions (oldest first), filtered, in cursor pages")
def list_subscriptions(
    engine: EngineDep,
    status: Annotated[str | None, Query(max_length=20, description="incomplete | trialing | active | past_due | paused | canceled"), AfterValidator(clean_optional)] = None,
    customer: Annotated[str | None, Query(max_length=40, description="Customer id."), AfterValidator(clean_optional)] = None,
    plan: Annotated[str | None, Query(max_length=64, description="Plan code or id."), AfterValidator(clean_optional)] = None,
    limit: Annotated[Limit, Query()] = 100,
    after: Annotated[str | None, Query(max_length=40, description="Cursor: the next_cursor of the previous page."), AfterValidator(clean_optional)] = None,
) -> Page[SubscriptionOut]:
    with transaction(engine) as s:
        rows = subscriptions.list_subscriptions(s, status=status, customer_id=customer, plan_id=plan,
                                                limit=limit + 1, after=after)
        return page(rows, limit, lambda sub: P.subscription(s, sub))


@router.get("/{subscription}", response_model=SubscriptionDetail, responses=admin(404),
            summary="Show a subscription with its history (events)")
def show_subscription(subscription: SubscriptionId, engine: EngineDep) -> SubscriptionDetail:
    with transaction(engine) as s:
        return P.subscription_detail(s, subscriptions.get(s, subscription))


@router.post("/{subscription}/cancel", response_model=CancelOut, responses=admin(404, 409),
             summary="Cancel now or at period end (voluntary or involuntary, with a reason)")
def cancel_subscription(request: Request, subscription: SubscriptionId, body: CancelRequest, engine: EngineDep,
                        now: NowDep, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> CancelOut:
        sub = subscriptions.get(s, subscription)
        res = cancellations.cancel(s, sub, kind=body.kind, reason=body.reason, comment=body.comment,
                                   at_period_end=body.at_period_end, now=now, actor=actor(request))
        return P.cancel_result(s, res)

    return idempotency.in_transaction(request, engine, idempotency_key, body, 200, action)


@router.post("/{subscription}/undo-cancel", response_model=SubscriptionOut, responses=admin(404, 409),
             summary="Take back a cancellation before the paid period ends")
def undo_cancel(request: Request, subscription: SubscriptionId, engine: EngineDep, now: NowDep,
                idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        sub = cancellations.undo(s, subscriptions.get(s, subscription), now=now, actor=actor(request))
        return P.subscription(s, sub)

    return idempotency.in_transaction(request, engine, idempotency_key, None, 200, action)


@router.post("/{subscription}/payment-method", response_model=SubscriptionOut, responses=admin(404, 409),
             summary="Switch the card (a past-due subscription is retried on the next run-cycle)")
def change_payment_method(request: Request, subscription: SubscriptionId, body: ChangePaymentMethod,
                          engine: EngineDep, now: NowDep, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        sub = subscriptions.change_payment_method(s, subscriptions.get(s, subscription), body.payment_method,
                                                  now=now, actor=actor(request))
        return P.subscription(s, sub)

    return idempotency.in_transaction(request, engine, idempotency_key, body, 200, action)


@router.post("/{subscription}/cancel-link", status_code=201, response_model=CancelLinkOut,
             responses=admin(404, 409), summary="Mint the customer's signed one-click cancel link")
def cancel_link(request: Request, subscription: SubscriptionId, engine: EngineDep, settings: SettingsDep,
                now: NowDep) -> CancelLinkOut:
    with transaction(engine) as s:
        sub = subscriptions.get(s, subscription)
    url = links.make_cancel_url(settings, sub.id, now)
    expires_at = links.expires_at(settings, now)
    audit.record(engine, EventType.CANCEL_LINK_MINTED, at=now, actor=actor(request), subscription_id=sub.id,
                 customer_id=sub.customer_id, payload={"expires_at": expires_at})  # never the link: it cancels
    return CancelLinkOut(subscription_id=sub.id, url=url, expires_at=expires_at)
