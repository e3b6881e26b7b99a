"""The FastAPI application factory."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from api.deps import utc_now
from billing_engine.db import get_engine
from billing_engine.gateway.factory import build_gateway
from billing_engine.gateway.protocol import PaymentGateway
from billing_engine.settings import Settings, get_settings

# Routers register by module; each exposes `router` (an APIRouter).
ROUTER_MODULES = (
    "api.routers.health",
    "api.routers.plans",
    "api.routers.customers",
    "api.routers.payment_methods",
    "api.routers.subscriptions",
    "api.routers.invoices",
    "api.routers.refunds",
    "api.routers.notifications",
    "api.routers.cycle",
    "api.routers.links",
    "api.routers.reports",
    "api.routers.dashboard",
    "api.routers.cancel_pages",
    "api.routers.webhooks",
)


def create_app(
    *,
    settings: Settings | None = None,
    engine: Engine | None = None,
    gateway: PaymentGateway | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    settings.check_production_safety(serving_api=True)  # exit 78 / refuse to start when unsafe
    app = FastAPI(
        title="Billing engine API",
        version="1",
        description="Admin API (Bearer token) for plans, customers, consented cards, subscriptions, "
        "invoices, refunds, the run-cycle and reports; plus the customer cancel pages and the Stripe webhook.",
    )
    app.state.settings = settings
    app.state.engine = engine if engine is not None else get_engine(settings.database_url)
    app.state.gateway = gateway if gateway is not None else build_gateway(settings)
    app.state.clock = clock or utc_now
    try:
        from api.errors import install_error_handlers
    except ModuleNotFoundError:
        pass
    else:
        install_error_handlers(app)
    for name in ROUTER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        app.include_router(module.router)
    return app
