"""Database tables (SQLModel / SQLAlchemy 2).

Every constraint an invariant of DESIGN.md relies on lives here: one invoice per
(subscription, period), one attempt per idempotency key, one row per webhook event,
one e-mail per dedupe key. Money columns are BIGINT minor units + a currency code;
times are timezone-aware UTC (:class:`UTCDateTime`). Ids are prefixed, time-sortable,
unguessable strings (``sub_01J...``).

Nothing a customer or finance relies on is deleted: there are no ON DELETE CASCADEs
and the engine issues no DELETE on these tables.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"




_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # every 10-bit value as two digits
_SHIFTS = tuple(range(120, -1, -10))


class _Entropy(threading.local):
    """Random bits for ids, read from the operating system 128 ids at a time, per thread.
    ``os.urandom`` lets go of the interpreter lock for its system call, and in a busy
    multi-threaded worker every release is a thread switch (the run-cycle makes three ids
    per renewal: that was ~75 us of wall time per id in its settle thread)."""

    def __init__(self) -> None:
        self.pool: list[int] = []


_ENTROPY = _Entropy()


def _fresh_entropy_after_fork() -> None:  # a forked child must never reuse its parent's bits
    global _ENTROPY
    _ENTROPY = _Entropy()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_entropy_after_fork)


def _random80() -> int:
    pool = _ENTROPY.pool
    if not pool:
        raw = os.urandom(1280)
        pool.extend(int.from_bytes(raw[i:i + 10], "big") for i in range(0, 1280, 10))
    return pool.pop()


def new_id(prefix: str) -> str:
    """``prefix_`` + a 26-char ULID: 48 bits of milliseconds + 80 random bits, in
    Crockford's base32 (130 bits = 13 pairs of digits, the top 2 bits zero).

    Two digits per table lookup: the batch paths make three ids per renewal, and
    ``base64.b32encode`` (pure Python) cost twice as much."""
    n = (int(time.time() * 1000) << 80) | _random80()
    return f"{prefix}_{''.join([_PAIRS[(n >> s) & 1023] for s in _SHIFTS])}"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; naive values are refused on the way in."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:
            return value
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        """One small function per value instead of TypeDecorator's generic wrapper (the
        batch paths read tens of thousands of timestamps): PostgreSQL sessions run in
        UTC (db.make_engine), so the common value goes back untouched."""
        parse = self.impl_instance.result_processor(dialect, coltype)
        convert = self.process_result_value
        fromisoformat = datetime.fromisoformat
        if parse is not None:  # SQLite: text in (naive UTC), parsed first -- one function, not TypeDecorator's two

            def parse_utc(value: Any) -> Any:
                if value is None:
                    return None
                if value.__class__ is str and len(value) == 26 and value[10] == " ":  # SQLAlchemy's own format
                    return fromisoformat(value + "+00:00")  # aware in one step: 5x cheaper than .replace(tzinfo=)
                parsed: Any = parse(value)  # a datetime: value is not None
                if parsed.tzinfo is None:
                    return parsed.replace(tzinfo=UTC)
                return convert(parsed, dialect)

            return parse_utc

        def process(value: Any) -> Any:
            if value is None or value.tzinfo is UTC:
                return value
            return convert(value, dialect)

        return process


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def _money(**kw: Any) -> Any:
    return Field(sa_type=BigInteger, **kw)


# --------------------------------------------------------------------------- enums


class PaymentMethodStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    DETACHED = "detached"


class SubscriptionStatus(StrEnum):
    INCOMPLETE = "incomplete"  # created, first charge not yet made (due at once)
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"  # a renewal failed softly; dunning retries scheduled
    PAUSED = "paused"  # collection paused (billing_engine/pauses.py): no charges, no reminders, not churn
    CANCELED = "canceled"  # ended; terminal
    # the first charge at subscribe time was declined and the caller asked to keep nothing
    # (payment_behavior=error_if_incomplete): never a subscriber, not churn; terminal
    INCOMPLETE_EXPIRED = "incomplete_expired"


LIVE_STATUSES = (
    SubscriptionStatus.INCOMPLETE,
    SubscriptionStatus.TRIALING,
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.PAST_DUE,
    SubscriptionStatus.PAUSED,
)


# nothing more happens to these (no charge, no cancellation): ended, or never started
ENDED_STATUSES = (SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED)


class CancellationKind(StrEnum):
    VOLUNTARY = "voluntary"  # the customer (or an admin on their behalf) chose to leave
    INVOLUNTARY = "involuntary"  # dunning exhausted, hard decline, expired card, dispute


class CancellationReason(StrEnum):
    # voluntary: the 8 common survey codes (asked after cancelling, never blocking)
    TOO_EXPENSIVE = "too_expensive"
    MISSING_FEATURES = "missing_features"
    SWITCHED_SERVICE = "switched_service"
    UNUSED = "unused"
    CUSTOMER_SERVICE = "customer_service"
    TOO_COMPLEX = "too_complex"
    LOW_QUALITY = "low_quality"
    OTHER = "other"
    # involuntary
    PAYMENT_FAILED = "payment_failed"  # dunning schedule exhausted
    # hard declines are recorded as "hard_decline:<code>"
    DISPUTE = "dispute"
    CARD_EXPIRED = "card_expired"




class InvoiceStatus(StrEnum):
    OPEN = "open"  # awaiting payment (attempts may be in flight / scheduled)
    PAID = "paid"
    UNCOLLECTIBLE = "uncollectible"  # dunning gave up
    VOID = "void"  # canceled before any money was due


class InvoiceKind(StrEnum):
    PERIOD = "period"
    PRORATION = "proration"


class AttemptStatus(StrEnum):
    PENDING = "pending"  # written and committed before the gateway call
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # declined (see decline_code / decline_kind)
    UNKNOWN = "unknown"  # sent, no answer: reconcile before anything new
    REQUIRES_ACTION = "requires_action"


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class NotificationStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"  # gave up after max attempts (still kept, visible to admins)


# --------------------------------------------------------------------------- tables


class Customer(SQLModel, table=True):
    __tablename__ = "customers"

    id: str = Field(default_factory=lambda: new_id("cus"), primary_key=True, max_length=40)
    email: str = Field(max_length=320, index=True)
    name: str = Field(default="", max_length=200)
    external_ref: str | None = Field(default=None, max_length=200, unique=True)
    gateway_customer_id: str | None = Field(default=None, max_length=100)
    # the language of the customer's e-mails and pages (e.g. "en", "ru", "he", "hu");
    # None: the default from settings (BILLING_DEFAULT_LOCALE)
    locale: str | None = Field(default=None, max_length=20)
    created_at: datetime = _ts(default_factory=utcnow)
    # the last change (business time where the change knows it; any other UPDATE stamps
    # the wall clock through onupdate)
    updated_at: datetime = _ts(default_factory=utcnow, index=True, sa_column_kwargs={"onupdate": utcnow})
    external_id: str | None = Field(default=None, max_length=200, unique=True, index=True)  # import: "stripe:cus_..."
    # key-value pairs for the merchant's own use (JSON object; limits in billing_engine/metadata.py)
    metadata_json: str | None = Field(default=None, sa_type=Text)
    # the card new subscriptions use when none is given (one of the customer's own)
    default_payment_method_id: str | None = Field(default=None, max_length=40)


class PaymentMethod(SQLModel, table=True):
    """A gateway token for a card. Never a card number: brand/last4/expiry only."""

    __tablename__ = "payment_methods"
    # Stripe test shorthands (pm_card_visa) are shared between customers, so the
    # token is unique per customer, not globally.
    __table_args__ = (
        UniqueConstraint("customer_id", "gateway", "token", name="uq_payment_methods_customer_token"),
    )

    id: str = Field(default_factory=lambda: new_id("pm"), primary_key=True, max_length=40)
    customer_id: str = Field(foreign_key="customers.id", index=True, max_length=40)
    gateway: str = Field(max_length=20)
    token: str = Field(max_length=255)
    brand: str = Field(default="unknown", max_length=30)
    last4: str = Field(default="", max_length=4)
    exp_month: int | None = None
    exp_year: int | None = None
    status: str = Field(default=PaymentMethodStatus.ACTIVE, max_length=20)
    created_at: datetime = _ts(default_factory=utcnow)
    detached_at: datetime | None = _ts(default=None)
    external_id: str | None = Field(default=None, max_length=200, unique=True, index=True)  # import: "stripe:cus_..."


class Consent(SQLModel, table=True):
    """Off-session charge consent: who, when, from where, exact terms, amount, interval.

    Kept at least 3 years after the subscription ends (California AB 2863); the engine
    never deletes one.
    """

    __tablename__ = "consents"

    id: str = Field(default_factory=lambda: new_id("cns"), primary_key=True, max_length=40)
    customer_id: str = Field(foreign_key="customers.id", index=True, max_length=40)
    payment_method_id: str = Field(foreign_key="payment_methods.id", index=True, max_length=40)
    plan_id: str | None = Field(default=None, foreign_key="plans.id", max_length=40)
    accepted_at: datetime = _ts()
    ip_address: str = Field(max_length=64)
    user_agent: str = Field(max_length=1000)
    channel: str = Field(max_length=30)  # web | email | phone | api | cli | import
    terms_version: str = Field(max_length=50)
    terms_sha256: str = Field(max_length=64)
    terms_text: str | None = Field(default=None, sa_type=Text)
    amount_minor: int = _money()
    currency: str = Field(max_length=3)
    interval: str = Field(max_length=10)
    interval_count: int = Field(default=1)
    gateway_setup_id: str | None = Field(default=None, max_length=100)  # seti_...
    created_at: datetime = _ts(default_factory=utcnow)
    revoked_at: datetime | None = _ts(default=None)
    external_id: str | None = Field(default=None, max_length=200, unique=True, index=True)  # import: "stripe:cus_..."


class Plan(SQLModel, table=True):
    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint("amount_minor >= 0", name="ck_plans_amount_nonneg"),
        CheckConstraint("interval_count >= 1", name="ck_plans_interval_count"),
    )

    id: str = Field(default_factory=lambda: new_id("plan"), primary_key=True, max_length=40)
    code: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    amount_minor: int = _money()
    currency: str = Field(max_length=3)
    interval: str = Field(max_length=10)  # day | week | month | year
    interval_count: int = Field(default=1)
    trial_days: int = Field(default=0)
    active: bool = Field(default=True)
    cancel_immediately: bool = Field(default=False)  # cancel ends access at once
    reminder_days: int | None = Field(default=None)  # days before renewal; None = default
    tier: str | None = Field(default=None, max_length=30)  # e.g. basic | vip (reporting)
    # the largest discount a coupon may give on this plan, in percent (None: the setting)
    max_discount_percent: int | None = Field(default=None)
    # receipts per charge: each | off | monthly (one digest a month; see docs/customer-communications.md)
    receipts: str = Field(default="each", max_length=10)
    created_at: datetime = _ts(default_factory=utcnow)
    external_id: str | None = Field(default=None, max_length=200, unique=True, index=True)  # import: "stripe:cus_..."
    metadata_json: str | None = Field(default=None, sa_type=Text)
    # money-back guarantee: a full refund on request within this many days of the first payment
    guarantee_days: int | None = Field(default=None)
    # the customer may pause (and resume) from the self-service page (pauses.py); admins always may
    customer_can_pause: bool = Field(default=False, sa_column_kwargs={"server_default": text("false")})


class Subscription(SQLModel, table=True):
    __tablename__ = "subscriptions"
    __table_args__ = (
        Index("ix_subscriptions_due", "status", "current_period_end"),
        Index("ix_subscriptions_retry", "status", "next_retry_at"),
        Index("ix_subscriptions_ended", "ended_at"),
        Index("ix_subscriptions_activated", "activated_at", "ended_at"),
        Index("ix_subscriptions_updated", "updated_at"),
        Index("ix_subscriptions_resume", "status", "resumes_at"),
        Index("ix_subscriptions_created", "created_at"),  # yearly summaries: sign-up anniversaries
        CheckConstraint(
            "cancellation_kind IS NULL OR cancellation_kind IN ('voluntary','involuntary')",
            name="ck_subscriptions_cancellation_kind",
        ),
    )

    id: str = Field(default_factory=lambda: new_id("sub"), primary_key=True, max_length=40)
    customer_id: str = Field(foreign_key="customers.id", index=True, max_length=40)
    plan_id: str = Field(foreign_key="plans.id", index=True, max_length=40)
    payment_method_id: str | None = Field(default=None, foreign_key="payment_methods.id", max_length=40)
    status: str = Field(max_length=20)
    billing_anchor: datetime = _ts()
    # the period the customer has access for (trial, or the last paid period)
    current_period_start: datetime = _ts()
    current_period_end: datetime = _ts()
    # index (from the anchor) of the next period to bill; its start == current_period_end
    next_period_index: int = Field(default=0)
    # the period index that starts at billing_anchor (0; a resume re-anchors: pauses.py)
    anchor_period_index: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    trial_end: datetime | None = _ts(default=None)
    cancel_at_period_end: bool = Field(default=False)
    canceled_at: datetime | None = _ts(default=None)  # when the cancellation was decided
    ended_at: datetime | None = _ts(default=None)  # when it took effect (access ended)
    cancellation_kind: str | None = Field(default=None, max_length=20)
    cancellation_reason: str | None = Field(default=None, max_length=80)
    cancellation_comment: str | None = Field(default=None, max_length=2000)
    canceled_by: str | None = Field(default=None, max_length=80)  # customer | admin:<who> | system
    # pause (billing_engine/pauses.py): when the current pause took effect, when it ends by
    # itself (None: until resumed), and a pause scheduled for the end of the current period
    paused_at: datetime | None = _ts(default=None)
    resumes_at: datetime | None = _ts(default=None)
    pause_at_period_end: bool = Field(default=False, sa_column_kwargs={"server_default": text("false")})
    # dunning
    next_retry_at: datetime | None = _ts(default=None)
    dunning_started_at: datetime | None = _ts(default=None)
    failed_attempts: int = Field(default=0)  # on the open invoice
    # reporting facts, maintained where an invoice is paid (payments._invoice_paid):
    # the first payment (becomes a subscriber) and the MRR of the last paid period
    activated_at: datetime | None = _ts(default=None)
    mrr_minor: int | None = _money(default=None)
    # the period index whose renewal reminder has been queued (reminders go out once)
    reminded_period_index: int | None = Field(default=None)
    # when that reminder (or a receipt / confirmation that counts as it) was queued:
    # the period is charged only once it is at least the plan's reminder lead old
    reminded_at: datetime | None = _ts(default=None)
    # run-cycle lease (wall-clock): a worker owns the row while it charges it
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_expires_at: datetime | None = _ts(default=None)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)
    external_id: str | None = Field(default=None, max_length=200, unique=True, index=True)  # import: "stripe:cus_..."
    # imported subscriptions: the run-cycle charges nothing before this instant (the previous
    # biller still charges until the cut-over; billing_engine/imports/cutover.py)
    charge_from: datetime | None = _ts(default=None)
    metadata_json: str | None = Field(default=None, sa_type=Text)
    # a customer's earlier, canceled subscription this one takes up again (MRR reactivation)
    reactivated_from: str | None = Field(default=None, max_length=40)
    # a plan change that takes effect when the current period ends (billing_engine/plan_changes.py)
    scheduled_plan_id: str | None = Field(default=None, max_length=40)


class Invoice(SQLModel, table=True):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("subscription_id", "period_start", name="uq_invoices_subscription_period"),
        CheckConstraint("amount_minor >= 0", name="ck_invoices_amount_nonneg"),
        Index("ix_invoices_paid_at", "paid_at"),
        Index("ix_invoices_customer", "customer_id", "paid_at"),
    )

    id: str = Field(default_factory=lambda: new_id("in"), primary_key=True, max_length=40)
    # (no index of its own: uq_invoices_subscription_period leads with it)
    subscription_id: str = Field(foreign_key="subscriptions.id", max_length=40)
    customer_id: str = Field(foreign_key="customers.id", max_length=40)
    plan_id: str = Field(foreign_key="plans.id", max_length=40)
    period_index: int
    period_start: datetime = _ts()
    period_end: datetime = _ts()
    amount_minor: int = _money()  # what is charged: the price in force minus the discount
    currency: str = Field(max_length=3)
    discount_minor: int = _money(default=0, sa_column_kwargs={"server_default": "0"})  # a coupon's discount (gross = amount + discount)
    redemption_id: str | None = Field(default=None, max_length=40, index=True)  # coupon_redemptions.id
    status: str = Field(default=InvoiceStatus.OPEN, max_length=20)
    attempt_count: int = Field(default=0)
    amount_paid_minor: int = _money(default=0)
    amount_refunded_minor: int = _money(default=0)
    created_at: datetime = _ts(default_factory=utcnow)
    paid_at: datetime | None = _ts(default=None)
    closed_at: datetime | None = _ts(default=None)
    updated_at: datetime = _ts(default_factory=utcnow, index=True, sa_column_kwargs={"onupdate": utcnow})
    # gapless per seller series, assigned in the transaction that marks it paid
    # (billing_engine/invoice_numbers.py); e.g. "INV-000042"
    number: str | None = Field(default=None, max_length=60, unique=True)
    # period: one billing period of the plan; proration: the difference charged for a
    # plan change within a period (billing_engine/plan_changes.py)
    kind: str = Field(default=InvoiceKind.PERIOD, max_length=20, sa_column_kwargs={"server_default": "period"})


class InvoiceNumberSeries(SQLModel, table=True):
    """One counter row per invoice-number prefix: locked once per batch to take a range."""

    __tablename__ = "invoice_number_series"

    prefix: str = Field(primary_key=True, max_length=40)
    last_value: int = Field(default=0, sa_type=BigInteger)


class CardUpdate(SQLModel, table=True):
    """A card update started from the customer's self-service page, with the consent the
    customer gave there (kept until the gateway confirms the new card)."""

    __tablename__ = "card_updates"

    id: str = Field(default_factory=lambda: new_id("cu"), primary_key=True, max_length=40)
    customer_id: str = Field(foreign_key="customers.id", index=True, max_length=40)
    subscription_id: str = Field(foreign_key="subscriptions.id", max_length=40)
    gateway: str = Field(max_length=20)
    gateway_session_id: str | None = Field(default=None, max_length=255, unique=True)  # cs_... (Stripe Checkout)
    status: str = Field(default="open", max_length=20)  # open | completed | failed
    ip_address: str = Field(max_length=64)
    user_agent: str = Field(max_length=1000)
    terms_version: str = Field(max_length=50)
    terms_text: str = Field(sa_type=Text)
    amount_minor: int = _money()
    currency: str = Field(max_length=3)
    interval: str = Field(max_length=10)
    interval_count: int = Field(default=1)
    payment_method_id: str | None = Field(default=None, foreign_key="payment_methods.id", max_length=40)
    message: str | None = Field(default=None, max_length=500)
    created_at: datetime = _ts(default_factory=utcnow)
    completed_at: datetime | None = _ts(default=None)


class PriceChange(SQLModel, table=True):
    """A plan's new price (billing_engine/pricing.py). Existing subscribers pay it from their
    first period starting on or after ``effective_at`` (announced + notice); a subscription
    created on or after ``announced_at`` pays it at once."""

    __tablename__ = "price_changes"
    __table_args__ = (CheckConstraint("amount_minor >= 0", name="ck_price_changes_amount_nonneg"),)

    id: str = Field(default_factory=lambda: new_id("prc"), primary_key=True, max_length=40)
    plan_id: str = Field(foreign_key="plans.id", index=True, max_length=40)
    old_amount_minor: int = _money()
    amount_minor: int = _money()
    currency: str = Field(max_length=3)
    notice_days: int
    announced_at: datetime = _ts()
    effective_at: datetime = _ts()
    subscribers_notified: int = Field(default=0)
    actor: str = Field(default="admin", max_length=80)
    created_at: datetime = _ts(default_factory=utcnow)


class Coupon(SQLModel, table=True):
    """A discount (billing_engine/coupons.py): percent or fixed amount, for one period, N
    periods or forever."""

    __tablename__ = "coupons"
    __table_args__ = (
        CheckConstraint("kind IN ('percent','amount')", name="ck_coupons_kind"),
        CheckConstraint("duration IN ('once','repeating','forever')", name="ck_coupons_duration"),
    )

    id: str = Field(default_factory=lambda: new_id("cpn"), primary_key=True, max_length=40)
    code: str = Field(max_length=64, unique=True)
    name: str = Field(default="", max_length=200)
    kind: str = Field(max_length=10)  # percent | amount
    percent_off: int | None = Field(default=None)  # 1..100
    amount_off_minor: int | None = _money(default=None)
    currency: str | None = Field(default=None, max_length=3)  # for amount coupons
    duration: str = Field(max_length=10)  # once | repeating | forever
    duration_periods: int | None = Field(default=None)  # repeating: how many periods
    plan_codes: str | None = Field(default=None, max_length=2000)  # comma-separated; None: every plan
    max_redemptions: int | None = Field(default=None)
    redeem_by: datetime | None = _ts(default=None)
    once_per_customer: bool = Field(default=True)
    active: bool = Field(default=True)
    times_redeemed: int = Field(default=0)
    created_at: datetime = _ts(default_factory=utcnow)


class CouponRedemption(SQLModel, table=True):
    """A coupon applied to a subscription; its invoices carry ``redemption_id``."""

    __tablename__ = "coupon_redemptions"

    id: str = Field(default_factory=lambda: new_id("red"), primary_key=True, max_length=40)
    coupon_id: str = Field(foreign_key="coupons.id", index=True, max_length=40)
    subscription_id: str = Field(foreign_key="subscriptions.id", index=True, max_length=40)
    customer_id: str = Field(foreign_key="customers.id", index=True, max_length=40)
    redeemed_at: datetime = _ts()
    removed_at: datetime | None = _ts(default=None)
    actor: str = Field(default="admin", max_length=80)
    created_at: datetime = _ts(default_factory=utcnow)


class SubscriptionPause(SQLModel, table=True):
    """One pause of a subscription, from when it took effect to when it was resumed
    (reports: paused subscriptions are counted apart, never as churn)."""

    __tablename__ = "subscription_pauses"
    __table_args__ = (Index("ix_subscription_pauses_period", "paused_at", "resumed_at"),)

    id: str = Field(default_factory=lambda: new_id("pau"), primary_key=True, max_length=40)
    subscription_id: str = Field(foreign_key="subscriptions.id", index=True, max_length=40)
    plan_id: str = Field(foreign_key="plans.id", max_length=40)
    paused_at: datetime = _ts()
    resumes_at: datetime | None = _ts(default=None)
    resumed_at: datetime | None = _ts(default=None)
    actor: str = Field(default="admin", max_length=80)
    created_at: datetime = _ts(default_factory=utcnow)


class PaymentAttempt(SQLModel, table=True):
    __tablename__ = "payment_attempts"
    __table_args__ = (
        UniqueConstraint("invoice_id", "attempt_number", name="uq_attempts_invoice_number"),
        # the attempts whose outcome is not known yet, and only those (a partial index: a
        # settled attempt leaves it, so the run-cycle's look-ups stay small at any size)
        Index("ix_attempts_unresolved", "subscription_id",
              postgresql_where=text("status IN ('pending', 'unknown')"),
              sqlite_where=text("status IN ('pending', 'unknown')")),
    )

    id: str = Field(default_factory=lambda: new_id("pay"), primary_key=True, max_length=40)
    invoice_id: str = Field(foreign_key="invoices.id", max_length=40)  # (indexed by uq_attempts_invoice_number)
    subscription_id: str = Field(foreign_key="subscriptions.id", index=True, max_length=40)
    payment_method_id: str | None = Field(default=None, foreign_key="payment_methods.id", max_length=40)
    attempt_number: int
    idempotency_key: str = Field(max_length=255, unique=True)
    gateway: str = Field(max_length=20)
    status: str = Field(default=AttemptStatus.PENDING, max_length=20)
    amount_minor: int = _money()
    currency: str = Field(max_length=3)
    gateway_charge_id: str | None = Field(default=None, max_length=100, index=True)
    decline_code: str | None = Field(default=None, max_length=80)
    decline_kind: str | None = Field(default=None, max_length=10)  # hard | soft
    message: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _ts(default_factory=utcnow)
    completed_at: datetime | None = _ts(default=None)


class Refund(SQLModel, table=True):
    __tablename__ = "refunds"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="ck_refunds_amount_pos"),)

    id: str = Field(default_factory=lambda: new_id("re"), primary_key=True, max_length=40)
    invoice_id: str = Field(foreign_key="invoices.id", index=True, max_length=40)
    payment_attempt_id: str = Field(foreign_key="payment_attempts.id", max_length=40)
    amount_minor: int = _money()
    currency: str = Field(max_length=3)
    status: str = Field(default=RefundStatus.PENDING, max_length=20)
    reason: str | None = Field(default=None, max_length=200)
    idempotency_key: str = Field(max_length=255, unique=True)
    gateway_refund_id: str | None = Field(default=None, max_length=100, unique=True)
    created_at: datetime = _ts(default_factory=utcnow)
    succeeded_at: datetime | None = _ts(default=None, index=True)
    # granted under the plan's money-back guarantee (reports: "guarantee refunds")
    guarantee: bool = Field(default=False, sa_column_kwargs={"server_default": text("false")})


class Dispute(SQLModel, table=True):
    __tablename__ = "disputes"

    id: str = Field(default_factory=lambda: new_id("dp"), primary_key=True, max_length=40)
    gateway_dispute_id: str = Field(max_length=100, unique=True)
    payment_attempt_id: str | None = Field(default=None, foreign_key="payment_attempts.id", max_length=40)
    subscription_id: str | None = Field(default=None, foreign_key="subscriptions.id", max_length=40)
    amount_minor: int = _money()
    currency: str = Field(max_length=3)
    reason: str | None = Field(default=None, max_length=80)
    status: str = Field(max_length=40)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)


class Event(SQLModel, table=True):
    """Audit log + outbox: one row per state change, written in the same transaction."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_subscription", "subscription_id", "id"),)

    id: int | None = Field(default=None, sa_type=BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    type: str = Field(max_length=60, index=True)
    subscription_id: str | None = Field(default=None, max_length=40)
    customer_id: str | None = Field(default=None, max_length=40)
    invoice_id: str | None = Field(default=None, max_length=40)
    actor: str = Field(default="system", max_length=80)
    payload: str = Field(default="{}", sa_type=Text)  # JSON
    occurred_at: datetime = _ts()  # business time (now / --at)
    created_at: datetime = _ts(default_factory=utcnow)
    recorded_at: datetime = _ts(default_factory=utcnow)  # wall clock when written (never backdated)


class Notification(SQLModel, table=True):
    """An e-mail to send (outbox). ``dedupe_key`` makes 'never sent twice' a constraint."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "status", "next_attempt_at"),)

    id: str = Field(default_factory=lambda: new_id("ntf"), primary_key=True, max_length=40)
    dedupe_key: str = Field(max_length=255, unique=True)
    kind: str = Field(max_length=40)  # renewal_reminder | receipt | payment_failed | ...
    event_id: int | None = Field(default=None, sa_type=BigInteger)
    customer_id: str | None = Field(default=None, max_length=40, index=True)
    subscription_id: str | None = Field(default=None, max_length=40, index=True)
    to_email: str = Field(max_length=320)
    payload: str = Field(default="{}", sa_type=Text)  # JSON context for the template
    status: str = Field(default=NotificationStatus.PENDING, max_length=20)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = _ts()
    sent_at: datetime | None = _ts(default=None)
    last_error: str | None = Field(default=None, max_length=1000)
    message_id: str | None = Field(default=None, max_length=255)
    created_at: datetime = _ts(default_factory=utcnow)


class WebhookEvent(SQLModel, table=True):
    """Incoming gateway webhooks, deduplicated by their external id."""

    __tablename__ = "webhook_events"

    id: str = Field(primary_key=True, max_length=100)  # evt_...
    gateway: str = Field(default="stripe", max_length=20)
    type: str = Field(max_length=100)
    payload: str = Field(sa_type=Text)
    received_at: datetime = _ts(default_factory=utcnow)
    handled_at: datetime | None = _ts(default=None)
    outcome: str | None = Field(default=None, max_length=500)


class WebhookEndpointStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class WebhookDeliveryStatus(StrEnum):
    PENDING = "pending"  # due at next_attempt_at
    SENDING = "sending"  # claimed; next_attempt_at is the claim's lease expiry (wall clock)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retries exhausted (or the endpoint was disabled)


class WebhookEndpoint(SQLModel, table=True):
    """A merchant URL that receives signed events (Standard Webhooks)."""

    __tablename__ = "webhook_endpoints"

    id: str = Field(default_factory=lambda: new_id("we"), primary_key=True, max_length=40)
    url: str = Field(max_length=2000)
    description: str = Field(default="", max_length=200)
    event_types: str = Field(default="*", sa_type=Text)  # "*" or comma-separated public types
    status: str = Field(default=WebhookEndpointStatus.ENABLED, max_length=20)
    secret: str = Field(max_length=100)  # whsec_<base64>
    previous_secret: str | None = Field(default=None, max_length=100)  # still signs until it expires
    previous_secret_expires_at: datetime | None = _ts(default=None)
    # every event with an id <= cursor has been considered for this endpoint
    cursor_event_id: int = Field(default=0, sa_type=BigInteger)
    failing_since: datetime | None = _ts(default=None)  # first failure since the last success
    disabled_reason: str | None = Field(default=None, max_length=500)
    disabled_at: datetime | None = _ts(default=None)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    """One event to POST to one endpoint (the webhook outbox), with its retries.

    ``dedupe_key`` is ``live:<endpoint>:<event>`` for the first delivery (so an event is
    queued once per endpoint) and ``replay:<endpoint>:<event>:<ulid>`` for a resend."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_event", "endpoint_id", "event_id"),
    )

    id: str = Field(default_factory=lambda: new_id("whd"), primary_key=True, max_length=40)
    dedupe_key: str = Field(max_length=200, unique=True)
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", max_length=40)
    event_id: int = Field(sa_type=BigInteger)
    status: str = Field(default=WebhookDeliveryStatus.PENDING, max_length=20)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = _ts()
    last_status_code: int | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _ts(default_factory=utcnow)
    delivered_at: datetime | None = _ts(default=None)


