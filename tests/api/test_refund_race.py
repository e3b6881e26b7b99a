"""Parallel retries of one refund request: one refund, counted once, never more than paid."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Event, Invoice, Refund
from tests.api.conftest import AUTH, Clock, add_card, create_customer, create_plan, make_client

THREADS = 8


def in_parallel(n: int, fn: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """Run ``fn(i)`` in ``n`` threads released together."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return results


@pytest.fixture
def slow_gateway() -> FakeGateway:
    return FakeGateway(latency=0.05)  # widens the window between "pending" and "settled"


@pytest.fixture
def paid_invoice(engine: Engine, slow_gateway: FakeGateway, clock: Clock) -> Any:
    with make_client(engine, slow_gateway, clock) as c:
        c.headers.update(AUTH)
        create_plan(c, amount_minor=1000)
        cust = create_customer(c)
        pm = add_card(c, cust["id"], amount_minor=1000)
        r = c.post("/v1/subscriptions", json={"customer": cust["id"], "plan": "basic-monthly", "payment_method": pm["id"]})
        assert r.status_code == 201, r.text
        c.post("/v1/run-cycle", json={"send_emails": False})
        [inv] = c.get("/v1/invoices?status=paid").json()["data"]
        assert inv["amount_paid_minor"] == 1000
        yield c, inv


def test_parallel_retries_of_one_refund_refund_once(engine: Engine, slow_gateway: FakeGateway,
                                                    paid_invoice: Any) -> None:
    c, inv = paid_invoice
    body = {"invoice_id": inv["id"], "amount_minor": 300}
    answers = in_parallel(THREADS, lambda i: c.post("/v1/refunds", json=body, headers={"Idempotency-Key": "rf-1"}))
    assert [a.status_code for a in answers] == [201] * THREADS, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    with transaction(engine) as s:
        refunds = s.exec(select(Refund).where(Refund.invoice_id == inv["id"])).all()
        invoice = s.get(Invoice, inv["id"])
        created = s.exec(select(Event).where(Event.type == "refund.created")).all()
    assert [(r.amount_minor, r.status) for r in refunds] == [(300, "succeeded")]
    assert invoice is not None and invoice.amount_refunded_minor == 300
    assert len(created) == 1
    assert slow_gateway.total_refunded("USD") == 300
    assert c.get(f"/v1/invoices/{inv['id']}").json()["amount_refunded_minor"] == 300


def test_parallel_refunds_with_different_keys_never_exceed_what_was_paid(
        engine: Engine, slow_gateway: FakeGateway, paid_invoice: Any) -> None:
    c, inv = paid_invoice
    body = {"invoice_id": inv["id"], "amount_minor": 300}
    answers = in_parallel(THREADS, lambda i: c.post("/v1/refunds", json=body, headers={"Idempotency-Key": f"k{i}"}))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 3 + [422] * (THREADS - 3), [a.text for a in answers]
    assert all(a.json()["field"] == "amount_minor" for a in answers if a.status_code == 422)
    with transaction(engine) as s:
        ok = s.exec(select(Refund).where(Refund.invoice_id == inv["id"], col(Refund.status) == "succeeded")).all()
        invoice = s.get(Invoice, inv["id"])
        created = s.exec(select(Event).where(Event.type == "refund.created")).all()
    assert sum(r.amount_minor for r in ok) == 900
    assert invoice is not None and invoice.amount_refunded_minor == 900 <= invoice.amount_paid_minor
    assert len(created) == 3
    assert slow_gateway.total_refunded("USD") == 900
