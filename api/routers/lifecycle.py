"""Lifecycle endpoints: plan changes (preview with a token that holds the amounts, change,
cancel a scheduled change), reactivation, edits (customers, plans, subscriptions) and the
money-back guarantee refund."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field
from sqlmodel import Session

from api import idempotency
from api import presenters as P
from api.auth import ADMIN, actor
from api.deps import EngineDep, GatewayDep, NowDep, SettingsDep
from api.idempotency import IdempotencyKey
from api.problems import problem_type
from api.responses import admin
from api.schemas import (
    CustomerOut,
    FirstChargeOut,
    Input,
    Metadata,
    PlanOut,
    Str20,
    Str30,
    Str40,
    Str64,
    Str200,
    Str320,
    Str1000,
    SubscriptionOut,
    clean_text,
)
from billing_engine import edits, first_charge, guarantees, plan_changes, reactivations, subscriptions
from billing_engine.db import transaction
from billing_engine.errors import PaymentDeclined

router = APIRouter(tags=["lifecycle"], dependencies=ADMIN)

SubscriptionId = Annotated[str, Path(min_length=1, max_length=40, description="Subscription id (sub_...)."), AfterValidator(clean_text)]
CustomerId = Annotated[str, Path(min_length=1, max_length=200, description="Customer id or external ref."), AfterValidator(clean_text)]
PlanRef = Annotated[str, Path(min_length=1, max_length=64, description="Plan code or id."), AfterValidator(clean_text)]


class PlanChangeRequest(Input):
    plan: Str64 | None = Field(None, description="The new plan (code or id); optional with preview_token.")
    when: Str20 | None = Field(None, description="now | period_end (default: now for an upgrade, period end otherwise).")
    proration_behavior: Str30 | None = Field(None, description="create_prorations (default) | always_invoice | none.")
    preview_token: Str1000 | None = Field(None, description="Make the change previewed, at its amounts (15 minutes).")


class PlanChangePreview(Input):
    plan: Str64
    when: Str20 | None = None
    proration_behavior: Str30 | None = None


class PreviewOut(BaseModel):
    subscription_id: str
    from_plan: str
    to_plan: str
    timing: str
    proration_behavior: str
    direction: str = Field(description="upgrade | downgrade | same_price (monthly-normalised price).")
    effective_at: datetime
    currency: str
    credit_minor: int = Field(description="Unused part of the current period (rounded once, half to even).")
    charge_minor: int = Field(description="The new plan for the rest of the period (or its whole new period).")
    net_minor: int
    amount_due_now_minor: int
    refund_now_minor: int
    new_period_start: datetime | None
    new_period_end: datetime | None
    unused_seconds: int | None
    period_seconds: int | None
    preview_token: str
    preview_expires_at: datetime


class PlanChangeOut(BaseModel):
    change: str = Field(description="changed | scheduled")
    preview: PreviewOut
    invoice_id: str | None
    refund_id: str | None
    subscription: SubscriptionOut


class ReactivateRequest(Input):
    plan: Str64 | None = None
    payment_method: Str40 | None = None
    payment_behavior: Str30 = "error_if_incomplete"


class SubscriptionUpdate(Input):
    metadata: Metadata | None = None


class CustomerUpdate(Input):
    email: Str320 | None = None
    name: Str200 | None = None
    metadata: Metadata | None = None
    default_payment_method: Str40 | None = Field(None, description="pm_...; an empty string clears it.")


class PlanTermsUpdate(Input):
    metadata: Metadata | None = None
    guarantee_days: int | None = Field(None, strict=True, ge=0, le=365,
                                       description="Money-back guarantee window in days (0: none).")


class GuaranteeRefundOut(BaseModel):
    subscription_id: str
    refund_ids: list[str]
    amount_minor: int
    currency: str
    deadline: datetime


def _sub_out(engine: Any, sub_id: str) -> SubscriptionOut:
    with transaction(engine) as s:
        return P.subscription(s, subscriptions.get(s, sub_id))


@router.post("/v1/subscriptions/{subscription}/plan-change/preview", response_model=PreviewOut,
             responses=admin(404, 409), summary="Exact amounts of a plan change, with a token that holds them")
def preview_plan_change(request: Request, subscription: SubscriptionId, body: PlanChangePreview, engine: EngineDep,
                        settings: SettingsDep, now: NowDep, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Changes nothing; with an Idempotency-Key a retry gets the first answer (the same token) back."""
    def action(s: Session) -> PreviewOut:
        pv = plan_changes.preview(s, subscriptions.get(s, subscription), body.plan, now=now, settings=settings,
                                  timing=body.when, behavior=body.proration_behavior)
        return PreviewOut(**pv.as_dict())

    return idempotency.in_transaction(request, engine, idempotency_key, body, 200, action)


@router.post("/v1/subscriptions/{subscription}/plan-change", response_model=PlanChangeOut,
             responses=admin(402, 404, 409), summary="Change the plan now (with proration) or at period end")
