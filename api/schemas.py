"""Request and response bodies of the admin API (pydantic).

Money is always ``amount_minor`` (integer minor units) plus ``currency`` (ISO-4217), with
``amount`` as a display string in major units ("17.00"). Times are ISO-8601 UTC; inputs
must carry an offset (naive times are refused). Strings refuse NUL characters and
unpaired surrogates, which no database column can store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from billing_engine.money import format_minor

MAX_AMOUNT = 10**12
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, tzinfo=UTC)


def _clean_text(v: str) -> str:
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no unpaired surrogates)") from None
    return v


def _utc(v: datetime) -> datetime:
    try:
        u = v.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("is out of range") from None
    if not EARLIEST <= u <= LATEST:
        raise ValueError("must be between 1970-01-01 and 2999-12-31")
    return u


Str10 = Annotated[str, Field(max_length=10), AfterValidator(_clean_text)]
Str20 = Annotated[str, Field(max_length=20), AfterValidator(_clean_text)]
Str30 = Annotated[str, Field(max_length=30), AfterValidator(_clean_text)]
Str40 = Annotated[str, Field(max_length=40), AfterValidator(_clean_text)]
Str50 = Annotated[str, Field(max_length=50), AfterValidator(_clean_text)]
Str64 = Annotated[str, Field(max_length=64), AfterValidator(_clean_text)]
Str80 = Annotated[str, Field(max_length=80), AfterValidator(_clean_text)]
Str100 = Annotated[str, Field(max_length=100), AfterValidator(_clean_text)]
Str200 = Annotated[str, Field(max_length=200), AfterValidator(_clean_text)]
Str255 = Annotated[str, Field(max_length=255), AfterValidator(_clean_text)]
Str320 = Annotated[str, Field(max_length=320), AfterValidator(_clean_text)]
Str500 = Annotated[str, Field(max_length=500), AfterValidator(_clean_text)]
Str1000 = Annotated[str, Field(max_length=1000), AfterValidator(_clean_text)]
Str2000 = Annotated[str, Field(max_length=2000), AfterValidator(_clean_text)]
Str100K = Annotated[str, Field(max_length=100000), AfterValidator(_clean_text)]


def _iso_text(v: object) -> object:
    if isinstance(v, bool | int | float):
        raise ValueError("must be an ISO-8601 date-time string such as 2026-01-31T10:00:00Z")
    return v


UtcDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_utc)]
Amount = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT, description="Minor units (cents for USD, yen for JPY).")]
PositiveAmount = Annotated[int, Field(strict=True, ge=1, le=MAX_AMOUNT, description="Minor units.")]
Currency = Annotated[str, Field(min_length=1, max_length=3, description="ISO-4217 code.", examples=["USD"]),
                     AfterValidator(_clean_text)]


class Input(BaseModel):
    """Request bodies: unknown fields are refused; integers and booleans are strict ("5" is no integer)."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- errors


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. consent.ip_address.")
    location: str = Field(description="body | query | path | header")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "type": "urn:billing:problem:validation_error", "title": "Invalid request", "status": 422,
        "detail": "currency: unknown currency 'XYZ' (expected an ISO-4217 code such as USD)",
        "code": "validation_error", "field": "currency",
    }]})

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None
    errors: list[FieldError] | None = None


# --------------------------------------------------------------------------- pages

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool = Field(description="True when more items follow; pass next_cursor as `after`.")
    next_cursor: str | None = Field(description="Cursor for the next page (the last id of this one).")


class ListOf(BaseModel, Generic[T]):
    data: list[T]


# --------------------------------------------------------------------------- plans


class PlanCreate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "code": "basic-monthly", "name": "Basic (monthly)", "amount_minor": 1700, "currency": "USD",
        "interval": "month", "interval_count": 1, "trial_days": 0,
    }]})

    code: Str64 = Field(description="Unique: 1-64 lower-case letters, digits, '_', '.', '-'.")
    name: Str200
    amount_minor: Amount
    currency: Currency
    interval: Str10 = Field("month", description="day | week | month | year")
    interval_count: int = Field(1, strict=True, ge=1, le=365, description="Bill every N intervals.")
    trial_days: int = Field(0, strict=True, ge=0, le=730)
    cancel_immediately: bool = Field(False, strict=True, description="A cancel ends access at once instead of at period end.")
    reminder_days: int | None = Field(None, strict=True, ge=0, le=60, description="Renewal reminder N days before each charge.")
    tier: Str30 | None = None
    receipts: Literal["each", "off", "monthly"] = Field(
        "each", description="each (one receipt per charge) | off | monthly (one digest a month).")


