"""Customers: who is billed and where their e-mails go."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_engine import events, i18n, listing, metadata, validation
from billing_engine.errors import Conflict, NotFound, ValidationError
from billing_engine.models import Customer


def create(
    session: Session,
    *,
    email: str,
    name: str = "",
    external_ref: str | None = None,
    gateway_customer_id: str | None = None,
    locale: str | None = None,
    now: datetime,
    actor: str = "admin",
) -> Customer:
    email = validation.email(email)
    locale = check_locale(locale)
    name = validation.text(name, "name", max_length=200)
    if external_ref is not None:
        external_ref = validation.text(external_ref, "external_ref", max_length=200) or None
    if gateway_customer_id is not None:
        gateway_customer_id = validation.text(gateway_customer_id, "gateway_customer_id", max_length=100) or None
    if external_ref and session.exec(select(Customer).where(Customer.external_ref == external_ref)).first():
        raise Conflict(f"a customer with external_ref {external_ref!r} already exists", field="external_ref")
    c = Customer(email=email, name=name, external_ref=external_ref,
                 gateway_customer_id=gateway_customer_id, locale=locale, created_at=now, updated_at=now)
    session.add(c)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(f"a customer with external_ref {external_ref!r} already exists", field="external_ref") from None
    events.record(session, events.EventType.CUSTOMER_CREATED, at=now, actor=actor,
                  customer_id=c.id, payload={"email": email})
    return c


def check_locale(locale: str | None) -> str | None:
    """A locale for e-mails and pages ("ru", "he", "hu_HU"; empty: the default), or a
    ValidationError naming the field."""
    if locale is None or not str(locale).strip():
        return None
    norm = i18n.normalize(str(locale))
    if norm is None:
        raise ValidationError(f"not a locale (e.g. {', '.join(i18n.SUPPORTED)})", field="locale")
    return norm


def set_locale(session: Session, c: Customer, locale: str | None, *, now: datetime, actor: str = "admin") -> Customer:
    """The language of the customer's e-mails and pages (None: the default from settings)."""
    new = check_locale(locale)
    old, c.locale = c.locale, new
    session.add(c)
    events.record(session, events.EventType.CUSTOMER_UPDATED, at=now, actor=actor, customer_id=c.id,
                  payload={"locale": {"from": old, "to": new}})
    return c


def get(session: Session, customer_id_or_ref: str) -> Customer:
    c = session.get(Customer, customer_id_or_ref)
    if c is None:
        c = session.exec(select(Customer).where(Customer.external_ref == customer_id_or_ref)).first()
    if c is None:
        raise NotFound(f"no customer {customer_id_or_ref!r}", field="customer")
    return c


def list_customers(
    session: Session, *, email: str | None = None, limit: int = 100, after: str | None = None,
    ranges: listing.Ranges | None = None,
) -> list[Customer]:
    q = listing.apply(select(Customer).order_by(col(Customer.id)).limit(limit), Customer, ranges)
    if email:
        q = q.where(Customer.email == email.strip())
    if listing.cursor(after, "cus"):
        q = q.where(col(Customer.id) > after)
    return list(session.exec(q))


def summary(c: Customer) -> dict[str, Any]:
    """The customer as shown to admins (CLI ``--json`` and the API)."""
    return {"id": c.id, "email": c.email, "name": c.name, "external_ref": c.external_ref,
            "gateway_customer_id": c.gateway_customer_id, "created_at": c.created_at, "updated_at": c.updated_at, "locale": c.locale,
            "metadata": metadata.load(c.metadata_json), "default_payment_method_id": c.default_payment_method_id}
