"""``/v1/plans``: create, list, show, rename / (de)activate (re-price only without subscribers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator
from sqlmodel import Session

from api import idempotency
from api import presenters as P
from api.auth import ADMIN, actor
from api.deps import EngineDep, NowDep
from api.idempotency import IdempotencyKey
from api.responses import admin
from api.schemas import ListOf, PlanCreate, PlanOut, PlanUpdate, clean_text
from billing_engine import plans
from billing_engine.db import transaction

router = APIRouter(prefix="/v1/plans", tags=["plans"], dependencies=ADMIN)

PlanRef = Annotated[str, Path(min_length=1, max_length=64, description="Plan id (plan_...) or code."), AfterValidator(clean_text)]


@router.post("", status_code=201, response_model=PlanOut, responses=admin(409), summary="Create a plan")
def create_plan(request: Request, body: PlanCreate, engine: EngineDep, now: NowDep,
                idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> PlanOut:
        p = plans.create(s, code=body.code, name=body.name, amount_minor=body.amount_minor, currency=body.currency,
                         interval=body.interval, interval_count=body.interval_count, trial_days=body.trial_days,
                         cancel_immediately=body.cancel_immediately, reminder_days=body.reminder_days,
                         tier=body.tier, receipts=body.receipts, now=now, actor=actor(request))
        return P.plan(p, subscriber_count=0)

    return idempotency.in_transaction(request, engine, idempotency_key, body, 201, action)


@router.get("", response_model=ListOf[PlanOut], responses=admin(), summary="List plans")
def list_plans(engine: EngineDep,
               active: Annotated[bool | None, Query(description="Only active (true) or inactive (false) plans.")] = None
               ) -> ListOf[PlanOut]:
    with transaction(engine) as s:
        rows = plans.list_plans(s, active=active)
        counts = plans.subscriber_counts(s, [p.id for p in rows])  # one query for the whole list
        return ListOf[PlanOut](data=[P.plan(p, subscriber_count=counts.get(p.id, 0)) for p in rows])


@router.get("/{plan}", response_model=PlanOut, responses=admin(404), summary="Show a plan")
def show_plan(plan: PlanRef, engine: EngineDep) -> PlanOut:
    with transaction(engine) as s:
        return P.plan_with_count(s, plans.get(s, plan))


@router.patch("/{plan}", response_model=PlanOut, responses=admin(404, 409),
              summary="Rename or (de)activate a plan; re-price it only while it has no subscribers")
def update_plan(request: Request, plan: PlanRef, body: PlanUpdate, engine: EngineDep, now: NowDep,
                idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def action(s: Session) -> PlanOut:
        p = plans.update(s, plan, now=now, name=body.name, active=body.active, amount_minor=body.amount_minor,
                         currency=body.currency, interval=body.interval, interval_count=body.interval_count,
                         actor=actor(request))
        return P.plan_with_count(s, p)

    return idempotency.in_transaction(request, engine, idempotency_key, body, 200, action)