class PlanUpdate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Basic", "active": False}]})

    name: Str200 | None = None
    active: bool | None = Field(None, strict=True)
    amount_minor: Amount | None = Field(None, description="Only while the plan has no subscribers.")
    currency: Currency | None = Field(None, description="Only while the plan has no subscribers.")
    interval: Str10 | None = Field(None, description="Only while the plan has no subscribers.")
    interval_count: int | None = Field(None, strict=True, ge=1, le=365, description="Only while the plan has no subscribers.")


class PlanOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "plan_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "code": "basic-monthly", "name": "Basic (monthly)",
        "amount_minor": 1700, "currency": "USD", "amount": "17.00", "interval": "month", "interval_count": 1,
        "trial_days": 0, "active": True, "cancel_immediately": False, "reminder_days": None, "tier": None,
        "subscriber_count": 0, "created_at": "2026-01-15T09:00:00Z",
    }]})

    id: str
    code: str
    name: str
    amount_minor: int
    currency: str
    amount: str
    interval: str
    interval_count: int
    trial_days: int
    active: bool
    cancel_immediately: bool
    reminder_days: int | None
    tier: str | None
    receipts: str = Field("each", description="Receipt e-mails: each (one per charge) | off | monthly (a digest).")
    subscriber_count: int | None = None
    created_at: datetime
    metadata: dict[str, str] = Field(default_factory=dict, description="Your own key-value pairs stored with the "
                                     "plan (strings; at most 50 keys).")
    guarantee_days: int | None = Field(None, description="Money-back guarantee window (days after the first payment).")
    customer_can_pause: bool = Field(False, description="The customer may pause and resume from the self-service "
                                     "page (admins always may).")


# --------------------------------------------------------------------------- customers


class CustomerCreate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "email": "ada@example.com", "name": "Ada Lovelace", "external_ref": "crm-42",
    }]})

    email: Str320
    name: Str200 = ""
    external_ref: Str200 | None = Field(None, description="Your own id for this customer (unique).")
    gateway_customer_id: Str100 | None = Field(None, description="Stripe customer id (cus_...).")
    locale: Str30 | None = Field(None, description="Language of e-mails and pages (en, ru, he, hu ...); "
                                 "unset: BILLING_DEFAULT_LOCALE.")


class CustomerLocale(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"locale": "hu"}]})

    locale: Str30 | None = Field(description="en, ru, he, hu ... (null: the default from settings).")


class CustomerOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "cus_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "email": "ada@example.com", "name": "Ada Lovelace",
        "external_ref": "crm-42", "gateway_customer_id": None, "created_at": "2026-01-15T09:00:00Z",
    }]})

    id: str
    email: str
    name: str
    external_ref: str | None
    gateway_customer_id: str | None
    locale: str | None = Field(None, description="Language of the customer's e-mails and pages (en, ru, he, hu ...); "
                               "null: BILLING_DEFAULT_LOCALE.")
    created_at: datetime
    updated_at: datetime = Field(description="The last change (filter lists with updated_gte / updated_lt).")
    metadata: dict[str, str] = Field(default_factory=dict, description="Your own key-value pairs stored with the "
                                     "customer (strings; at most 50 keys).")
    default_payment_method_id: str | None = Field(None, description="The card (pm_...) new subscriptions use when "
                                                  "none is given; null: none set.")


# --------------------------------------------------------------------------- payment methods


