"""``POST /v1/run-cycle``: charge what is due now (or as of ``at``), or a dry run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from api import idempotency
from api.auth import ADMIN, actor
from api.deps import EngineDep, GatewayDep, NowDep, SettingsDep
from api.idempotency import IdempotencyKey
from api.responses import admin
from api.routers.metrics import app_metrics
from api.schemas import CycleSummaryOut, RunCycleRequest
from api.threads import long_running
from billing_engine import audit
from billing_engine.clock import check_run_instant
from billing_engine.cycle import run_cycle
from billing_engine.settings import Mode, Settings

router = APIRouter(tags=["run-cycle"], dependencies=ADMIN)


def _deliver(settings: Settings) -> Callable[[Engine, datetime], int] | None:
    try:
        from billing_engine.notifications import deliver_pending
    except ImportError:
        return None
    return lambda eng, now: int(deliver_pending(eng, now, settings))


@router.post("/v1/run-cycle", response_model=CycleSummaryOut, responses=admin(),
             summary="Charge due renewals, retry dunning, end scheduled cancellations, queue reminders")
@long_running  # seconds on a large database: not in the quick requests' pool (api.threads)
def trigger_run_cycle(request: Request, engine: EngineDep, gateway: GatewayDep, settings: SettingsDep, now: NowDep,
                      body: RunCycleRequest | None = None, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    body = body or RunCycleRequest.model_validate({})
    at = body.at or now
    check_run_instant(at, now, gateway_name=gateway.name, simulate=body.simulate,
                      production=settings.mode is Mode.PRODUCTION)

    def action() -> CycleSummaryOut:
        deliver = _deliver(settings) if body.send_emails and not body.dry_run else None
        summary = run_cycle(engine, gateway, now=at, settings=settings, limit=body.limit, dry_run=body.dry_run,
                            deliver=deliver)
        audit.run_cycle_completed(engine, summary, actor=actor(request), simulate=body.simulate)
        app_metrics(request.app)[1].record(summary)  # GET /metrics
        return CycleSummaryOut.model_validate(summary.as_dict())

    return idempotency.after_effect(request, engine, idempotency_key, body, 200, action)
