"""Two admin changes of one subscription at the same moment (a double click, a script and a
person, without an Idempotency-Key): they run one after the other, and the second sees the
first -- one event, one customer e-mail, a 409 for the second."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import cancellations, pauses
from billing_engine.models import Event, Notification
from tests.api.conftest import Clock, create_plan, subscribe


def _twice_at_once(client: TestClient, path: str, body: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                   module: Any, slow: str) -> list[int]:
    """POST ``path`` from two threads; the first request is held for a moment inside its
    transaction, after it has read and changed the subscription (``module.slow``)."""
    real = getattr(module, slow)
    calls: list[int] = []

    def held(*a: Any, **kw: Any) -> Any:
        out = real(*a, **kw)
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.5)  # the second request arrives meanwhile
        return out

    monkeypatch.setattr(module, slow, held)
    codes: list[int] = []

    def post() -> None:
        codes.append(client.post(path, json=body).status_code)

    first = threading.Thread(target=post)
    first.start()
    time.sleep(0.15)
    second = threading.Thread(target=post)
    second.start()
    first.join(20)
    second.join(20)
    return sorted(codes)


def _count(engine: Engine, model: Any, column: Any, value: str) -> int:
    with Session(engine) as s:
        return len(s.exec(select(model).where(col(column) == value)).all())


def test_two_pauses_at_once_schedule_one_pause_and_send_one_email(
        client: TestClient, clock: Clock, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    create_plan(client)
    sub = subscribe(client)
    assert client.post("/v1/run-cycle", json={"send_emails": False}).json()["succeeded"] == 1
    codes = _twice_at_once(client, f"/v1/subscriptions/{sub['id']}/pause", {"at_period_end": True},
                           monkeypatch, pauses, "_confirm_scheduled")
    assert codes == [200, 409]
    assert _count(engine, Event, Event.type, "subscription.pause_scheduled") == 1
    assert _count(engine, Notification, Notification.kind, "subscription_pause_scheduled") == 1


def test_two_cancels_at_once_cancel_once(client: TestClient, clock: Clock, engine: Engine,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    create_plan(client, cancel_immediately=True)
    sub = subscribe(client)
    assert client.post("/v1/run-cycle", json={"send_emails": False}).json()["succeeded"] == 1
    codes = _twice_at_once(client, f"/v1/subscriptions/{sub['id']}/cancel", {"kind": "voluntary"},
                           monkeypatch, cancellations, "_confirm")
    assert codes == [200, 409]
    assert _count(engine, Event, Event.type, "subscription.canceled") == 1
