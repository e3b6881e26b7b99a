"""``/v1/notifications``: the customer e-mail outbox (list, and flush what is due)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api import idempotency
from api.auth import ADMIN, actor
from api.deps import EngineDep, NowDep, SettingsDep
from api.idempotency import IdempotencyKey
from api.responses import admin
from billing_engine import audit, notifications
from billing_engine.db import transaction
from billing_engine.events import EventType

router = APIRouter(prefix="/v1/notifications", tags=["notifications"], dependencies=ADMIN)

Status = Literal["pending", "sending", "sent", "failed"]


class NotificationOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "ntf_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "kind": "renewal_reminder", "to": "ada@example.com",
        "status": "sent", "attempts": 1, "subscription_id": "sub_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "created_at": "2026-01-08T09:00:00Z", "sent_at": "2026-01-08T09:00:02Z",
        "next_attempt_at": "2026-01-08T09:00:00Z", "message_id": "<ntf_01JH8Z7Q2W3E4R5T6Y7U8I9O0P@example.com>",
        "last_error": None}]})

    id: str
    kind: str
    to: str
    status: Status
    attempts: int
    subscription_id: str | None
    created_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime
    message_id: str | None
    last_error: str | None


class NotificationList(BaseModel):
    data: list[NotificationOut]
    counts: dict[str, int] = Field(description="How many e-mails the outbox holds in each status.")


class SendResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"sent": 3, "counts": {
        "pending": 0, "sending": 0, "sent": 120, "failed": 1}}]})

    sent: int = Field(description="E-mails handed to the mail server by this call.")
    counts: dict[str, int]


@router.get("", response_model=NotificationList, responses=admin(), summary="The most recent e-mails in the outbox")
def list_notifications(
    engine: EngineDep,
    status: Annotated[Status | None, Query(description="Only e-mails in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first.")] = 50,
) -> NotificationList:
    with transaction(engine) as s:
        rows = notifications.list_notifications(s, status=status, limit=limit)
        return NotificationList(
            data=[NotificationOut(id=n.id, kind=n.kind, to=n.to_email, status=n.status,  # type: ignore[arg-type]
                                  attempts=n.attempts, subscription_id=n.subscription_id, created_at=n.created_at,
                                  sent_at=n.sent_at, next_attempt_at=n.next_attempt_at, message_id=n.message_id,
                                  last_error=n.last_error) for n in rows],
            counts=notifications.status_counts(s))


@router.post("/send", response_model=SendResult, responses=admin(),
             summary="Send the e-mails that are due now (retries included); safe to call concurrently")
def send_notifications(
    request: Request, engine: EngineDep, settings: SettingsDep, now: NowDep,
    limit: Annotated[int, Query(ge=1, le=5000, description="Try at most this many e-mails.")] = 500,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    def action() -> SendResult:
        sent = notifications.deliver_pending(engine, now, settings, limit=limit)
        audit.record(engine, EventType.NOTIFICATIONS_SENT, at=now, actor=actor(request),
                     payload={"sent": sent, "limit": limit, "transport": settings.mail_transport})
        with transaction(engine) as s:
            return SendResult(sent=sent, counts=notifications.status_counts(s))

    return idempotency.after_effect(request, engine, idempotency_key, None, 200, action)
