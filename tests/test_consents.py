"""Consents: who agreed, when, from where, to which terms; which plans they cover."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from billing_engine import consents, payment_methods
from billing_engine.db import transaction
from billing_engine.errors import ValidationError
from billing_engine.models import Consent
from tests.factories import TERMS, consent_for, make_card, make_customer, make_plan


def test_consent_records_who_when_where_and_the_exact_terms(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, now)
        cust = make_customer(s, now)
        make_card(s, now, cust, plan)
    with Session(engine) as s:
        c = s.exec(select(Consent)).one()
    assert c.ip_address == "203.0.113.7" and c.user_agent.startswith("Mozilla")
    assert c.terms_sha256 == hashlib.sha256(TERMS.encode()).hexdigest() and c.terms_version == "2026-01"
    assert (c.amount_minor, c.currency, c.interval, c.interval_count) == (1700, "USD", "month", 1)


def test_bad_consent_fields_are_named(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, now)
        cust = make_customer(s, now)
    cases = {"consent.ip_address": {"ip_address": "not-an-ip"},
             "consent.accepted_at": {"accepted_at": now + timedelta(days=1)},
             "consent.terms_text": {"terms_text": None}}
    for field, override in cases.items():
        with pytest.raises(ValidationError) as exc, transaction(engine) as s:
            payment_methods.add(s, customer_id=cust.id, token="pm_card_visa", gateway="fake", card=None,
                                consent=consent_for(plan, now, **override), now=now)
        assert exc.value.field == field


def test_a_consent_covers_the_same_terms_at_up_to_the_agreed_amount(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        agreed = make_plan(s, now, code="agreed", amount_minor=1700)
        cheaper = make_plan(s, now, code="cheaper", amount_minor=900)
        dearer = make_plan(s, now, code="dearer", amount_minor=1701)
        euros = make_plan(s, now, code="euros", amount_minor=1700, currency="EUR")
        yearly = make_plan(s, now, code="yearly", amount_minor=1700, interval="year")
        bimonthly = make_plan(s, now, code="bimonthly", amount_minor=1700, interval_count=2)
        pm = make_card(s, now, make_customer(s, now), agreed)
        consent = s.exec(select(Consent).where(Consent.payment_method_id == pm.id)).one()
        assert consents.covers(consent, agreed) and consents.covers(consent, cheaper)
        for plan in (dearer, euros, yearly, bimonthly):
            assert not consents.covers(consent, plan), plan.code
            assert consents.covering(s, pm.id, plan) is None
        assert consents.covering(s, pm.id, cheaper) == consent


def test_a_revoked_consent_covers_nothing(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, now)
        pm = make_card(s, now, make_customer(s, now), plan)
        consent = s.exec(select(Consent).where(Consent.payment_method_id == pm.id)).one()
        consent.revoked_at = now
        s.add(consent)
        assert not consents.covers(consent, plan)
        assert consents.covering(s, pm.id, plan) is None