class ConsentIn(Input):
    accepted_at: UtcDateTime | None = Field(None, description="When the customer agreed (default: now).")
    ip_address: Str64 = Field(description="IP address the customer agreed from.")
    user_agent: Str1000 = Field(description="Browser user agent at consent.")
    terms_version: Str50
    terms_text: Str100K | None = Field(None, description="The exact terms text shown.")
    terms_sha256: Str64 | None = Field(None, description="SHA-256 of the terms, when the text is kept elsewhere.")
    amount_minor: PositiveAmount = Field(description="Amount agreed per period, in minor units.")
    currency: Currency
    interval: Str10 = "month"
    interval_count: int = Field(1, strict=True, ge=1, le=365)
    channel: Str30 = Field("web", description="web | email | phone | api | cli | import | in_person")
    plan_id: Str64 | None = Field(None, description="Plan id or code the consent was given for.")
    gateway_setup_id: Str100 | None = Field(None, description="The gateway's SetupIntent id (seti_...).")


class PaymentMethodCreate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "token": "pm_card_visa",
        "consent": {"accepted_at": "2026-01-15T08:55:00Z", "ip_address": "203.0.113.7",
                    "user_agent": "Mozilla/5.0", "terms_version": "2026-01",
                    "terms_text": "You authorise us to charge this card each month until you cancel.",
                    "amount_minor": 1700, "currency": "USD", "interval": "month", "channel": "web"},
    }]})

    token: Str255 = Field(description="Gateway payment-method token (pm_...). Never a card number.")
    consent: ConsentIn


class ConsentOut(BaseModel):
    id: str
    accepted_at: datetime
    ip_address: str
    user_agent: str
    channel: str
    terms_version: str
    terms_sha256: str
    amount_minor: int
    currency: str
    interval: str
    interval_count: int
    plan_id: str | None
    revoked_at: datetime | None


class PaymentMethodOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "pm_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "customer_id": "cus_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "gateway": "fake", "token": "pm_card_visa", "brand": "visa", "last4": "4242", "exp_month": 12,
        "exp_year": 2034, "status": "active", "created_at": "2026-01-15T09:00:00Z", "consents": [],
    }]})

    id: str
    customer_id: str
    gateway: str
    token: str
    brand: str
    last4: str
    exp_month: int | None
    exp_year: int | None
    status: str
    created_at: datetime
    consents: list[ConsentOut] = []


# --------------------------------------------------------------------------- subscriptions


Metadata = Annotated[dict[Str40, Str500 | None], Field(
    max_length=50, description="Key-value pairs: at most 50 keys of at most 40 characters, values of at most "
    "500 characters (in an update, an empty value or null deletes the key).")]


class FirstChargeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "succeeded", "invoice_id": "in_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "attempt_id": "pay_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "amount_minor": 1700, "currency": "USD",
        "decline_code": None, "decline_kind": None, "message": None, "kept_incomplete": False,
    }]})

    status: str = Field(description="succeeded | declined | requires_action | unknown | deferred | trialing | scheduled")
    invoice_id: str | None = Field(None, description="The first invoice (in_...); null when nothing was billed yet "
                                   "(trialing, deferred, scheduled).")
    attempt_id: str | None = Field(None, description="The charge attempt of the first invoice (pay_...); null when "
                                   "no charge was made.")
    amount_minor: int | None = Field(None, description="Amount of the first charge in minor units (with currency).")
    currency: str | None = Field(None, description="ISO-4217 currency of the first charge, upper case.")
    decline_code: str | None = Field(None, description="declined: the gateway's decline code (insufficient_funds, "
                                     "lost_card ...).")
    decline_kind: str | None = Field(None, description="declined: soft (may succeed on retry) | hard (will not).")
    message: str | None = Field(None, description="The processor's human-readable reason, if any.")
    kept_incomplete: bool = Field(False, description="True: the first charge failed and the subscription stays "
                                  "incomplete for a retry (payment_behavior allow_incomplete).")