def change_plan(request: Request, subscription: SubscriptionId, body: PlanChangeRequest, engine: EngineDep,
                gateway: GatewayDep, settings: SettingsDep, now: NowDep,
                idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action() -> tuple[int, Any]:
        try:
            res = plan_changes.change(engine, gateway, subscription_id=subscription, plan=body.plan, now=now,
                                      settings=settings, timing=body.when, behavior=body.proration_behavior,
                                      preview_token=body.preview_token, actor=actor(request),
                                      schedule_days=tuple(settings.dunning_schedule_days))
        except PaymentDeclined as exc:  # remembered: a retry with the key gets the same answer
            return 402, {"type": problem_type(exc.code), "title": "Payment declined", "status": 402,
                         "detail": str(exc), "code": exc.code, "field": exc.field}
        return 200, PlanChangeOut(change=res.status, preview=PreviewOut(**res.preview.as_dict()),
                                  invoice_id=res.invoice_id, refund_id=res.refund_id,
                                  subscription=_sub_out(engine, subscription))

    return idempotency.after_effect_answer(request, engine, idempotency_key, body, action)


@router.post("/v1/subscriptions/{subscription}/plan-change/cancel", response_model=SubscriptionOut,
             responses=admin(404, 409), summary="Take back a plan change scheduled for period end")
def cancel_plan_change(request: Request, subscription: SubscriptionId, engine: EngineDep, now: NowDep,
                       idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> SubscriptionOut:
        sub = plan_changes.cancel_scheduled(s, subscriptions.get(s, subscription), now=now, actor=actor(request))
        return P.subscription(s, sub)

    return idempotency.in_transaction(request, engine, idempotency_key, None, 200, action)


@router.post("/v1/subscriptions/{subscription}/reactivate", status_code=201, response_model=SubscriptionOut,
             responses=admin(402, 404, 409), summary="Subscribe an ended customer again, linked to the old subscription")
def reactivate(request: Request, subscription: SubscriptionId, body: ReactivateRequest, engine: EngineDep,
               gateway: GatewayDep, settings: SettingsDep, now: NowDep,
               idempotency_key: IdempotencyKey = None) -> JSONResponse:
    behavior = first_charge.parse_behavior(body.payment_behavior)

    def action() -> tuple[int, Any]:
        res = reactivations.reactivate(engine, gateway, subscription_id=subscription, now=now, plan=body.plan,
                                       payment_method=body.payment_method, payment_behavior=behavior,
                                       actor=actor(request), schedule_days=tuple(settings.dunning_schedule_days))
        out = _sub_out(engine, res.subscription_id)
        out.first_charge = FirstChargeOut(**res.first_charge.as_dict())
        if res.failed:
            err = first_charge.declined_error(res)
            return 402, {"type": problem_type(err.code), "title": "Payment declined", "status": 402,
                         "detail": str(err), "code": err.code, "field": err.field,
                         "subscription": out.model_dump(mode="json")}
        return 201, out

    return idempotency.after_effect_answer(request, engine, idempotency_key, body, action)


@router.patch("/v1/subscriptions/{subscription}", response_model=SubscriptionOut, responses=admin(404),
              summary="Set a subscription's metadata")
def update_subscription(request: Request, subscription: SubscriptionId, body: SubscriptionUpdate,
                        engine: EngineDep, now: NowDep) -> SubscriptionOut:
    with transaction(engine) as s:
        sub = edits.update_subscription(s, subscription, now=now, metadata_=body.metadata, actor=actor(request))
        return P.subscription(s, sub)


@router.patch("/v1/customers/{customer}", response_model=CustomerOut, responses=admin(404, 409),
              summary="Change a customer's e-mail, name, metadata or default card (audited)")
def update_customer(request: Request, customer: CustomerId, body: CustomerUpdate, engine: EngineDep,
                    now: NowDep) -> CustomerOut:
    kw: dict[str, Any] = {}
    if "default_payment_method" in body.model_fields_set:
        kw["default_payment_method"] = body.default_payment_method or None
    with transaction(engine) as s:
        c = edits.update_customer(s, customer, now=now, email=body.email, name=body.name, metadata_=body.metadata,
                                  actor=actor(request), **kw)
        return P.customer(c)


@router.patch("/v1/plans/{plan}/terms", response_model=PlanOut, responses=admin(404),
              summary="Set a plan's metadata and money-back guarantee window")
def update_plan_terms(request: Request, plan: PlanRef, body: PlanTermsUpdate, engine: EngineDep,
                      now: NowDep) -> PlanOut:
    kw: dict[str, Any] = {}
    if "guarantee_days" in body.model_fields_set:
        kw["guarantee_days"] = body.guarantee_days or None
    with transaction(engine) as s:
        p = edits.update_plan(s, plan, now=now, metadata_=body.metadata, actor=actor(request), **kw)
        return P.plan_with_count(s, p)


@router.post("/v1/subscriptions/{subscription}/guarantee-refund", response_model=GuaranteeRefundOut,
             responses=admin(404, 409), summary="Money-back guarantee: refund everything paid and end it")
def guarantee_refund(request: Request, subscription: SubscriptionId, engine: EngineDep, gateway: GatewayDep,
                     now: NowDep, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action() -> GuaranteeRefundOut:
        res = guarantees.refund(engine, gateway, subscription_id=subscription, now=now, actor=actor(request))
        return GuaranteeRefundOut(subscription_id=res.subscription_id, refund_ids=res.refund_ids,
                                  amount_minor=res.amount_minor, currency=res.currency, deadline=res.deadline)

    return idempotency.after_effect(request, engine, idempotency_key, None, 200, action)