class IdempotencyRecord(SQLModel, table=True):
    """Admin API ``Idempotency-Key`` replay store."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("key", "method", "path", name="uq_idempotency_key_route"),)

    id: int | None = Field(default=None, sa_type=BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: str = Field(max_length=255)
    method: str = Field(max_length=10)
    path: str = Field(max_length=500)
    request_sha256: str = Field(max_length=64)
    response_status: int
    response_body: str = Field(sa_type=Text)
    created_at: datetime = _ts(default_factory=utcnow)


class RateBucket(SQLModel, table=True):
    """A gateway rate limit shared by every worker (``gateway/rate_limit.py``)."""

    __tablename__ = "rate_buckets"

    name: str = Field(primary_key=True, max_length=100)
    tokens: float = Field(sa_type=Float)
    updated_at: float = Field(sa_type=Float)  # wall-clock seconds since the epoch


class ReportRollupState(SQLModel, table=True):
    """How far a report rollup has folded in the events table (``reports/rollups.py``)."""

    __tablename__ = "report_rollup_state"

    name: str = Field(primary_key=True, max_length=40)
    last_event_id: int = Field(sa_type=BigInteger)
    refreshed_at: datetime = _ts()
    # the highest event id folded in, and how many events after ``last_event_id`` were visible
    # then (the refresh inside the lag folds only what is new: reports/rollups.py)
    folded_to: int | None = Field(default=None, sa_type=BigInteger)
    folded_count: int | None = Field(default=None, sa_type=BigInteger)


class ReportOffPrice(SQLModel, table=True):
    """Subscriptions with a paid invoice not billed at their own plan's price (rollup)."""

    __tablename__ = "report_off_price"

    subscription_id: str = Field(primary_key=True, max_length=40)