class SubscriptionCreate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "customer": "cus_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "plan": "basic-monthly",
        "payment_method": "pm_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
    }]})

    customer: Str200 = Field(description="Customer id (cus_...) or external ref.")
    plan: Str64 = Field(description="Plan code or id.")
    payment_method: Str40 | None = Field(
        None, description="Payment method id (pm_...) with recorded consent (default: the customer's default card).")
    start_at: UtcDateTime | None = Field(None, description="Start time (default: now).")
    trial_days: int | None = Field(None, strict=True, ge=0, le=730, description="Override the plan's trial length.")
    payment_behavior: Str30 = Field(
        "error_if_incomplete", description="On a declined first charge: error_if_incomplete (402, nothing kept) | "
        "allow_incomplete (402, the subscription stays incomplete for a retry).")
    defer_first_charge: bool = Field(
        False, strict=True, description="Leave the first charge to the next run-cycle (bulk loads).")
    metadata: Metadata | None = Field(None, description="Your own key-value pairs to store with the subscription: at "
                                      "most 50 keys of at most 40 characters, values of at most 500 characters.")
    coupon: Str64 | None = Field(None, description="A coupon code to apply at once.")
    paused: bool = Field(False, strict=True, description="Start paused: no charge until resumed.")
    resumes_at: UtcDateTime | None = Field(None, description="Start paused until this instant.")


class CancelRequest(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"kind": "voluntary", "reason": "too_expensive", "at_period_end": True},
        {"kind": "involuntary", "reason": "dispute", "at_period_end": False},
    ]})

    kind: Str20 = Field("voluntary", description="voluntary (the customer's choice) | involuntary.")
    reason: Str80 | None = Field(None, description="Reason code, e.g. too_expensive; involuntary: "
                                    "payment_failed, hard_decline:<code>, dispute, card_expired.")
    comment: Str2000 | None = None
    at_period_end: bool | None = Field(
        None, strict=True, description="true: keep access until the period ends; false: end now; null: the plan's default.")


class ChangePaymentMethod(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"payment_method": "pm_01JH8Z7Q2W3E4R5T6Y7U8I9O0P"}]})

    payment_method: Str40 = Field(description="New payment method id (with consent).")


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "sub_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "status": "active", "customer_id": "cus_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "customer_email": "ada@example.com", "plan_id": "plan_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "plan_code": "basic-monthly", "amount_minor": 1700, "currency": "USD", "amount": "17.00",
        "payment_method_id": "pm_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "billing_anchor": "2026-01-15T09:00:00Z",
        "current_period_start": "2026-01-15T09:00:00Z", "current_period_end": "2026-02-15T09:00:00Z",
        "trial_end": None, "cancel_at_period_end": False, "canceled_at": None, "ended_at": None,
        "cancellation_kind": None, "cancellation_reason": None, "cancellation_comment": None,
        "canceled_by": None, "next_retry_at": None, "failed_attempts": 0,
        "next_charge_at": "2026-02-15T09:00:00Z", "next_charge_amount_minor": 1700,
        "created_at": "2026-01-15T09:00:00Z",
    }]})

    id: str
    status: str
    customer_id: str
    customer_email: str
    plan_id: str
    plan_code: str
    amount_minor: int
    currency: str
    amount: str
    payment_method_id: str | None
    billing_anchor: datetime
    current_period_start: datetime
    current_period_end: datetime
    trial_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    cancellation_kind: str | None
    cancellation_reason: str | None
    cancellation_comment: str | None
    canceled_by: str | None
    next_retry_at: datetime | None
    failed_attempts: int
    next_charge_at: datetime | None
    next_charge_amount_minor: int | None
    paused_at: datetime | None = Field(None, description="When the subscription was paused (UTC, ISO-8601); null "
                                       "while not paused. No charge is made while paused.")
    resumes_at: datetime | None = Field(None, description="When a paused subscription resumes by itself (UTC, "
                                        "ISO-8601); null: paused until resumed by hand, or not paused.")
    pause_at_period_end: bool = Field(False, description="True: a pause is scheduled for current_period_end (the "
                                      "paid period runs out first).")
    created_at: datetime
    updated_at: datetime = Field(description="The last change (filter lists with updated_gte / updated_lt).")
    metadata: dict[str, str] = Field(default_factory=dict, description="Your own key-value pairs stored with the subscription (strings; at most 50 keys).")
    reactivated_from: str | None = Field(None, description="The ended subscription (sub_...) this one reactivated; "
                                         "null for a new subscription.")
    scheduled_plan_id: str | None = Field(None, description="A plan change that takes effect at period end.")
    first_charge: FirstChargeOut | None = Field(None, description="On subscribe: what happened to the first charge.")


