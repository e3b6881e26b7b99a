"""Request-scoped dependencies: engine, session (unit of work), settings, gateway, clock.

The ones that only read ``app.state`` are ``async def``: FastAPI runs a plain ``def``
dependency in the thread pool, a hop (and a GIL hand-over) per dependency per request that
cost more than the work itself. Only :func:`get_session`, which talks to the database,
stays a plain ``def``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing_engine.db import readers, transaction
from billing_engine.gateway.protocol import PaymentGateway
from billing_engine.settings import Settings


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine_dep(request: Request) -> Engine:
    """The app's engine; for GET/HEAD requests (which change nothing) its reader form, so
    on SQLite reads do not queue for the write lock (:func:`billing_engine.db.readers`)."""
    engine: Engine = request.app.state.engine
    if request.method in ("GET", "HEAD"):
        state = request.app.state
        reader: Engine | None = getattr(state, "reader_engine", None)
        if reader is None:
            reader = state.reader_engine = readers(engine)
        return reader
    return engine


async def get_gateway(request: Request) -> PaymentGateway:
    gw: PaymentGateway = request.app.state.gateway
    return gw


async def get_now(request: Request) -> datetime:
    """The request's "now" (the app's injectable clock; tests freeze it)."""
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


def get_session(request: Request) -> Iterator[Session]:
    """Unit of work: committed when the endpoint returns without error."""
    engine: Engine = request.app.state.engine
    with transaction(engine) as session:
        yield session


def utc_now() -> datetime:
    return datetime.now(UTC)


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
GatewayDep = Annotated[PaymentGateway, Depends(get_gateway)]
NowDep = Annotated[datetime, Depends(get_now)]
EngineDep = Annotated[Engine, Depends(get_engine_dep)]

