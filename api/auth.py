"""Admin authentication: ``Authorization: Bearer <token>`` against ``settings.admin_tokens``.

Never open by default: with no token configured every admin endpoint answers 503 saying
BILLING_ADMIN_TOKENS must be set. A missing or wrong token is a 401 problem with
``WWW-Authenticate: Bearer``; the request is not processed at all (nothing changes).
The token is compared in constant time against every configured token.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.routing import BaseRoute

from api.problems import problem
from billing_engine.settings import Settings

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="An admin token from BILLING_ADMIN_TOKENS.",
)

REALM = 'Bearer realm="billing-admin"'


class AdminAuthFailed(Exception):
    """Raised by :func:`require_admin`; turned into a 401/503 problem by the handler."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__("admin authentication failed")
        self.response = response


def token_ok(given: str, tokens: list[str]) -> bool:
    """Constant-time check of ``given`` against every configured token."""
    given_b = given.encode("utf-8", "surrogatepass")
    ok = False
    for t in tokens:
        ok |= hmac.compare_digest(given_b, t.encode("utf-8", "surrogatepass"))
    return ok


def check(request: Request) -> JSONResponse | None:
    """None if the request carries a valid admin token, else the problem to answer with."""
    settings: Settings = request.app.state.settings
    tokens = [t for t in settings.admin_tokens if t]
    if not tokens:
        return problem(
            503,
            "the admin API is disabled: set BILLING_ADMIN_TOKENS (one or more comma-separated secrets)",
            code="admin_api_disabled",
        )
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if not header:
        return problem(401, "missing admin token: send 'Authorization: Bearer <token>'",
                       code="unauthorized", headers={"WWW-Authenticate": REALM})
    if scheme.lower() != "bearer" or not value.strip() or not token_ok(value.strip(), tokens):
        return problem(401, "invalid admin token", code="unauthorized",
                       headers={"WWW-Authenticate": REALM + ', error="invalid_token"'})
    return None


async def require_admin(request: Request, _creds: object = Depends(bearer_scheme)) -> None:
    """Dependency for every admin route (also documents the security scheme)."""
    denied = check(request)
    if denied is not None:
        raise AdminAuthFailed(denied)


def _is_admin_route(route: BaseRoute | None) -> bool:
    deps = getattr(route, "dependencies", None) or []
    return any(getattr(d, "dependency", None) is require_admin for d in deps)


def rejection_for(request: Request) -> JSONResponse | None:
    """For error handlers: the auth problem if this is an admin route and auth fails."""
    if not _is_admin_route(request.scope.get("route")):
        return None
    return check(request)


async def auth_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AdminAuthFailed)
    return exc.response


def _query_names(dependant: Any) -> set[str]:
    names: set[str] = set()
    todo = [dependant]
    while todo:
        d = todo.pop()
        names.update(getattr(p, "alias", p.name) for p in d.query_params)
        todo.extend(d.dependencies)
    return names


def strict_query(request: Request) -> None:
    """Refuse query parameters the endpoint does not know, or scalars given twice: a typo
    such as ``?staus=active`` must not silently return everything."""
    from billing_engine.errors import ValidationError

    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    for name in request.query_params:
        if name not in known:
            raise ValidationError(f"unknown query parameter {name!r}", field=name or "query")
        if len(request.query_params.getlist(name)) > 1:
            raise ValidationError("must be given at most once", field=name)


ADMIN = [Depends(require_admin), Depends(strict_query)]
