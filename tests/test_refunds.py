"""billing_engine.refunds: two phases, like a charge; never more than was collected."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import refunds
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.errors import Conflict, GatewayUnavailable, ValidationError
from billing_engine.gateway.fake import FakeGateway
from billing_engine.gateway.protocol import GatewayUnreachable, RefundRequest, RefundResult
from billing_engine.models import Event, Invoice, Notification, Refund, RefundStatus
from billing_engine.settings import load_settings
from tests.factories import make_subscription


def _paid_invoice(engine: Engine, gateway: FakeGateway, now: datetime) -> str:
    with transaction(engine) as s:
        make_subscription(s, now)
    run_cycle(engine, gateway, now=now, settings=load_settings())
    with Session(engine) as s:
        return s.exec(select(Invoice.id)).one()


def test_pending_refund_is_committed_before_the_gateway_is_called(engine: Engine, now: datetime) -> None:
    gateway = FakeGateway()
    invoice_id = _paid_invoice(engine, gateway, now)
    seen: list[tuple[str, str]] = []
    real_refund = gateway.refund

    def spying_refund(request: RefundRequest) -> RefundResult:
        with Session(engine) as s:  # another connection sees only committed rows
            row = s.exec(select(Refund)).one()
            seen.append((row.status, row.idempotency_key))
        return real_refund(request)

    gateway.refund = spying_refund  # type: ignore[method-assign]
    r = refunds.create(engine, gateway, invoice_id=invoice_id, amount_minor=700, reason="duplicate", now=now)
    assert seen == [("pending", f"refund:{invoice_id}:1")]
    assert r.status == RefundStatus.SUCCEEDED and r.gateway_refund_id
    with Session(engine) as s:
        assert s.get(Invoice, invoice_id).amount_refunded_minor == 700  # type: ignore[union-attr]
        assert s.exec(select(Event).where(Event.type == "refund.created")).one().invoice_id == invoice_id
        assert s.exec(select(Notification).where(Notification.kind == "refund")).one().dedupe_key == f"refund:{r.id}"


def test_refund_beyond_what_is_left_is_refused_and_pending_counts(engine: Engine, now: datetime) -> None:
    gateway = FakeGateway()
    invoice_id = _paid_invoice(engine, gateway, now)
    with transaction(engine) as s:
        refunds.start(s, invoice_id=invoice_id, amount_minor=1000, reason=None, now=now)  # pending, not sent
    with pytest.raises(ValidationError) as exc:
        refunds.create(engine, gateway, invoice_id=invoice_id, amount_minor=701, reason=None, now=now)
    assert exc.value.field == "amount_minor"
    assert refunds.create(engine, gateway, invoice_id=invoice_id, amount_minor=None, reason=None, now=now).amount_minor == 700


def test_unreachable_gateway_leaves_the_refund_pending_and_a_retry_sends_the_same_key(engine: Engine,
                                                                                     now: datetime) -> None:
    gateway = FakeGateway()
    invoice_id = _paid_invoice(engine, gateway, now)
    real_refund = gateway.refund
    keys: list[str] = []

    def flaky(request: RefundRequest) -> RefundResult:
        keys.append(request.idempotency_key)
        if len(keys) == 1:
            raise GatewayUnreachable("timeout")
        return real_refund(request)

    gateway.refund = flaky  # type: ignore[method-assign]
    with pytest.raises(GatewayUnavailable):
        refunds.create(engine, gateway, invoice_id=invoice_id, amount_minor=500, reason=None, now=now,
                       request_key="retry-me")
    with Session(engine) as s:
        assert s.exec(select(Refund.status)).one() == "pending"
    again = refunds.create(engine, gateway, invoice_id=invoice_id, amount_minor=500, reason=None, now=now,
                           request_key="retry-me")
    assert again.status == RefundStatus.SUCCEEDED and keys[0] == keys[1]
    assert gateway.total_refunded("USD") == 500


def test_gateway_refusal_marks_the_refund_failed_and_frees_the_amount(engine: Engine, now: datetime) -> None:
    gateway = FakeGateway()
    invoice_id = _paid_invoice(engine, gateway, now)
    gateway._collected.clear()  # the processor no longer knows the charge
    with pytest.raises(Conflict):
        refunds.create(engine, gateway, invoice_id=invoice_id, amount_minor=None, reason=None, now=now)
    with Session(engine) as s:
        assert s.exec(select(Refund.status)).one() == "failed"
        assert refunds.refundable(s, s.get(Invoice, invoice_id)) == 1700  # type: ignore[arg-type]
