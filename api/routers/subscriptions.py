"""``/v1/subscriptions``: subscribe, show, list (filters + cursor pages), cancel (now / at
period end, with kind and reason), undo a cancellation, change the card, mint a
customer cancel link."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator
from sqlmodel import Session

from api import idempotency
from api import presenters as P
from api.auth import ADMIN, actor
from api.deps import EngineDep, GatewayDep, NowDep, SettingsDep
from api.fastjson import plain_response
from api.idempotency import IdempotencyKey
from api.problems import problem_type
from api.ranges import RangesDep
from api.responses import admin
from api.schemas import (
    CancelLinkOut,
    CancelOut,
    CancelRequest,
    ChangePaymentMethod,
    FirstChargeOut,
    Limit,
    Page,
    SubscriptionCreate,
    SubscriptionDetail,
    SubscriptionOut,
    clean_optional,
    clean_text,
)
from billing_engine import audit, cancellations, first_charge, links, subscriptions
from billing_engine.db import statement_reads, transaction
from billing_engine.events import EventType
from billing_engine.listing import Ranges
from billing_engine.models import SubscriptionStatus

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"], dependencies=ADMIN)

MintKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=255,
    description="Accepted and not needed: minting is harmless to repeat (a retry mints a second link, "
    "equally valid; both are in the audit log). The answer is never stored, because the link is a "
    "capability that cancels the subscription.")]
SubscriptionId = Annotated[str, Path(min_length=1, max_length=40, description="Subscription id (sub_...)."), AfterValidator(clean_text)]


@router.post("", status_code=201, response_model=SubscriptionOut, responses=admin(402, 404, 409, 503),
             summary="Subscribe a customer to a plan and charge the first period at once")
def create_subscription(request: Request, body: SubscriptionCreate, engine: EngineDep, gateway: GatewayDep,
                        settings: SettingsDep, now: NowDep, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """201 with ``first_charge.status`` succeeded (active), or deferred / trialing / scheduled
    (the run-cycle charges later). A declined card is a 402 problem naming the subscription and
    the decline code (``error_if_incomplete``: nothing kept; ``allow_incomplete``: it stays
    incomplete for a retry). No answer from the gateway is a 503, never a decline. A retry with
    the same Idempotency-Key replays the first answer; the same request without one pays the
    incomplete subscription (or is refused: already subscribed) and never charges twice."""
    behavior = first_charge.parse_behavior(body.payment_behavior)

    def action() -> tuple[int, Any]:
        res = first_charge.subscribe(
            engine, gateway, customer=body.customer, plan=body.plan, payment_method=body.payment_method, now=now,
            start_at=body.start_at, trial_days=body.trial_days, payment_behavior=behavior,
            defer_first_charge=body.defer_first_charge, metadata_=body.metadata, actor=actor(request),
            schedule_days=tuple(settings.dunning_schedule_days), coupon=body.coupon, paused=body.paused,
            resumes_at=body.resumes_at)
        with transaction(engine) as s:
            out = P.subscription(s, subscriptions.get(s, res.subscription_id))
        out.first_charge = FirstChargeOut(**res.first_charge.as_dict())
        if res.failed:
            err = first_charge.declined_error(res)
            return 402, {"type": problem_type(err.code), "title": "Payment declined", "status": 402,
                         "detail": str(err), "code": err.code, "field": err.field,
                         "subscription": out.model_dump(mode="json")}
        return 201, out

    return idempotency.after_effect_answer(request, engine, idempotency_key, body, action)


@router.get("", response_model=Page[SubscriptionOut], responses=admin(404),
            summary="List subscriptions (oldest first), filtered, in cursor pages")
def list_subscriptions(
    engine: EngineDep,
    status: Annotated[str | None, Query(max_length=20, description=" | ".join(SubscriptionStatus)), AfterValidator(clean_optional)] = None,
    customer: Annotated[str | None, Query(max_length=40, description="Customer id or external reference (404 if none)."), AfterValidator(clean_optional)] = None,
    plan: Annotated[str | None, Query(max_length=64, description="Plan code or id (404 if none)."), AfterValidator(clean_optional)] = None,
    limit: Annotated[Limit, Query()] = 100,
    after: Annotated[str | None, Query(max_length=40, description="Cursor: the next_cursor of the previous page."), AfterValidator(clean_optional)] = None,
    ranges: RangesDep = Ranges(),
) -> Response:
    with transaction(statement_reads(engine)) as s:  # a page in a fixed number of queries, no ORM objects
        rows = subscriptions.list_summaries(s, status=status, customer_id=customer, plan_id=plan,
                                            limit=limit + 1, after=after, ranges=ranges)
    has_more = len(rows) > limit
    items = [P.subscription_plain(fields) for fields in rows[:limit]]
    # the bytes response_model would send, encoded once, without a model per row:
    return plain_response(Page[SubscriptionOut], {"data": items, "has_more": has_more,
                                                  "next_cursor": str(items[-1]["id"]) if has_more and items else None})


@router.get("/{subscription}", response_model=SubscriptionDetail, responses=admin(404),
            summary="Show a subscription with its history (events)")
def show_subscription(subscription: SubscriptionId, engine: EngineDep) -> Response:
    with transaction(statement_reads(engine)) as s:
        out = P.subscription_detail_plain(s, subscriptions.show_summary(s, subscription))
    return plain_response(SubscriptionDetail, out)  # the bytes response_model would send, encoded once


@router.post("/{subscription}/cancel", response_model=CancelOut, responses=admin(404, 409),
             summary="Cancel now or at period end (voluntary or involuntary, with a reason)")
def cancel_subscription(request: Request, subscription: SubscriptionId, body: CancelRequest, engine: EngineDep,
                        now: NowDep, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> CancelOut:
        sub = subscriptions.get_for_update(s, subscription)
        res = cancellations.cancel(s, sub, kind=body.kind, reason=body.reason, comment=body.comment,
                                   at_period_end=body.at_period_end, now=now, actor=actor(request))
        return P.cancel_result(s, res)

    return idempotency.in_transaction(request, engine, idempotency_key, body, 200, action)


@router.post("/{subscription}/undo-cancel", response_model=SubscriptionOut, responses=admin(404, 409),
             summary="Take back a cancellation before the paid period ends")
def undo_cancel(request: Request, subscription: SubscriptionId, engine: EngineDep, now: NowDep,
                idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        sub = cancellations.undo(s, subscriptions.get_for_update(s, subscription), now=now, actor=actor(request))
        return P.subscription(s, sub)

    return idempotency.in_transaction(request, engine, idempotency_key, None, 200, action)


@router.post("/{subscription}/payment-method", response_model=SubscriptionOut, responses=admin(404, 409),
             summary="Switch the card (a past-due subscription is retried on the next run-cycle)")
def change_payment_method(request: Request, subscription: SubscriptionId, body: ChangePaymentMethod,
                          engine: EngineDep, now: NowDep, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        sub = subscriptions.change_payment_method(s, subscriptions.get_for_update(s, subscription), body.payment_method,
                                                  now=now, actor=actor(request))
        return P.subscription(s, sub)

    return idempotency.in_transaction(request, engine, idempotency_key, body, 200, action)


@router.post("/{subscription}/cancel-link", status_code=201, response_model=CancelLinkOut,
             responses=admin(404, 409), summary="Mint the customer's signed one-click cancel link")
def cancel_link(request: Request, subscription: SubscriptionId, engine: EngineDep, settings: SettingsDep,
                now: NowDep, idempotency_key: MintKey = None) -> CancelLinkOut:
    with transaction(engine) as s:
        sub = subscriptions.get(s, subscription)
    url = links.make_cancel_url(settings, sub.id, now)
    expires_at = links.expires_at(settings, now)
    audit.record(engine, EventType.CANCEL_LINK_MINTED, at=now, actor=actor(request), subscription_id=sub.id,
                 customer_id=sub.customer_id, payload={"expires_at": expires_at})  # never the link: it cancels
    return CancelLinkOut(subscription_id=sub.id, url=url, expires_at=expires_at)