class ReportCustomerFirstPaid(SQLModel, table=True):
    """Each customer's first payment ever: the smallest paid_at of their paid invoices (rollup)."""

    __tablename__ = "report_customer_first_paid"

    customer_id: str = Field(primary_key=True, max_length=40)
    first_paid_at: datetime = _ts()


class ReportFailedInvoice(SQLModel, table=True):
    """One row per invoice with a failed payment (rollup of invoices, attempts, events)."""

    __tablename__ = "report_failed_invoices"

    invoice_id: str = Field(primary_key=True, max_length=40)
    subscription_id: str = Field(max_length=40, index=True)
    currency: str = Field(max_length=3)
    plan_id: str = Field(max_length=40)
    amount_minor: int = _money()
    first_failed_at: datetime = _ts(index=True)
    decline_code: str | None = Field(default=None, max_length=80)
    decline_kind: str | None = Field(default=None, max_length=10)
    status: str = Field(max_length=20)
    paid_at: datetime | None = _ts(default=None)
    closed_at: datetime | None = _ts(default=None)
    paid_minor: int = _money()
    method: str | None = Field(default=None, max_length=30)
    seconds: int | None = Field(default=None, sa_type=BigInteger)
    # the subscription's, as report_failed_days groups by them (the fold sees them change)
    cancellation_kind: str | None = Field(default=None, max_length=20)
    reason_group: str | None = Field(default=None, max_length=20)


