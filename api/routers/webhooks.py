"""``POST /webhooks/stripe``: Stripe's signed events (no admin token: the signature is the auth).

1. The ``Stripe-Signature`` header is verified with the SDK against
   ``BILLING_STRIPE_WEBHOOK_SECRET`` over the raw body, with a 300 s tolerance (older
   signatures are replays). Missing, forged or stale -> 400 problem, nothing changes.
   A signed body that is not a well-formed event (an array, a string, deep nesting, a
   field of the wrong type: :mod:`billing_engine.webhook_shape`) -> 400, nothing stored.
   No secret configured -> 503 (Stripe retries for three days).
2. One transaction: the event row is inserted under its id (the primary key of
   ``webhook_events``), its effect applied (:mod:`billing_engine.webhooks_stripe`) and
   ``handled_at`` stamped. A delivery of an id already stored answers 200 and applies
   nothing; an effect that fails rolls the insert back (5xx), so Stripe's retry
   applies it later.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from api.deps import EngineDep, GatewayDep, NowDep, SettingsDep
from api.limits import MAX_BODY_BYTES
from api.problems import problem
from api.responses import problems
from billing_engine import card_updates, webhooks_stripe
from billing_engine.db import transaction
from billing_engine.errors import ValidationError
from billing_engine.gateway.protocol import GatewayError, PaymentGateway
from billing_engine.gateway.webhooks import WebhookSignatureInvalid, construct_event
from billing_engine.settings import Settings
from billing_engine.webhook_shape import validate_event

log = logging.getLogger("api")
router = APIRouter(tags=["webhooks"])

TOLERANCE_SECONDS = 300


class WebhookAck(BaseModel):
    received: bool = True
    event_id: str
    type: str
    duplicate: bool  # true: this id was received before; nothing was applied now
    outcome: str | None


@router.post(
    "/webhooks/stripe",
    response_model=WebhookAck,
    responses=problems(400, 413, 503),
    summary="Receive a signed Stripe event (configure this URL in the Stripe dashboard)",
    openapi_extra={
        "parameters": [{"name": "Stripe-Signature", "in": "header", "required": True,
                        "schema": {"type": "string"}, "description": "Stripe's t=...,v1=... signature"}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "description": "A Stripe Event object, exactly as Stripe sent it"}}}},
    },
)
async def stripe_webhook(
    request: Request, engine: EngineDep, settings: SettingsDep, now: NowDep, gateway: GatewayDep,
) -> Any:
    secret = settings.stripe_webhook_secret.get_secret_value() if settings.stripe_webhook_secret else ""
    if not secret:
        return problem(503, "webhook secret not configured: set BILLING_STRIPE_WEBHOOK_SECRET (whsec_...)",
                       code="webhook_secret_not_configured", headers={"Retry-After": "300"})
    payload = await request.body()
    if len(payload) > MAX_BODY_BYTES:
        return problem(413, f"the body is larger than {MAX_BODY_BYTES} bytes", code="too_large", field="body")
    try:
        event = construct_event(payload, request.headers.get("stripe-signature"), secret, TOLERANCE_SECONDS)
    except WebhookSignatureInvalid as exc:
        return problem(400, str(exc), code="invalid_signature", field="Stripe-Signature")
    except GatewayError as exc:
        return problem(400, str(exc), code="invalid_event", field="body")
    except (RecursionError, ValueError, TypeError, AttributeError, KeyError):
        # signed, but not a JSON object the SDK can read (an array, a string, absurd nesting)
        return problem(400, "the body is not a Stripe event object", code="invalid_event", field="body")
    try:
        validate_event(event)
        receipt = await run_in_threadpool(_apply, engine, event, payload.decode("utf-8", "replace"), now,
                                          list(settings.dunning_schedule_days), gateway)
    except ValidationError as exc:  # signed, but not an event we can store
        return problem(400, str(exc), code="invalid_event", field="body")
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, DataError) as exc:
        # a field of an unexpected type the shape check let through: nothing was stored
        # (the transaction rolled back); Stripe shows the 400 in its dashboard
        log.exception("malformed Stripe event %s", event.get("id"))
        return problem(400, f"the event could not be applied: {type(exc).__name__}", code="invalid_event",
                       field="body")
    if receipt.type in webhooks_stripe.CARD_UPDATE_EVENTS:
        # after commit: a subscription in dunning is charged at once on its new card
        await run_in_threadpool(_retry_after_card_update, engine, gateway, event, now, settings)
    return WebhookAck(event_id=receipt.event_id, type=receipt.type, duplicate=receipt.duplicate,
                      outcome=receipt.outcome)


def _apply(
    engine: Engine, event: dict[str, Any], payload: str, now: datetime, schedule: list[int],
    gateway: PaymentGateway,
) -> webhooks_stripe.Receipt:
    with transaction(engine) as session:
        return webhooks_stripe.receive(session, event, payload=payload, now=now, schedule_days=schedule,
                                       gateway=gateway)


def _retry_after_card_update(
    engine: Engine, gateway: PaymentGateway, event: dict[str, Any], now: datetime, settings: Settings,
) -> None:
    obj = (event.get("data") or {}).get("object") or {}
    with Session(engine) as session:
        update = card_updates.find_for_stripe_object(session, obj)
        sub_id = update.subscription_id if update is not None and update.status == card_updates.COMPLETED else None
    if sub_id is None:
        return
    try:
        card_updates.retry_now(engine, gateway, sub_id, now=now, settings=settings)
    except Exception:  # the run-cycle retries it anyway (next_retry_at = now): never fail the webhook
        log.exception("immediate retry of %s after a card update failed", sub_id)

