"""Lifecycle pricing (docs/lifecycle-pricing.md): ``POST /v1/plans/{plan}/reprice`` (a new price
with notice), ``GET /v1/plans/{plan}/price-changes``, ``PUT /v1/plans/{plan}/discount-cap``;
``/v1/coupons`` (create, list, show, deactivate); ``POST /v1/subscriptions/{id}/pause`` /
``resume``, ``POST`` / ``DELETE /v1/subscriptions/{id}/coupon``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field
from sqlmodel import Session

from api import idempotency
from api import presenters as P
from api.auth import ADMIN, actor
from api.deps import EngineDep, NowDep, SettingsDep
from api.idempotency import IdempotencyKey
from api.responses import admin
from api.schemas import Input, ListOf, Str64, Str200, SubscriptionOut, UtcDateTime, clean_text
from billing_engine import coupons, pauses, pricing, subscriptions
from billing_engine.db import transaction

router = APIRouter(tags=["lifecycle pricing"], dependencies=ADMIN)

PlanRef = Annotated[str, Path(min_length=1, max_length=64, description="Plan id (plan_...) or code."), AfterValidator(clean_text)]
CouponRef = Annotated[str, Path(min_length=1, max_length=64, description="Coupon code or id."), AfterValidator(clean_text)]
SubscriptionId = Annotated[str, Path(min_length=1, max_length=40, description="Subscription id (sub_...)."), AfterValidator(clean_text)]


class RepriceIn(Input):
    amount_minor: int = Field(strict=True, ge=0, le=10**12, description="The new price in minor units.")
    notice_days: int | None = Field(None, strict=True, description="Notice before existing subscribers pay it "
                                    "(default BILLING_PRICE_NOTICE_DAYS; at least 7, at most 365).")


class PriceChangeOut(BaseModel):
    id: str
    plan_id: str
    old_amount_minor: int
    amount_minor: int
    currency: str
    notice_days: int
    announced_at: datetime
    effective_at: datetime
    subscribers_notified: int
    actor: str


class DiscountCapIn(Input):
    max_discount_percent: int | None = Field(strict=True, description="Percent (0-90); null: the default setting.")


class DiscountCapOut(BaseModel):
    plan: str
    max_discount_percent: int
    own_cap: int | None


class CouponIn(Input):
    code: Str64 = Field(description="Code customers type (case-insensitive, stored upper-case).")
    name: Str200 = ""
    percent_off: int | None = Field(None, strict=True, description="1-100 (or amount_off_minor).")
    amount_off_minor: int | None = Field(None, strict=True, description="Fixed amount off, with currency.")
    currency: Annotated[str, Field(max_length=3)] | None = None
    duration: Annotated[str, Field(max_length=10)] = Field("once", description="once | repeating | forever.")
    duration_periods: int | None = Field(None, strict=True, description="repeating: how many periods.")
    plans: list[Str64] = Field(default_factory=list, max_length=100, description="Only these plan codes (empty: all).")
    max_redemptions: int | None = Field(None, strict=True)
    redeem_by: UtcDateTime | None = None
    once_per_customer: bool = Field(True, strict=True)


class CouponOut(BaseModel):
    id: str
    code: str
    name: str
    kind: str
    percent_off: int | None
    amount_off_minor: int | None
    currency: str | None
    duration: str
    duration_periods: int | None
    plans: list[str]
    max_redemptions: int | None
    times_redeemed: int
    redeem_by: datetime | None
    once_per_customer: bool
    active: bool
    created_at: datetime


class PauseIn(Input):
    at_period_end: bool = Field(False, strict=True, description="Pause when the paid period ends (default: now).")
    resumes_at: UtcDateTime | None = Field(None, description="Resume by itself at this instant.")


class ApplyCouponIn(Input):
    coupon: Str64 = Field(description="Coupon code or id.")


def _write(request: Request, engine: Any, key: str | None, body: BaseModel | None, status: int,
           action: Any) -> JSONResponse:
    return idempotency.in_transaction(request, engine, key, body, status, action)


@router.post("/v1/plans/{plan}/reprice", status_code=201, response_model=PriceChangeOut, responses=admin(404, 409),
             summary="Change a plan's price with notice (existing subscribers from their first renewal after it)")
def reprice(request: Request, plan: PlanRef, body: RepriceIn, engine: EngineDep, now: NowDep, settings: SettingsDep,
            idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> PriceChangeOut:
        res = pricing.reprice(s, plan, amount_minor=body.amount_minor, notice_days=body.notice_days, now=now,
                              default_notice_days=settings.price_notice_days, actor=actor(request))
        return PriceChangeOut(**pricing.summary(res.change))

    return _write(request, engine, idempotency_key, body, 201, action)


@router.get("/v1/plans/{plan}/price-changes", response_model=ListOf[PriceChangeOut], responses=admin(404),
            summary="A plan's price changes, oldest first")
def price_changes(plan: PlanRef, engine: EngineDep) -> ListOf[PriceChangeOut]:
    with transaction(engine) as s:
        return ListOf[PriceChangeOut](data=[PriceChangeOut(**pricing.summary(c)) for c in pricing.history(s, plan)])


@router.put("/v1/plans/{plan}/discount-cap", response_model=DiscountCapOut, responses=admin(404),
            summary="The largest discount a coupon may give on this plan")
def discount_cap(request: Request, plan: PlanRef, body: DiscountCapIn, engine: EngineDep, now: NowDep,
                 idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> DiscountCapOut:
        p = coupons.set_plan_cap(s, plan, body.max_discount_percent, now=now, actor=actor(request))
        return DiscountCapOut(plan=p.code, max_discount_percent=coupons.cap_percent(p), own_cap=p.max_discount_percent)

    return _write(request, engine, idempotency_key, body, 200, action)


@router.post("/v1/coupons", status_code=201, response_model=CouponOut, responses=admin(404, 409),
             summary="Create a coupon")
def create_coupon(request: Request, body: CouponIn, engine: EngineDep, now: NowDep,
                  idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> CouponOut:
        c = coupons.create(s, code=body.code, name=body.name, percent_off=body.percent_off,
                           amount_off_minor=body.amount_off_minor, currency=body.currency, duration=body.duration,
                           duration_periods=body.duration_periods, plan_codes=body.plans,
                           max_redemptions=body.max_redemptions, redeem_by=body.redeem_by,
                           once_per_customer=body.once_per_customer, now=now, actor=actor(request))
        return CouponOut(**coupons.summary(c))

    return _write(request, engine, idempotency_key, body, 201, action)


@router.get("/v1/coupons", response_model=ListOf[CouponOut], responses=admin(), summary="List coupons")
def list_coupons(engine: EngineDep,
                 active: Annotated[bool | None, Query(description="Only active (true) or inactive (false).")] = None
                 ) -> ListOf[CouponOut]:
    with transaction(engine) as s:
        return ListOf[CouponOut](data=[CouponOut(**coupons.summary(c)) for c in coupons.list_coupons(s, active=active)])


@router.get("/v1/coupons/{coupon}", response_model=CouponOut, responses=admin(404), summary="Show a coupon")
def show_coupon(coupon: CouponRef, engine: EngineDep) -> CouponOut:
    with transaction(engine) as s:
        return CouponOut(**coupons.summary(coupons.get(s, coupon)))


@router.post("/v1/coupons/{coupon}/deactivate", response_model=CouponOut, responses=admin(404),
             summary="No new redemptions (existing ones keep their discount)")
def deactivate_coupon(request: Request, coupon: CouponRef, engine: EngineDep, now: NowDep,
                      idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> CouponOut:
        return CouponOut(**coupons.summary(coupons.deactivate(s, coupon, now=now, actor=actor(request))))

    return _write(request, engine, idempotency_key, None, 200, action)


@router.post("/v1/subscriptions/{subscription_id}/pause", response_model=SubscriptionOut, responses=admin(404, 409),
             summary="Pause collection now or at period end, optionally until a date")
def pause(request: Request, subscription_id: SubscriptionId, body: PauseIn, engine: EngineDep, now: NowDep,
          idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        sub = pauses.pause(s, subscriptions.get(s, subscription_id), now=now, at_period_end=body.at_period_end,
                           resumes_at=body.resumes_at, actor=actor(request))
        return P.subscription(s, sub)

    return _write(request, engine, idempotency_key, body, 200, action)


@router.post("/v1/subscriptions/{subscription_id}/resume", response_model=SubscriptionOut, responses=admin(404, 409),
             summary="Resume a paused subscription (or cancel a scheduled pause)")
def resume(request: Request, subscription_id: SubscriptionId, engine: EngineDep, now: NowDep,
           idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        return P.subscription(s, pauses.resume(s, subscriptions.get(s, subscription_id), now=now, actor=actor(request)))

    return _write(request, engine, idempotency_key, None, 200, action)


@router.post("/v1/subscriptions/{subscription_id}/coupon", response_model=SubscriptionOut, responses=admin(404, 409),
             summary="Apply a coupon to a subscription (discounts the next invoices written)")
def apply_coupon(request: Request, subscription_id: SubscriptionId, body: ApplyCouponIn, engine: EngineDep,
                 now: NowDep, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        sub = subscriptions.get(s, subscription_id)
        coupons.redeem(s, sub, body.coupon, now=now, actor=actor(request))
        return P.subscription(s, sub)

    return _write(request, engine, idempotency_key, body, 200, action)


@router.delete("/v1/subscriptions/{subscription_id}/coupon", response_model=SubscriptionOut,
               responses=admin(404, 409), summary="Remove a subscription's coupon")
def remove_coupon(request: Request, subscription_id: SubscriptionId, engine: EngineDep, now: NowDep,
                  idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        sub = subscriptions.get(s, subscription_id)
        coupons.remove(s, sub, now=now, actor=actor(request))
        return P.subscription(s, sub)

    return _write(request, engine, idempotency_key, None, 200, action)