class _SubscriberEventColumns(SQLModel):
    """The columns of one subscriber event (``sql.subscriber_events``), shared by the
    per-subscription rollup and its per-day count."""

    day: datetime = _ts(index=True)
    kind: str = Field(max_length=20)
    currency: str = Field(max_length=3)
    plan_id: str = Field(max_length=40)
    cancellation_kind: str | None = Field(default=None, max_length=20)
    reason_group: str | None = Field(default=None, max_length=20)
    mrr_minor: int | None = Field(default=None, sa_type=BigInteger)
    inv_plan_id: str | None = Field(default=None, max_length=40)
    amount_minor: int | None = Field(default=None, sa_type=BigInteger)
    prev_plan_id: str | None = Field(default=None, max_length=40)
    prev_amount: int | None = Field(default=None, sa_type=BigInteger)
    act_same: int = Field(default=0)


class ReportSubEvent(_SubscriberEventColumns, table=True):
    """Every subscriber event of one subscription (``sql.subscriber_events`` over all time):
    activation, price change, churn, ended unpaid -- with its UTC day and whether the
    subscription was activated in the same calendar day / week / month / quarter / year
    (``act_same``, a bit mask: see ``reports/rollups.py``). Rollup, per subscription."""

    __tablename__ = "report_sub_events"

    subscription_id: str = Field(primary_key=True, max_length=40)
    seq: int = Field(primary_key=True)


