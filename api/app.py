"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from api import openapi_docs, threads
from api.deps import utc_now
from api.errors import install_error_handlers
from api.limits import BodyLimit
from api.routers import (
    account_links,
    cancel_pages,
    consents,
    customers,
    cycle,
    dashboard,
    events,
    health,
    imports,
    invoices,
    lifecycle,
    metrics,
    notifications,
    payment_methods,
    plans,
    pricing,
    refunds,
    reports,
    self_service,
    subscriptions,
    webhook_endpoints,
    webhooks,
)
from billing_engine.db import get_engine
from billing_engine.gateway.factory import build_gateway, check_gateway
from billing_engine.gateway.protocol import PaymentGateway
from billing_engine.settings import Settings, branding_warnings, get_settings


def create_app(
    *,
    settings: Settings | None = None,
    engine: Engine | None = None,
    gateway: PaymentGateway | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    settings.check_production_safety(serving_api=True)  # exit 78 / refuse to start when unsafe
    for warning in branding_warnings(settings):  # placeholders would reach customers
        logging.getLogger("billing.api").warning("warning: %s", warning)  # as the CLI words its own
    app = FastAPI(
        lifespan=threads.lifespan(settings.api_threads),  # quick requests' pool (api.threads)
        title="Billing engine API",
        version="1",
        description="Admin API (Bearer token) for plans, customers, consented cards, subscriptions, "
        "invoices, refunds, the run-cycle and reports; plus the customer cancel pages and the Stripe webhook.",
        docs_url=None, redoc_url=None,  # served offline by api.openapi_docs
    )
    app.state.settings = settings
    app.state.engine = engine if engine is not None else get_engine(settings.database_url, pool_size=settings.db_pool_size)
    app.state.gateway = gateway if gateway is not None else build_gateway(settings)
    app.state.clock = clock or utc_now
    install_error_handlers(app)
    openapi_docs.install(app)
    app.add_middleware(BodyLimit)
    for module in (health, plans, customers, payment_methods, subscriptions, invoices, refunds, notifications,
                   cycle, reports, dashboard, cancel_pages, webhooks, events, webhook_endpoints, imports,
                   metrics, self_service, account_links, lifecycle, pricing, consents):
        app.include_router(module.router)
    return app


def check_can_start(settings: Settings) -> None:
    """What :func:`create_app` needs, checked without building it: the gateway's settings and
    the database (reachable, schema at head; a new SQLite file is migrated, as the app
    would). ``billing serve --workers N`` runs this once before it starts the workers, so a
    bad setting or an unreachable database is one line and exit 78, as with one worker,
    instead of every worker failing the same way."""
    check_gateway(settings)
    get_engine(settings.database_url, pool_size=settings.db_pool_size).dispose()  # the workers open their own

