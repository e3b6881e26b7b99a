"""Cancellations: cancel, repeat, undo, reasons; who may undo what."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from billing_engine import cancellations, subscriptions
from billing_engine.db import transaction
from billing_engine.errors import InvalidTransition, ValidationError
from billing_engine.models import Event
from tests.factories import make_subscription


def test_cancel_twice_is_a_conflict_after_it_ended(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        sub = make_subscription(s, now)
        cancellations.cancel(s, sub, now=now, at_period_end=False)
    with pytest.raises(InvalidTransition), transaction(engine) as s:
        cancellations.cancel(s, subscriptions.get(s, sub.id), now=now)


def test_repeating_a_scheduled_cancel_changes_nothing(engine, now) -> None:  # type: ignore[no-untyped-def]
    from billing_engine.cycle import run_cycle
    from billing_engine.gateway.fake import FakeGateway
    from billing_engine.settings import load_settings

    with transaction(engine) as s:
        sub_id = make_subscription(s, now).id
    run_cycle(engine, FakeGateway(), now=now, settings=load_settings())
    with transaction(engine) as s:
        first = cancellations.cancel(s, subscriptions.get(s, sub_id), reason="unused", now=now + timedelta(days=1))
    with transaction(engine) as s:
        again = cancellations.cancel(s, subscriptions.get(s, sub_id), now=now + timedelta(days=2))
    assert first.changed and not again.changed
    with Session(engine) as s:
        n = len(s.exec(select(Event).where(Event.type == "subscription.cancel_scheduled")).all())
        sub = subscriptions.get(s, sub_id)
    assert n == 1 and sub.cancellation_reason == "unused" and sub.canceled_at == now + timedelta(days=1)


def test_undo_before_period_end_restores_the_renewal(engine, now) -> None:  # type: ignore[no-untyped-def]
    from billing_engine.cycle import run_cycle
    from billing_engine.gateway.fake import FakeGateway
    from billing_engine.settings import load_settings

    with transaction(engine) as s:
        sub_id = make_subscription(s, now).id
    run_cycle(engine, FakeGateway(), now=now, settings=load_settings())
    with transaction(engine) as s:
        cancellations.cancel(s, subscriptions.get(s, sub_id), now=now + timedelta(days=1))
        cancellations.undo(s, subscriptions.get(s, sub_id), now=now + timedelta(days=2))
    with Session(engine) as s:
        sub = subscriptions.get(s, sub_id)
        assert (sub.cancel_at_period_end, sub.cancellation_kind, sub.status) == (False, None, "active")
        assert subscriptions.next_charge(s, sub) is not None


def test_voluntary_reason_must_be_a_known_code(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        sub = make_subscription(s, now)
    with pytest.raises(ValidationError) as exc, transaction(engine) as s:
        cancellations.cancel(s, subscriptions.get(s, sub.id), reason="payment_failed", now=now)
    assert exc.value.field == "reason"


def _paid_subscription(engine, now) -> str:  # type: ignore[no-untyped-def]
    from billing_engine.cycle import run_cycle
    from billing_engine.gateway.fake import FakeGateway
    from billing_engine.settings import load_settings

    with transaction(engine) as s:
        sub_id = make_subscription(s, now).id
    assert run_cycle(engine, FakeGateway(), now=now, settings=load_settings()).succeeded == 1
    return sub_id


def test_the_customer_may_undo_their_own_cancellation_until_the_period_ends(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _paid_subscription(engine, now)
    with transaction(engine) as s:
        sub = cancellations.cancel(s, subscriptions.get(s, sub_id), now=now, actor="customer").subscription
        assert cancellations.can_undo(sub, now + timedelta(days=1), actor="customer")
        assert cancellations.can_undo(sub, now + timedelta(days=1), actor="admin")
        assert not cancellations.can_undo(sub, sub.current_period_end, actor="customer")


def test_an_immediate_voluntary_cancel_can_be_undone_while_the_paid_period_lasts(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _paid_subscription(engine, now)
    with transaction(engine) as s:
        sub = cancellations.cancel(s, subscriptions.get(s, sub_id), at_period_end=False, now=now).subscription
        assert sub.status == "canceled"
        assert cancellations.can_undo(sub, now + timedelta(days=1), actor="customer")
        cancellations.undo(s, sub, now=now + timedelta(days=1))
        assert sub.status == "active" and sub.ended_at is None


def test_a_customer_cannot_undo_what_an_admin_decided(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _paid_subscription(engine, now)
    with transaction(engine) as s:
        sub = cancellations.cancel(s, subscriptions.get(s, sub_id), now=now, actor="admin").subscription
        assert not cancellations.can_undo(sub, now + timedelta(days=1), actor="customer")
        assert cancellations.can_undo(sub, now + timedelta(days=1), actor="admin")
    with pytest.raises(InvalidTransition, match="support"), transaction(engine) as s:
        cancellations.undo(s, subscriptions.get(s, sub_id), now=now + timedelta(days=1), actor="customer")


def test_involuntary_churn_is_never_undone(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _paid_subscription(engine, now)
    with transaction(engine) as s:
        sub = subscriptions.get(s, sub_id)
        assert cancellations.end_involuntarily(s, sub, reason="dispute", now=now, actor="system")
        for actor in ("customer", "admin"):
            assert not cancellations.can_undo(sub, now + timedelta(days=1), actor=actor)
    with pytest.raises(InvalidTransition), transaction(engine) as s:
        cancellations.undo(s, subscriptions.get(s, sub_id), now=now + timedelta(days=1), actor="admin")


def test_an_admins_involuntary_cancel_emails_the_customer_now_or_at_period_end(engine, now) -> None:  # type: ignore[no-untyped-def]
    from billing_engine.cycle import run_cycle
    from billing_engine.gateway.fake import FakeGateway
    from billing_engine.models import Notification
    from billing_engine.settings import load_settings
    from tests.factories import make_plan

    with transaction(engine) as s:
        plan = make_plan(s, now)
        at_once = make_subscription(s, now, plan=plan, email="now@example.com").id
        later = make_subscription(s, now, plan=plan, email="later@example.com").id
    gw = FakeGateway()
    run_cycle(engine, gw, now=now, settings=load_settings())
    with transaction(engine) as s:
        cancellations.cancel(s, subscriptions.get(s, at_once), kind="involuntary", reason="dispute",
                             at_period_end=False, now=now + timedelta(days=1), actor="admin:cli")
        cancellations.cancel(s, subscriptions.get(s, later), kind="involuntary", reason="dispute",
                             now=now + timedelta(days=1), actor="admin:cli")

    def mails(sub_id: str) -> list[Notification]:
        with Session(engine) as s:
            return list(s.exec(select(Notification).where(Notification.subscription_id == sub_id,
                                                          Notification.kind == "canceled_involuntary")))

    assert len(mails(at_once)) == 1 and mails(later) == []
    run_cycle(engine, gw, now=now + timedelta(days=40), settings=load_settings())  # the period ended
    assert len(mails(later)) == 1
    with Session(engine) as s:
        ended = subscriptions.get(s, later)
        assert (ended.status, ended.cancellation_kind, ended.cancellation_reason) == ("canceled", "involuntary", "dispute")