class ReportSubEventDay(_SubscriberEventColumns, table=True):
    """``report_sub_events`` counted per UTC day and every other column (rollup): what the
    churn, MRR and retention timelines read for day-aligned ranges."""

    __tablename__ = "report_sub_event_days"

    id: int | None = Field(default=None, sa_type=BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    n: int = Field(sa_type=BigInteger)


class ReportPaidDay(SQLModel, table=True):
    """Paid invoices per UTC day of ``paid_at``, currency and plan (rollup): count, amount
    paid, discounts, and those paid after a failed attempt (``attempt_count > 1``)."""

    __tablename__ = "report_paid_days"

    day: datetime = _ts(primary_key=True)
    currency: str = Field(primary_key=True, max_length=3)
    plan_id: str = Field(primary_key=True, max_length=40)
    invoices_paid: int = Field(sa_type=BigInteger)
    gross_minor: int = _money()
    discounts_minor: int = _money()
    recovered_invoices: int = Field(sa_type=BigInteger)
    recovered_minor: int = _money()


class ReportPayingRun(SQLModel, table=True):
    """A run of consecutive calendar months (UTC; ``year * 12 + month - 1``) in each of which a
    customer paid an invoice in this currency and plan (``plan_id`` ``''``: any plan), and
    whether its first month is the customer's first payment ever (rollup)."""

    __tablename__ = "report_paying_runs"

    customer_id: str = Field(primary_key=True, max_length=40)
    currency: str = Field(primary_key=True, max_length=3)
    plan_id: str = Field(primary_key=True, max_length=40)
    first_month: int = Field(primary_key=True, index=True)
    last_month: int = Field(index=True)
    is_new: int = Field(default=0)


class ReportPayingMonth(SQLModel, table=True):
    """``report_paying_runs`` per month, currency and plan: runs starting (and of those, new
    customers) and ending in the month (rollup). Paying customers in month ``j`` = starts up
    to ``j`` - ends before ``j``."""

    __tablename__ = "report_paying_months"

    month: int = Field(primary_key=True)
    currency: str = Field(primary_key=True, max_length=3)
    plan_id: str = Field(primary_key=True, max_length=40)
    starts: int = Field(sa_type=BigInteger)
    ends: int = Field(sa_type=BigInteger)
    new: int = Field(sa_type=BigInteger)


class ReportCustomerCohort(SQLModel, table=True):
    """Each customer's cohort (rollup): the month (``year * 12 + month - 1``) their first paid
    subscription was activated in (ties: the lower id), its currency and plan."""

    __tablename__ = "report_customer_cohorts"

    customer_id: str = Field(primary_key=True, max_length=40)
    cohort_month: int = Field(index=True)
    currency: str = Field(max_length=3)
    plan_id: str = Field(max_length=40)


class ReportActiveRun(SQLModel, table=True):
    """A run of consecutive months in which a customer was a subscriber (the union of their
    subscriptions' months from activation to end; ``last_month`` NULL: still one). Rollup."""

    __tablename__ = "report_active_runs"

    customer_id: str = Field(primary_key=True, max_length=40)
    first_month: int = Field(primary_key=True, index=True)
    last_month: int | None = Field(default=None, index=True)


class ReportCohortCell(SQLModel, table=True):
    """Per cohort (month, currency, plan) and month: customers of the cohort (``month`` =
    the cohort month, ``kind`` 'size'), active runs starting / ending ('starts' / 'ends'),
    and, per day, money the cohort paid in its currency ('revenue', ``day`` set). Rollup."""

    __tablename__ = "report_cohort_cells"

    id: int | None = Field(default=None, sa_type=BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    cohort_month: int = Field(index=True)
    currency: str = Field(max_length=3)
    plan_id: str = Field(max_length=40)
    kind: str = Field(max_length=10)
    month: int = Field(index=True)
    day: datetime | None = _ts(default=None, index=True)
    value: int = Field(sa_type=BigInteger)


class ReportFailedDay(SQLModel, table=True):
    """``report_failed_invoices`` summed per UTC day of the first failure and every fact the
    recovery / funnel reports group by, with the days of payment / closing (rollup)."""

    __tablename__ = "report_failed_days"

    id: int | None = Field(default=None, sa_type=BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    day: datetime = _ts(index=True)
    currency: str = Field(max_length=3)
    plan_id: str = Field(max_length=40)
    decline_code: str | None = Field(default=None, max_length=80)
    decline_kind: str | None = Field(default=None, max_length=10)
    status: str = Field(max_length=20)
    method: str | None = Field(default=None, max_length=30)
    paid_day: datetime | None = _ts(default=None)
    closed_day: datetime | None = _ts(default=None)
    cancellation_kind: str | None = Field(default=None, max_length=20)
    reason_group: str | None = Field(default=None, max_length=20)
    n: int = Field(sa_type=BigInteger)
    amount_minor: int = _money()
    paid_minor: int = _money()
    seconds: int = Field(sa_type=BigInteger)

class ImportProgress(SQLModel, table=True):
    """Where an import from another biller stopped (``billing import stripe`` resumes here)."""

    __tablename__ = "import_progress"

    key: str = Field(primary_key=True, max_length=200)  # e.g. stripe:subscriptions:active
    cursor: str | None = Field(default=None, max_length=200)  # the last source id fully imported
    status: str = Field(default="running", max_length=20)  # running | done
    created: int = Field(default=0)  # objects created so far by this run
    started_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)
    finished_at: datetime | None = _ts(default=None)


__all__ = [n for n in dir() if not n.startswith("_")]
