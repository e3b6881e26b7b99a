"""Lifecycle endpoints: plan changes (preview with a token that holds the amounts, change,
cancel a scheduled change), reactivation, edits (customers, plans, subscriptions) and the
money-back guarantee refund."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
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


PREVIEW_EXAMPLE: dict[str, Any] = {
    "subscription_id": "sub_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "from_plan": "basic-monthly", "to_plan": "pro-monthly",
    "timing": "now", "proration_behavior": "create_prorations", "direction": "upgrade",
    "effective_at": "2026-02-01T09:00:00Z", "currency": "USD", "credit_minor": 850, "charge_minor": 2450,
    "net_minor": 1600, "amount_due_now_minor": 1600, "refund_now_minor": 0,
    "new_period_start": "2026-02-01T09:00:00Z", "new_period_end": "2026-02-15T09:00:00Z",
    "unused_seconds": 1209600, "period_seconds": 2678400, "preview_token": "eyJzIjoic3ViXzAxSkg4WjdRMlcz.Z6s2kA.x7QkN2p...",
    "preview_expires_at": "2026-02-01T09:15:00Z",
}
METADATA_UPDATE = ("Key-value pairs to merge into the stored ones: at most 50 keys of at most 40 characters, values of "
                   "at most 500 characters; an empty value or null deletes the key.")


class PlanChangeRequest(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"plan": "pro-monthly", "when": "now", "proration_behavior": "create_prorations"},
        {"preview_token": "eyJzIjoic3ViXzAxSkg4WjdRMlcz.Z6s2kA.x7QkN2p..."},
    ]})

    plan: Str64 | None = Field(None, description="The new plan (code or id); optional with preview_token.")
    when: Str20 | None = Field(None, description="now | period_end (default: now for an upgrade, period end otherwise).")
    proration_behavior: Str30 | None = Field(None, description="create_prorations (default) | always_invoice | none.")
    preview_token: Str1000 | None = Field(None, description="Make the change previewed, at its amounts (15 minutes).")


class PlanChangePreview(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"plan": "pro-monthly", "when": "now", "proration_behavior": "create_prorations"}]})

    plan: Str64 = Field(description="The plan to preview a change to (code or id).")
    when: Str20 | None = Field(None, description="now | period_end (default: now for an upgrade, period end "
                               "otherwise).")
    proration_behavior: Str30 | None = Field(None, description="create_prorations (default) | always_invoice | none "
                                             "(no credit or charge for the rest of the period).")


class PreviewOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [PREVIEW_EXAMPLE]})

    subscription_id: str = Field(description="The subscription (sub_...) the change is for.")
    from_plan: str = Field(description="Code of the current plan.")
    to_plan: str = Field(description="Code of the new plan.")
    timing: str = Field(description="now | period_end: when the change takes effect.")
    proration_behavior: str = Field(description="create_prorations | always_invoice | none.")
    direction: str = Field(description="upgrade | downgrade | same_price (monthly-normalised price).")
    effective_at: datetime = Field(description="When the new plan takes effect (UTC, ISO-8601).")
    currency: str = Field(description="ISO-4217 currency of every *_minor amount here (the new plan's).")
    credit_minor: int = Field(description="Unused part of the current period (rounded once, half to even).")
    charge_minor: int = Field(description="The new plan for the rest of the period (or its whole new period).")
    net_minor: int = Field(description="charge_minor - credit_minor in minor units: positive is owed by the customer, "
                           "negative is owed to them; 0 at period end.")
    amount_due_now_minor: int = Field(description="What is charged at once, in minor units (a positive net; else 0).")
    refund_now_minor: int = Field(description="What is refunded at once, in minor units (a negative net unless "
                                  "proration_behavior is none; else 0).")
    new_period_start: datetime | None = Field(description="Start of the prorated period (UTC, ISO-8601); null at "
                                              "period end.")
    new_period_end: datetime | None = Field(description="End of the prorated period (UTC, ISO-8601); null at period "
                                            "end.")
    unused_seconds: int | None = Field(description="Seconds left in the current period, the proration numerator; "
                                       "null at period end.")
    period_seconds: int | None = Field(description="Length of the current period in seconds, the proration "
                                       "denominator; null at period end.")
    preview_token: str = Field(description="Pass as preview_token to make exactly this change at these amounts.")
    preview_expires_at: datetime = Field(description="When preview_token stops working (UTC, ISO-8601; 15 minutes).")


class PlanChangeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "change": "changed", "preview": PREVIEW_EXAMPLE, "invoice_id": "in_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "refund_id": None, "subscription": {"id": "sub_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "status": "active",
                                            "plan_code": "pro-monthly", "amount_minor": 4900, "currency": "USD"},
    }]})

    change: str = Field(description="changed | scheduled")
    preview: PreviewOut = Field(description="The amounts and timing the change was made at.")
    invoice_id: str | None = Field(description="The proration invoice (in_...) charged now; null when nothing was "
                                   "charged.")
    refund_id: str | None = Field(description="The refund (re_...) of a negative net; null when nothing was "
                                  "refunded.")
    subscription: SubscriptionOut = Field(description="The subscription after the change.")


class ReactivateRequest(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"plan": "basic-monthly", "payment_method": "pm_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
         "payment_behavior": "error_if_incomplete"}]})

    plan: Str64 | None = Field(None, description="Plan code or id of the new subscription (default: the ended "
                               "one's plan).")
    payment_method: Str40 | None = Field(None, description="Payment method id (pm_...) with recorded consent "
                                         "(default: the ended subscription's card, if still active).")
    payment_behavior: Str30 = Field("error_if_incomplete", description="On a declined first charge: "
                                    "error_if_incomplete (402, nothing kept) | allow_incomplete (402, the new "
                                    "subscription stays incomplete for a retry).")


class SubscriptionUpdate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"metadata": {"crm_deal": "D-4711", "obsolete_key": None}}]})

    metadata: Metadata | None = Field(None, description=METADATA_UPDATE)


class CustomerUpdate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"email": "ada@example.com", "name": "Ada King", "metadata": {"segment": "smb"},
         "default_payment_method": "pm_01JH8Z7Q2W3E4R5T6Y7U8I9O0P"}]})

    email: Str320 | None = Field(None, description="New e-mail address for receipts, reminders and links.")
    name: Str200 | None = Field(None, description="The customer's new full name.")
    metadata: Metadata | None = Field(None, description=METADATA_UPDATE)
    default_payment_method: Str40 | None = Field(None, description="pm_...; an empty string clears it.")


class PlanTermsUpdate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"metadata": {"feature_set": "basic"}, "guarantee_days": 30, "customer_can_pause": True}]})

    metadata: Metadata | None = Field(None, description=METADATA_UPDATE)
    guarantee_days: int | None = Field(None, strict=True, ge=0, le=365,
                                       description="Money-back guarantee window in days (0: none).")
    customer_can_pause: bool | None = Field(None, strict=True, description="Let the customer pause and resume "
                                            "from the self-service page.")


class GuaranteeRefundOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "subscription_id": "sub_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "refund_ids": ["re_01JH8Z7Q2W3E4R5T6Y7U8I9O0P"],
        "amount_minor": 1700, "currency": "USD", "deadline": "2026-02-14T09:00:00Z"}]})

    subscription_id: str = Field(description="The refunded subscription (sub_...).")
    refund_ids: list[str] = Field(description="The refunds (re_...) made, one per paid charge.")
    amount_minor: int = Field(description="Total refunded, in minor units of currency.")
    currency: str = Field(description="ISO-4217 currency of amount_minor.")
    deadline: datetime = Field(description="End of the money-back guarantee window: the first payment plus the "
                               "plan's guarantee_days (UTC, ISO-8601).")


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
        sub = plan_changes.cancel_scheduled(s, subscriptions.get_for_update(s, subscription), now=now, actor=actor(request))
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
              summary="Set a plan's metadata, money-back guarantee window and customer pause")
def update_plan_terms(request: Request, plan: PlanRef, body: PlanTermsUpdate, engine: EngineDep,
                      now: NowDep) -> PlanOut:
    kw: dict[str, Any] = {}
    if "guarantee_days" in body.model_fields_set:
        kw["guarantee_days"] = body.guarantee_days or None
    if body.customer_can_pause is not None:
        kw["customer_can_pause"] = body.customer_can_pause
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
