"""``/v1/webhook_endpoints``: register, list, show, change, disable / enable, rotate the
secret of the URLs that receive signed events (Standard Webhooks)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlmodel import Session

from api import idempotency
from api.auth import ADMIN, actor
from api.deps import EngineDep, NowDep, SettingsDep
from api.idempotency import IdempotencyKey
from api.responses import admin
from api.schemas import Input, Limit, Page, Str200, Str2000, clean_optional, clean_text
from billing_engine import webhook_delivery, webhook_endpoints
from billing_engine.db import transaction

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhooks"], dependencies=ADMIN)

EndpointId = Annotated[str, Path(min_length=1, max_length=40, description="Endpoint id (we_...)."),
                       AfterValidator(clean_text)]


class EndpointCreate(Input):
    url: Str2000 = Field(description="https:// URL that receives the POSTs.", examples=["https://app.example.com/hooks"])
    events: list[Annotated[str, Field(max_length=60)]] = Field(
        default_factory=lambda: ["*"], max_length=50,
        description="Public event types (subscription.* for a family), or [\"*\"] for all.")
    description: Str200 = Field("", description="Your own note on what the endpoint is for (at most 200 "
                                "characters).", examples=["Production CRM sync"])


class EndpointUpdate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://app.example.com/hooks/v2", "events": ["subscription.*", "invoice.paid"],
         "description": "Production CRM sync"}]})

    url: Str2000 | None = Field(None, description="New https:// URL that receives the POSTs.")
    events: list[Annotated[str, Field(max_length=60)]] | None = Field(
        default=None, max_length=50, description="New public event types (subscription.* for a family), or [\"*\"] "
        "for all; replaces the list.")
    description: Str200 | None = Field(None, description="New note on what the endpoint is for.")


class RotateRequest(Input):
    grace_hours: float | None = Field(default=None, ge=0, le=24 * 30, description="How long the old secret keeps "
                                      "signing (default BILLING_WEBHOOK_SECRET_GRACE_HOURS); 0 after a leak.",
                                      examples=[24])


class DeliveryOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "whd_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "endpoint_id": "we_01JH8Z7Q2W3E4R5T6Y7U8I9O0P",
        "event_id": "evt_1042", "replay": False, "status": "succeeded", "attempts": 1, "next_attempt_at": None,
        "last_status_code": 200, "last_error": None, "created_at": "2026-02-15T09:00:00Z",
        "delivered_at": "2026-02-15T09:00:01Z"}]})

    id: str = Field(description="The delivery's id.")
    endpoint_id: str = Field(description="The endpoint (we_...) it is sent to.")
    event_id: str = Field(description="The event (evt_...) it carries.")
    replay: bool = Field(description="True: queued by a resend, not when the event happened.")
    status: str = Field(description="pending (due at next_attempt_at) | sending | succeeded | failed (retries "
                        "exhausted, or the endpoint was disabled).")
    attempts: int = Field(description="POSTs tried so far.")
    next_attempt_at: datetime | None = Field(description="When the next try is due (UTC, ISO-8601); null once "
                                             "succeeded or failed.")
    last_status_code: int | None = Field(description="HTTP status the endpoint answered the last try with; null: "
                                         "no answer (timeout, connection refused) or not tried yet.")
    last_error: str | None = Field(description="Why the last try failed, if it did.")
    created_at: datetime = Field(description="When the delivery was queued (UTC, ISO-8601).")
    delivered_at: datetime | None = Field(description="When the endpoint accepted it with a 2xx (UTC, ISO-8601); "
                                          "null until then.")


class EndpointOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "we_01JH8Z7Q2W3E4R5T6Y7U8I9O0P", "url": "https://app.example.com/hooks",
        "description": "Production CRM sync", "events": ["subscription.*", "invoice.paid"], "status": "enabled",
        "failing_since": None, "disabled_at": None, "disabled_reason": None, "previous_secret_expires_at": None,
        "created_at": "2026-01-15T09:00:00Z", "updated_at": "2026-01-15T09:00:00Z",
        "secret": "whsec_5f1c2a9e0b7d4c3f8a6e", "recent_deliveries": None}]})

    id: str = Field(examples=["we_01JH..."])
    url: str
    description: str = Field(description="Your own note on what the endpoint is for.")
    events: list[str]
    status: str = Field(description="enabled | disabled")
    failing_since: datetime | None = Field(description="Since when every delivery try has failed (UTC, ISO-8601); "
                                           "null after a success. Failing for days disables the endpoint.")
    disabled_at: datetime | None = Field(description="When the endpoint was disabled (UTC, ISO-8601); null while "
                                         "enabled.")
    disabled_reason: str | None = Field(description="Why it was disabled (\"disabled by an admin\", or every "
                                        "delivery failing for days, with the last error); null while enabled.")
    previous_secret_expires_at: datetime | None = Field(description="Until then the previous secret signs too.")
    created_at: datetime
    updated_at: datetime = Field(description="The last change (UTC, ISO-8601).")
    secret: str | None = Field(default=None, description="whsec_...: only in the answers to create and rotate-secret.")
    recent_deliveries: list[DeliveryOut] | None = Field(None, description="Show only: the latest deliveries, newest "
                                                        "first; null in lists.")


def _out(ep: Any, *, secret: bool = False) -> EndpointOut:
    return EndpointOut(**webhook_endpoints.summary(ep, with_secret=secret))


@router.post("", status_code=201, response_model=EndpointOut, responses=admin(),
             summary="Register an endpoint (the answer carries its signing secret)")
def create_endpoint(request: Request, body: EndpointCreate, engine: EngineDep, settings: SettingsDep, now: NowDep,
                    idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """A retry with the same Idempotency-Key replays the first answer (the same endpoint and
    secret) instead of registering the URL a second time."""
    def action(s: Session) -> EndpointOut:
        ep = webhook_endpoints.create(s, url=body.url, event_types=body.events, settings=settings, now=now,
                                      description=body.description, actor=actor(request))
        return _out(ep, secret=True)

    return idempotency.in_transaction(request, engine, idempotency_key, body, 201, action)


@router.get("", response_model=Page[EndpointOut], responses=admin(), summary="List endpoints")
def list_endpoints(
    engine: EngineDep,
    status: Annotated[str | None, Query(max_length=20, description="enabled | disabled"),
                      AfterValidator(clean_optional)] = None,
    limit: Annotated[Limit, Query()] = 100,
    after: Annotated[str | None, Query(max_length=40, description="Cursor: the next_cursor (an endpoint id, we_...) "
                                       "of the previous page."), AfterValidator(clean_optional)] = None,
) -> Page[EndpointOut]:
    with Session(engine) as s:
        rows = webhook_endpoints.list_endpoints(s, status=status, limit=limit + 1, after=after)
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page[EndpointOut](data=[_out(r) for r in rows], has_more=has_more,
                             next_cursor=rows[-1].id if has_more and rows else None)


@router.get("/{endpoint}", response_model=EndpointOut, responses=admin(404),
            summary="Show an endpoint with its recent deliveries")
def show_endpoint(endpoint: EndpointId, engine: EngineDep) -> EndpointOut:
    with Session(engine) as s:
        ep = webhook_endpoints.get(s, endpoint)
        out = _out(ep)
        out.recent_deliveries = [DeliveryOut(**webhook_delivery.delivery_summary(d))
                                 for d in webhook_delivery.list_deliveries(s, endpoint_id=ep.id, limit=20)]
        return out


@router.patch("/{endpoint}", response_model=EndpointOut, responses=admin(404), summary="Change URL, events, description")
def update_endpoint(request: Request, endpoint: EndpointId, body: EndpointUpdate, engine: EngineDep, settings: SettingsDep,
                    now: NowDep) -> EndpointOut:
    with transaction(engine) as s:
        ep = webhook_endpoints.update(s, webhook_endpoints.get(s, endpoint), settings=settings, now=now, url=body.url,
                                      event_types=body.events, description=body.description, actor=actor(request))
        return _out(ep)


@router.post("/{endpoint}/disable", response_model=EndpointOut, responses=admin(404), summary="Stop deliveries")
def disable_endpoint(request: Request, endpoint: EndpointId, engine: EngineDep, now: NowDep,
                     idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> EndpointOut:
        return _out(webhook_endpoints.disable(s, webhook_endpoints.get(s, endpoint), now=now, actor=actor(request)))

    return idempotency.in_transaction(request, engine, idempotency_key, None, 200, action)


@router.post("/{endpoint}/enable", response_model=EndpointOut, responses=admin(404),
             summary="Resume deliveries (what queued meanwhile goes out)")
def enable_endpoint(request: Request, endpoint: EndpointId, engine: EngineDep, now: NowDep,
                    idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> EndpointOut:
        return _out(webhook_endpoints.enable(s, webhook_endpoints.get(s, endpoint), now=now, actor=actor(request)))

    return idempotency.in_transaction(request, engine, idempotency_key, None, 200, action)


@router.post("/{endpoint}/rotate-secret", response_model=EndpointOut, responses=admin(404),
             summary="New signing secret; the old one keeps signing for the grace period")
def rotate_secret(request: Request, endpoint: EndpointId, engine: EngineDep, settings: SettingsDep, now: NowDep,
                  body: RotateRequest | None = None, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """A retry with the same Idempotency-Key replays the first answer (its secret) instead of
    rotating again, which would retire the secret the first attempt made."""
    hours = body.grace_hours if body and body.grace_hours is not None else settings.webhook_secret_grace_hours

    def action(s: Session) -> EndpointOut:
        ep = webhook_endpoints.rotate_secret(s, webhook_endpoints.get(s, endpoint), now=now,
                                             grace=timedelta(hours=hours), actor=actor(request))
        return _out(ep, secret=True)

    return idempotency.in_transaction(request, engine, idempotency_key, body, 200, action)