class EventOut(BaseModel):
    id: int
    type: str
    at: datetime
    actor: str
    payload: dict[str, Any]


class SubscriptionDetail(SubscriptionOut):
    events: list[EventOut]


class CancelOut(SubscriptionOut):
    effective_at: datetime = Field(description="When access ends.")
    changed: bool = Field(description="False when the same cancellation was already in place.")


class CancelLinkOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "subscription_id": "sub_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "url": "http://127.0.0.1:8000/c/eyJzdWIiOi...", "expires_at": "2026-03-16T09:00:00Z"}]})

    subscription_id: str
    url: str
    expires_at: datetime | None


# --------------------------------------------------------------------------- invoices, attempts, refunds


class PaymentAttemptOut(BaseModel):
    id: str
    invoice_id: str
    subscription_id: str
    payment_method_id: str | None
    attempt_number: int
    idempotency_key: str
    gateway: str
    status: str
    amount_minor: int
    currency: str
    amount: str
    gateway_charge_id: str | None
    decline_code: str | None
    decline_kind: str | None
    message: str | None
    created_at: datetime
    completed_at: datetime | None


class RefundOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "re_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "invoice_id": "in_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "payment_attempt_id": "pay_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "amount_minor": 500, "currency": "USD",
        "amount": "5.00", "status": "succeeded", "reason": "requested_by_customer",
        "idempotency_key": "refund:in_01JH8Z7Q2W3E4R5T6Y7U8I9O0P:1", "gateway_refund_id": "re_fake_1",
        "created_at": "2026-01-15T09:00:00Z", "succeeded_at": "2026-01-15T09:00:00Z"}]})

    id: str
    invoice_id: str
    payment_attempt_id: str
    amount_minor: int
    currency: str
    amount: str
    status: str
    reason: str | None
    idempotency_key: str
    gateway_refund_id: str | None
    created_at: datetime
    succeeded_at: datetime | None


class InvoiceOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "in_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "subscription_id": "sub_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "customer_id": "cus_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "plan_id": "plan_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "period_index": 0, "period_start": "2026-01-15T09:00:00Z", "period_end": "2026-02-15T09:00:00Z",
        "amount_minor": 1700, "currency": "USD", "amount": "17.00", "status": "paid", "attempt_count": 1,
        "amount_paid_minor": 1700, "amount_refunded_minor": 0, "created_at": "2026-01-15T09:00:00Z",
        "paid_at": "2026-01-15T09:00:00Z", "closed_at": "2026-01-15T09:00:00Z"}]})

    id: str
    subscription_id: str
    customer_id: str
    plan_id: str
    period_index: int
    period_start: datetime
    period_end: datetime
    amount_minor: int
    currency: str
    amount: str
    status: str
    attempt_count: int
    amount_paid_minor: int
    amount_refunded_minor: int
    created_at: datetime
    paid_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime = Field(description="The last change (filter lists with updated_gte / updated_lt).")
    gross_minor: int | None = Field(None, description="The plan price in force for the period, in minor units "
                                    "(amount_minor = gross_minor - discount_minor); null on invoices from before "
                                    "discounts existed.")
    discount_minor: int = Field(0, description="A coupon's discount on this invoice, in minor units (0: none).")
    redemption_id: str | None = Field(None, description="The coupon redemption that gave the discount; null: none.")


class InvoiceDetail(InvoiceOut):
    attempts: list[PaymentAttemptOut]
    refunds: list[RefundOut]


class RefundCreate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"invoice_id": "in_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "amount_minor": 500, "currency": "USD",
         "reason": "requested_by_customer"},
        {"invoice_id": "in_01JH8Z7Q2W3E4R5T6Y7U8I9O0P"},
    ]})

    invoice_id: Str40
    amount_minor: PositiveAmount | None = Field(None, description="Minor units; omit for everything still refundable.")
    currency: Currency | None = Field(None, description="If given, must be the invoice's currency.")
    reason: Str40 | None = Field(None, description="requested_by_customer | duplicate | fraudulent")


# --------------------------------------------------------------------------- run-cycle, health


