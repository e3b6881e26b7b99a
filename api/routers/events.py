"""``/v1/events``: the merchant-facing event feed (the same JSON the webhooks POST), in
cursor pages: a merchant who missed deliveries catches up from here alone. Plus resend."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlmodel import Session

from api import idempotency
from api.auth import ADMIN
from api.deps import EngineDep, NowDep
from api.idempotency import IdempotencyKey
from api.responses import admin
from api.schemas import Input, Limit, Str40, UtcDateTime, clean_optional, clean_text
from billing_engine import event_feed, webhook_delivery, webhook_endpoints
from billing_engine.db import transaction
from billing_engine.errors import ValidationError
from billing_engine.periods import parse_datetime

router = APIRouter(prefix="/v1/events", tags=["events"], dependencies=ADMIN)

EventId = Annotated[str, Path(min_length=1, max_length=40, description="Event id (evt_...)."), AfterValidator(clean_text)]
When = Annotated[str | None, Query(max_length=40, description="ISO-8601 instant with an offset."),
                 AfterValidator(clean_optional)]


class EventOut(BaseModel):
    """One public event (docs/webhooks.md lists each type's ``data``)."""

    id: str = Field(examples=["evt_1042"])
    type: str = Field(examples=["subscription.canceled"])
    timestamp: str = Field(description="When it happened (UTC, ISO-8601).", examples=["2026-02-15T09:00:00Z"])
    data: dict[str, Any]


class EventPage(BaseModel):
    data: list[EventOut]
    has_more: bool = Field(description="True when more events follow; pass next_cursor as `after`.")
    next_cursor: str | None


class ResendRequest(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"created_gte": "2026-02-15T00:00:00Z", "created_lt": "2026-02-16T00:00:00Z",
         "endpoint": "we_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "types": ["subscription.canceled", "invoice.paid"]}]})

    created_gte: UtcDateTime | None = Field(default=None, description="Resend every event created at or after ...")
    created_lt: UtcDateTime | None = Field(default=None, description="... and before this instant (default: no end).")
    endpoint: Str40 | None = Field(default=None, description="Only to this endpoint (default: every enabled "
                                   "endpoint subscribed to the event).")
    types: list[Str40] | None = Field(default=None, max_length=50, description="Only these public types (range only).")


class ResendOut(BaseModel):
    queued: int = Field(description="Deliveries queued; the delivery worker sends them (billing webhook deliver).",
                        examples=[3])


def _when(v: str | None, field: str) -> datetime | None:
    return None if v is None else parse_datetime(v, field)


@router.get("", response_model=EventPage, responses=admin(),
            summary="List events (oldest first) after a cursor, by type and creation time")
def list_events(
    engine: EngineDep,
    after: Annotated[str | None, Query(max_length=40, description="Cursor: the next_cursor (an event id) of the "
                                       "previous page."), AfterValidator(clean_optional)] = None,
    type: Annotated[str | None, Query(max_length=1000, description="Public types, comma separated "
                                      "(subscription.* matches a family)."), AfterValidator(clean_optional)] = None,
    created_gte: When = None,
    created_lt: When = None,
    subscription: Annotated[str | None, Query(max_length=40, description="Only events about this subscription "
                                              "(sub_...)."), AfterValidator(clean_optional)] = None,
    customer: Annotated[str | None, Query(max_length=40, description="Only events about this customer (cus_...) "
                                          "or their subscriptions."), AfterValidator(clean_optional)] = None,
    limit: Annotated[Limit, Query()] = 100,
) -> EventPage:
    types = event_feed.parse_types(type, field="type")
    cursor = event_feed.parse_event_id(after, field="after") if after else None
    with Session(engine) as s:
        rows = event_feed.list_events(s, after=cursor, types=types, created_gte=_when(created_gte, "created_gte"),
                                      created_lt=_when(created_lt, "created_lt"), subscription_id=subscription,
                                      customer_id=customer, limit=limit + 1)
        has_more = len(rows) > limit
        data = event_feed.present_many(s, rows[:limit])
    return EventPage(data=[EventOut(**d) for d in data], has_more=has_more,
                     next_cursor=data[-1]["id"] if has_more and data else None)


@router.get("/{event}", response_model=EventOut, responses=admin(404), summary="Show one event")
def show_event(event: EventId, engine: EngineDep) -> EventOut:
    with Session(engine) as s:
        return EventOut(**event_feed.present_many(s, [event_feed.get(s, event)])[0])


@router.post("/{event}/resend", response_model=ResendOut, status_code=202, responses=admin(404),
             summary="Send an event again (any age) to its endpoints, or to one")
def resend_event(request: Request, event: EventId, engine: EngineDep, now: NowDep,
                 endpoint: Annotated[str | None, Query(max_length=40, description="Send only to this endpoint (we_...); default: every enabled endpoint subscribed to the event's type."),
                                     AfterValidator(clean_optional)] = None,
                 idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """A retry with the same Idempotency-Key replays the first answer and queues nothing again."""
    eid = event_feed.parse_event_id(event)
    if endpoint is not None:
        with transaction(engine) as s:
            webhook_endpoints.get(s, endpoint)

    def action() -> ResendOut:
        return ResendOut(queued=webhook_delivery.resend(engine, now=now, event_id=eid, endpoint_id=endpoint))

    return idempotency.after_effect(request, engine, idempotency_key, None, 202, action)


@router.post("/resend", response_model=ResendOut, status_code=202, responses=admin(404),
             summary="Send every event of a time range again")
def resend_range(request: Request, body: ResendRequest, engine: EngineDep, now: NowDep,
                 idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """A retry with the same Idempotency-Key replays the first answer and queues nothing again."""
    created_gte = body.created_gte
    if created_gte is None:
        raise ValidationError("is required (the start of the range)", field="created_gte")
    if body.created_lt is not None and body.created_lt <= created_gte:
        raise ValidationError("must be after created_gte", field="created_lt")
    if body.endpoint is not None:
        with Session(engine) as s:
            webhook_endpoints.get(s, body.endpoint)
    types = event_feed.parse_types(body.types, field="types") if body.types else None

    def action() -> ResendOut:
        return ResendOut(queued=webhook_delivery.resend(
            engine, now=now, created_gte=created_gte, created_lt=body.created_lt, endpoint_id=body.endpoint,
            types=types))

    return idempotency.after_effect(request, engine, idempotency_key, body, 202, action)
