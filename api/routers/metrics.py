"""``GET /metrics``: Prometheus metrics (text exposition format).

Behind a Bearer token: ``BILLING_METRICS_TOKEN`` (give it to the scraper) or any admin
token (read-only ones too). The backlog gauges are read from the database at each scrape
(a few indexed counts); the run counters are those of run-cycles made through this
process's ``POST /v1/run-cycle`` (``billing run-cycle`` writes its own: textfile or
Pushgateway, see docs/operations.md)."""

from __future__ import annotations

import hmac
import threading

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest

from api.auth import bearer_scheme, check
from api.responses import problems
from billing_engine import metrics
from billing_engine.db import readers

router = APIRouter(tags=["operations"])
_lock = threading.Lock()


def app_metrics(app: object) -> tuple[object, metrics.RunMetrics]:
    """The app's registry and run counters (created on first use)."""
    state = app.state  # type: ignore[attr-defined]
    with _lock:
        if getattr(state, "metrics", None) is None:
            state.metrics = metrics.registry_for(readers(state.engine), clock=state.clock)
    return state.metrics  # type: ignore[no-any-return]


def _metrics_token_ok(request: Request) -> bool:
    token = request.app.state.settings.metrics_token
    if token is None:
        return False
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode())


@router.get("/metrics", response_class=Response, responses={
    200: {"description": "Prometheus text format 0.0.4.", "content": {metrics.CONTENT_TYPE: {
        "example": "# HELP billing_due_backlog Subscriptions with billing work due now.\n"
                   "# TYPE billing_due_backlog gauge\nbilling_due_backlog 12.0\n"}}},
    **problems(401, 403, 429, 503)},
    summary="Prometheus metrics: backlogs, unresolved charges, outbox, claims, run counters",
    dependencies=[])
def get_metrics(request: Request, _creds: object = Depends(bearer_scheme)) -> Response:
    if not _metrics_token_ok(request):
        denied: JSONResponse | None = check(request, allow_read=True)
        if denied is not None:
            return denied
    registry, _ = app_metrics(request.app)
    return Response(generate_latest(registry), media_type=metrics.CONTENT_TYPE)  # type: ignore[arg-type]