class RunCycleRequest(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"dry_run": True}, {"at": "2026-02-15T09:00:00Z", "limit": 100, "send_emails": False}]})

    at: UtcDateTime | None = Field(None, description="Run as of this instant (default: now).")
    dry_run: bool = Field(False, strict=True, description="List what would be charged; change nothing.")
    limit: int | None = Field(None, strict=True, ge=1, le=1_000_000, description="Process at most N subscriptions.")
    send_emails: bool = Field(True, strict=True, description="Deliver queued e-mails after the run.")
    simulate: bool = Field(False, strict=True, description="Allow an `at` later than the clock with a real gateway "
                           "(a simulation: renewals are charged before they are due).")


class WouldCharge(BaseModel):
    subscription_id: str
    customer_email: str
    plan: str
    action: str = Field(description="charge | reconcile | end_at_period_end | cancel_involuntary | skip | pause | resume")
    reason: str | None = Field(default=None, description="involuntary reason, or why it is skipped")
    message: str | None = None
    amount_minor: int
    currency: str
    amount: str
    status: str
    due_at: datetime | None
    gross_minor: int | None = Field(default=None, description="charge: the price in force for the period",
                                    examples=[1700])
    discount_minor: int | None = Field(default=None, description="charge: a coupon's discount (amount = gross - "
                                       "discount)", examples=[340])
    coupon: str | None = Field(default=None, description="charge: the code of the coupon that discounts it; null: "
                               "none.", examples=["WELCOME20"])


class CycleSummaryOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "at": "2026-02-15T09:00:00Z", "dry_run": False, "due": 1, "charged": 1, "succeeded": 1,
        "declined_soft": 0, "declined_hard": 0, "unknown": 0, "reconciled": 0, "canceled_involuntary": 0,
        "cancellations_effective": 0, "blocked": 0, "reminders_queued": 0, "notifications_sent": 0,
        "collected": {"USD": 1700}, "collected_display": {"USD": "17.00"}, "would_charge": [], "errors": []}]})

    at: datetime
    dry_run: bool
    due: int
    charged: int
    succeeded: int
    declined_soft: int
    declined_hard: int
    unknown: int
    reconciled: int
    canceled_involuntary: int
    cancellations_effective: int
    blocked: int
    reminders_queued: int
    waiting_for_reminder: int = Field(0, description="Due subscriptions not charged yet because their renewal "
                                      "reminder has not gone out long enough before (charged in a later run).")
    digests_queued: int = Field(0, description="Monthly receipt digests queued by this run (plans with receipts "
                                "monthly).")
    notifications_sent: int
    collected: dict[str, int]
    collected_display: dict[str, str]
    would_charge: list[WouldCharge]
    errors: list[str]
    total_due: int = 0
    unresolved: int = Field(default=0, description="attempts an error left unresolved (reconciled next run)")
    refunded_after_cancel: int = Field(default=0, description="charges that landed after a cancellation: refunded")
    held_by_other_workers: int = Field(default=0, description="due subscriptions another live worker holds")
    paused: int = Field(default=0, description="scheduled pauses that took effect (not charged)")
    resumed: int = Field(default=0, description="paused subscriptions resumed on their resume date")
    stopped: str | None = Field(default=None, description="why the run stopped early: gateway_unreachable | "
                                "gateway_configuration | database | stop_requested")
    stop_message: str | None = None
    exit_code: int = Field(default=0, description="what `billing run-cycle` exits with for this run")
    timings: dict[str, float] = Field(default_factory=dict)


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok", "database": "ok"}]})

    status: str
    database: str


def display(amount_minor: int, currency: str) -> str:
    try:
        return format_minor(amount_minor, currency)
    except Exception:  # a currency that left ISO-4217 after the row was written
        return str(amount_minor)


# --------------------------------------------------------------------------- path and query parameters


def clean_text(v: str) -> str:
    """Path / query strings: no NUL, no unpaired surrogates."""
    return _clean_text(v)


def clean_optional(v: str | None) -> str | None:
    return None if v is None else _clean_text(v)


Limit = Annotated[int, Field(ge=1, le=1000, description="Page size (1-1000).")]
