"""``GET /healthz``: is the app up and can it reach its database? (No auth.)"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import EngineDep
from api.problems import problem
from api.responses import problems
from api.schemas import Health

router = APIRouter(tags=["health"])
log = logging.getLogger("api")


@router.get("/healthz", response_model=Health, responses=problems(503), summary="Liveness and database check")
def healthz(engine: EngineDep) -> Health | JSONResponse:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.error("health check: database unreachable: %s", exc)
        return problem(503, "the database is unreachable", code="database_unavailable", headers={"Retry-After": "5"})
    return Health(status="ok", database="ok")
