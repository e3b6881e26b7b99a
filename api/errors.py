"""One error shape for the whole API: RFC 9457 ``application/problem+json``.

Engine errors (:class:`billing_engine.errors.BillingError`) map to their ``http_status``;
the gateway refusing a request (:class:`GatewayError`, not unreachable) is a 502;
FastAPI's request validation errors become 422 problems listing every offending field;
unknown routes and wrong methods keep their 404 / 405; anything else is a 500 problem
without a stack trace (logged server-side). Every problem has ``type``, ``title``,
``status``, ``detail``, ``code`` and ``field`` (the offending field, or null).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import AdminAuthFailed, auth_failed, rejection_for
from api.problems import TITLES, problem
from billing_engine.errors import BillingError
from billing_engine.gateway.protocol import GatewayError

log = logging.getLogger("api")

# --------------------------------------------------------------------------- request validation

_LOCATIONS = {"body", "query", "path", "header", "cookie"}


def _field_path(loc: Iterable[Any]) -> tuple[str, str]:
    parts = list(loc)
    where = "body"
    if parts and parts[0] in _LOCATIONS:
        where = str(parts.pop(0))
    # pydantic adds the type of a tagged/union member or a validator name: keep real field names only
    names = [str(p) for p in parts if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
    return where, ".".join(names)


def _message(err: Mapping[str, Any]) -> str:
    """pydantic's message, worded like the engine's own validators where they overlap."""
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be an integer"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"must be at least {ctx.get('min_length')} characters"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "json_invalid":
        return f"invalid JSON: {ctx.get('error', 'malformed document')}"
    if kind in ("model_attributes_type", "dict_type", "model_type"):
        return "must be a JSON object"
    if kind == "timezone_aware":
        return "must be timezone-aware (e.g. 2026-01-31T10:00:00Z)"
    msg = str(err.get("msg", "is invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return msg


def validation_problem(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    items: list[dict[str, str]] = []
    for err in errors:
        where, path = _field_path(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            path = "body"
        items.append({"field": path or where, "location": where, "message": _message(err)})
    if not items:
        items.append({"field": "body", "location": "body", "message": "invalid request"})
    first = items[0]
    detail = "; ".join(f"{i['field']}: {i['message']}" for i in items[:5])
    if len(items) > 5:
        detail += f"; and {len(items) - 5} more"
    return problem(422, detail, field=first["field"], errors=items)


# --------------------------------------------------------------------------- handlers


def _billing_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BillingError)
    status = exc.http_status if 400 <= exc.http_status <= 599 else 400
    if status >= 500 and status != 503:
        log.error("server-side billing error on %s %s: %s", request.method, request.url.path, exc)
        return problem(status, "the server is misconfigured; see its log", code=exc.code)
    headers = {"Retry-After": "30"} if status == 503 else None
    return problem(status, str(exc), code=exc.code, field=exc.field, headers=headers)


def _gateway_error(request: Request, exc: Exception) -> JSONResponse:
    """The gateway refused the request itself (bad API key, wrong account, invalid request):
    our configuration, not the customer's card -> 502. Unreachable stays 503 (a BillingError)."""
    assert isinstance(exc, GatewayError)
    if isinstance(exc, BillingError):
        return _billing_error(request, exc)
    log.error("payment gateway refused %s %s: %s", request.method, request.url.path, exc)
    return problem(502, f"the payment gateway refused the request (a configuration problem on our side, "
                        f"not the card; see the server log): {exc}", code="gateway_error")


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # An admin route answers 401 before it says anything about the body.
    denied = rejection_for(request)
    if denied is not None:
        return denied
    return validation_problem(exc.errors())


def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        denied = rejection_for(request)
        if denied is not None:
            return denied
        return validation_problem([{"type": "json_invalid", "loc": ("body",),
                                    "ctx": {"error": "the body is not UTF-8 encoded JSON"}}])
    detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "error")
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem(exc.status_code, detail, headers=getattr(exc, "headers", None))


def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("integrity error on %s %s: %s", request.method, request.url.path, exc)
    return problem(409, "the request conflicts with existing data (a concurrent change?); retry", code="conflict")


def _database_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("database error on %s %s: %s", request.method, request.url.path, exc)
    if isinstance(exc, OperationalError):
        return problem(503, "the database is unavailable; retry later", headers={"Retry-After": "5"})
    return problem(500, "database error; see the server log")


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "internal error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AdminAuthFailed, auth_failed)
    app.add_exception_handler(BillingError, _billing_error)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
