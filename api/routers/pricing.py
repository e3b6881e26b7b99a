"""Lifecycle pricing (docs/lifecycle-pricing.md): ``POST /v1/plans/{plan}/reprice`` (a new price
with notice), ``GET /v1/plans/{plan}/price-changes``, ``PUT /v1/plans/{plan}/discount-cap``;
``/v1/coupons`` (create, list, show, deactivate); ``POST /v1/subscriptions/{id}/pause`` /
``resume``, ``POST`` / ``DELETE /v1/subscriptions/{id}/coupon``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
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
                                    "(default BILLING_PRICE_NOTICE_DAYS; at least 7, at most 365).", examples=[30])


class PriceChangeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "pc_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "plan_id": "plan_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "old_amount_minor": 1700, "amount_minor": 1900, "currency": "USD", "notice_days": 30,
        "announced_at": "2026-02-15T09:00:00Z", "effective_at": "2026-03-17T09:00:00Z",
        "subscribers_notified": 120, "actor": "admin:api:ops",
    }]})

    id: str = Field(description="The price change's id.")
    plan_id: str = Field(description="The repriced plan's id (plan_...).")
    old_amount_minor: int = Field(description="The price before the change, in minor units of currency.")
    amount_minor: int = Field(description="The new price, in minor units of currency.")
    currency: str = Field(description="ISO-4217 currency of both prices, upper case.")
    notice_days: int = Field(description="Days of notice existing subscribers were given.")
    announced_at: datetime = Field(description="When the change was announced (UTC, ISO-8601).")
    effective_at: datetime = Field(description="From this instant (UTC, ISO-8601) existing subscribers pay the new "
                                   "price, at their first renewal after it; new subscribers pay it at once.")
    subscribers_notified: int = Field(description="Subscribers e-mailed about the new price.")
    actor: str = Field(description="Who made the change: admin:api:<token name>, admin:cli:<user> ...")


class DiscountCapIn(Input):
    max_discount_percent: int | None = Field(strict=True, description="Percent (0-90); null: the default setting.",
                                             examples=[50])


class DiscountCapOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"plan": "basic-monthly", "max_discount_percent": 50, "own_cap": 50}]})

    plan: str = Field(description="The plan's code.")
    max_discount_percent: int = Field(description="The largest discount (percent of the price, 0-90) a coupon may "
                                      "give on this plan: its own cap, else the default setting.")
    own_cap: int | None = Field(description="The cap set on this plan itself (percent); null: it uses the default "
                                "setting.")


class CouponIn(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"code": "WELCOME20", "name": "20% off the first 3 months", "percent_off": 20, "duration": "repeating",
         "duration_periods": 3, "plans": ["basic-monthly"], "max_redemptions": 500,
         "redeem_by": "2026-06-30T23:59:59Z", "once_per_customer": True},
        {"code": "FIVEOFF", "amount_off_minor": 500, "currency": "USD", "duration": "once"},
    ]})

    code: Str64 = Field(description="Code customers type (case-insensitive, stored upper-case).")
    name: Str200 = Field("", description="Display name shown to customers (e.g. on receipts).")
    percent_off: int | None = Field(None, strict=True, description="1-100 (or amount_off_minor).")
    amount_off_minor: int | None = Field(None, strict=True, description="Fixed amount off, with currency.")
    currency: Annotated[str, Field(max_length=3)] | None = Field(
        None, description="ISO-4217 currency of amount_off_minor (required with it; coupons in a currency apply "
        "only to plans in that currency).")
    duration: Annotated[str, Field(max_length=10)] = Field("once", description="once | repeating | forever.")
    duration_periods: int | None = Field(None, strict=True, description="repeating: how many periods.")
    plans: list[Str64] = Field(default_factory=list, max_length=100, description="Only these plan codes (empty: all).")
    max_redemptions: int | None = Field(None, strict=True, description="How many times the coupon can be redeemed "
                                        "in all (null: no limit).")
    redeem_by: UtcDateTime | None = Field(None, description="Last instant the coupon can be redeemed (UTC, "
                                          "ISO-8601 with an offset); null: no end.")
    once_per_customer: bool = Field(True, strict=True, description="True: each customer can redeem it only once.")


class CouponOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "cpn_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "code": "WELCOME20", "name": "20% off the first 3 months",
        "kind": "percent", "percent_off": 20, "amount_off_minor": None, "currency": None, "duration": "repeating",
        "duration_periods": 3, "plans": ["basic-monthly"], "max_redemptions": 500, "times_redeemed": 42,
        "redeem_by": "2026-06-30T23:59:59Z", "once_per_customer": True, "active": True,
        "created_at": "2026-01-15T09:00:00Z",
    }]})

    id: str = Field(description="The coupon's id.")
    code: str = Field(description="The code customers type (stored upper-case, matched case-insensitively).")
    name: str = Field(description="Display name shown to customers.")
    kind: str = Field(description="percent (percent_off) | amount (amount_off_minor in currency).")
    percent_off: int | None = Field(description="Percent off the price (1-100); null for an amount coupon.")
    amount_off_minor: int | None = Field(description="Fixed amount off each discounted charge, in minor units of "
                                         "currency; null for a percent coupon.")
    currency: str | None = Field(description="ISO-4217 currency of amount_off_minor; null for a percent coupon.")
    duration: str = Field(description="once (first charge only) | repeating (duration_periods charges) | forever.")
    duration_periods: int | None = Field(description="repeating: how many periods it discounts; null otherwise.")
    plans: list[str] = Field(description="Plan codes it applies to (empty: every plan).")
    max_redemptions: int | None = Field(description="How many times it can be redeemed in all (null: no limit).")
    times_redeemed: int = Field(description="How many times it has been redeemed so far.")
    redeem_by: datetime | None = Field(description="Last instant it can be redeemed (UTC, ISO-8601); null: no end.")
    once_per_customer: bool = Field(description="True: each customer can redeem it only once.")
    active: bool = Field(description="False once archived: no new redemptions (existing discounts run on).")
    created_at: datetime = Field(description="When the coupon was created (UTC, ISO-8601).")


class PauseIn(Input):
    at_period_end: bool = Field(False, strict=True, description="Pause when the paid period ends (default: now).")
    resumes_at: UtcDateTime | None = Field(None, description="Resume by itself at this instant (UTC, ISO-8601 with "
                                           "an offset); null: paused until resumed.",
                                           examples=["2026-04-01T00:00:00Z"])


class ApplyCouponIn(Input):
    coupon: Str64 = Field(description="Coupon code or id.", examples=["WELCOME20"])


def _write(request: Request, engine: Any, key: str | None, body: BaseModel | None, status: int,
           action: Any) -> JSONResponse:
    return idempotency.in_transaction(request, engine, key, body, status, action)


@router.post("/v1/plans/{plan}/reprice", status_code=201, response_model=PriceChangeOut, responses=admin(404, 409),
             summary="Change a plan's price with notice (existing subscribers from their first renewal after it)")
def reprice(request: Request, plan: PlanRef, body: RepriceIn, engine: EngineDep, now: NowDep, settings: SettingsDep,
            idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> PriceChangeOut:
        res = pricing.reprice(s, plan, amount_minor=body.amount_minor, notice_days=body.notice_days, now=now,
                              default_notice_days=settings.price_notice_days, actor=actor(request),
                              default_locale=settings.default_locale)
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
        sub = pauses.pause(s, subscriptions.get_for_update(s, subscription_id), now=now, at_period_end=body.at_period_end,
                           resumes_at=body.resumes_at, actor=actor(request))
        return P.subscription(s, sub)

    return _write(request, engine, idempotency_key, body, 200, action)


@router.post("/v1/subscriptions/{subscription_id}/resume", response_model=SubscriptionOut, responses=admin(404, 409),
             summary="Resume a paused subscription (or cancel a scheduled pause)")
def resume(request: Request, subscription_id: SubscriptionId, engine: EngineDep, now: NowDep,
           idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        return P.subscription(s, pauses.resume(s, subscriptions.get_for_update(s, subscription_id), now=now, actor=actor(request)))

    return _write(request, engine, idempotency_key, None, 200, action)


@router.post("/v1/subscriptions/{subscription_id}/coupon", response_model=SubscriptionOut, responses=admin(404, 409),
             summary="Apply a coupon to a subscription (discounts the next invoices written)")
def apply_coupon(request: Request, subscription_id: SubscriptionId, body: ApplyCouponIn, engine: EngineDep,
                 now: NowDep, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        sub = subscriptions.get_for_update(s, subscription_id)
        coupons.redeem(s, sub, body.coupon, now=now, actor=actor(request))
        return P.subscription(s, sub)

    return _write(request, engine, idempotency_key, body, 200, action)


@router.delete("/v1/subscriptions/{subscription_id}/coupon", response_model=SubscriptionOut,
               responses=admin(404, 409), summary="Remove a subscription's coupon")
def remove_coupon(request: Request, subscription_id: SubscriptionId, engine: EngineDep, now: NowDep,
                  idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        sub = subscriptions.get_for_update(s, subscription_id)
        coupons.remove(s, sub, now=now, actor=actor(request))
        return P.subscription(s, sub)

    return _write(request, engine, idempotency_key, None, 200, action)
