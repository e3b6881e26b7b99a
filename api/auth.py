"""Admin authentication: ``Authorization: Bearer <token>`` against ``settings.admin_tokens``.

Tokens have names and roles (``BILLING_ADMIN_TOKENS=name:secret[:role],...``, see
:mod:`billing_engine.admin_tokens`): the matched token is kept in ``request.state.admin_token``
and every event the request writes names it (``admin:api:<name>``). A ``read`` token (finance)
may use the routes guarded by :data:`READ` (reports) and the dashboard; elsewhere it gets 403.
Every refused credential is written to the audit log (``auth.failed``: client address,
method, path; never the token).

Never open by default: with no token configured every admin endpoint answers 503 saying
BILLING_ADMIN_TOKENS must be set. A missing or wrong token is a 401 problem with
``WWW-Authenticate: Bearer``; the request is not processed at all (nothing changes).
The token is compared in constant time against every configured token.

Guessing is throttled per client address: every wrong token (admin API Bearer or
dashboard login) is logged, and after :data:`MAX_FAILURES` failures within
:data:`FAILURE_WINDOW` seconds that address gets 429 (``Retry-After``) for every admin
request, right or wrong, until the oldest failure leaves the window. The window lives in
the process (one per app): with several workers each keeps its own, which bounds the
guess rate per worker; put a shared limiter in the proxy for more.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.routing import BaseRoute

from api.problems import problem
from billing_engine import audit
from billing_engine.admin_tokens import AdminToken, Role, match, whole_entry
from billing_engine.events import EventType
from billing_engine.settings import Settings

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="An admin token from BILLING_ADMIN_TOKENS.",
)

REALM = 'Bearer realm="billing-admin"'

MAX_FAILURES = 10  # wrong tokens per client address ...
FAILURE_WINDOW = 60.0  # ... within this many seconds, then 429
MAX_TRACKED_ADDRESSES = 10_000  # memory bound: the least recently failing are forgotten first

log = logging.getLogger("api.auth")


class FailureThrottle:
    """In-process sliding window of failed authentications per client address."""

    def __init__(self, *, limit: int = MAX_FAILURES, window: float = FAILURE_WINDOW,
                 clock: Callable[[], float] = time.monotonic, max_addresses: int = MAX_TRACKED_ADDRESSES) -> None:
        self.limit, self.window, self.clock, self.max_addresses = limit, window, clock, max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it is not throttled."""
        with self._lock:
            now = self.clock()
            times = self._recent(address, now)
            if len(times) < self.limit:
                return None
            return max(1, math.ceil(times[-self.limit] + self.window - now))

    def failed(self, address: str) -> int:
        """Record a failure; returns the failures of ``address`` within the window."""
        with self._lock:
            now = self.clock()
            times = self._recent(address, now)
            times.append(now)
            self._failures[address] = times
            self._failures.move_to_end(address)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
            return len(times)


def throttle_for(request: Request) -> FailureThrottle:
    """The app's throttle (created on first use; tests may set ``app.state.auth_throttle``)."""
    state = request.app.state
    throttle: FailureThrottle | None = getattr(state, "auth_throttle", None)
    if throttle is None:
        with _create_lock:
            throttle = getattr(state, "auth_throttle", None)
            if throttle is None:
                throttle = state.auth_throttle = FailureThrottle()
    return throttle


_create_lock = threading.Lock()


def client_address(request: Request) -> str:
    """The peer address (behind a proxy: ``billing serve --proxy-headers`` makes it the client's)."""
    return request.client.host if request.client else "unknown"


def throttled(request: Request) -> int | None:
    """Seconds to wait when this client failed too often recently, else None."""
    return throttle_for(request).retry_after(client_address(request))


def record_failure(request: Request, what: str) -> None:
    """Count, log and audit one failed authentication (never the token itself)."""
    address = client_address(request)
    count = throttle_for(request).failed(address)
    log.warning("%s from %s (%s %s); %d failure(s) in the last %ds", what, address, request.method,
                request.url.path, count, int(throttle_for(request).window))
    try:
        audit.record(request.app.state.engine, EventType.AUTH_FAILED, at=request.app.state.clock(),
                     actor=f"anonymous:{address}", payload={"address": address, "method": request.method,
                                                            "path": request.url.path, "reason": what})
    except Exception:  # the refusal stands even when the audit log cannot be written
        log.exception("could not record a failed authentication in the audit log")


def too_many_failures(wait: int) -> JSONResponse:
    return problem(429, f"too many failed admin logins from this address: retry in {wait} seconds",
                   code="too_many_failures", headers={"Retry-After": str(wait)})


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


def authenticated_token(request: Request) -> AdminToken | None:
    """The admin token this request authenticated with (after :func:`check`)."""
    token: AdminToken | None = getattr(request.state, "admin_token", None)
    return token


def actor(request: Request) -> str:
    """``admin:api:<token name>``: who the events of this request are recorded as."""
    token = authenticated_token(request)
    return audit.api_actor(token.name if token is not None else "unknown")


def check(request: Request, *, allow_read: bool = False) -> JSONResponse | None:
    """None if the request carries a valid admin token allowed here, else the problem to answer with."""
    denied = _authenticate(request)
    token = authenticated_token(request)
    if denied is None and token is not None and token.role is Role.READ and not allow_read:
        return problem(403, f"the token {token.name!r} is read-only: it may read reports and the dashboard only",
                       code="forbidden")
    return denied


def _authenticate(request: Request) -> JSONResponse | None:
    settings: Settings = request.app.state.settings
    tokens = settings.named_admin_tokens()
    if not tokens:
        return problem(
            503,
            "the admin API is disabled: set BILLING_ADMIN_TOKENS (one or more comma-separated secrets)",
            code="admin_api_disabled",
        )
    cached: JSONResponse | None | bool = getattr(request.state, "admin_auth_denied", False)
    if cached is not False:  # checked already (an error handler asking again): count once
        return cached  # type: ignore[return-value]
    denied = _check(request, tokens)
    request.state.admin_auth_denied = denied
    return denied


def _check(request: Request, tokens: list[AdminToken]) -> JSONResponse | None:
    wait = throttled(request)
    if wait is not None:
        return too_many_failures(wait)
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if not header:
        return problem(401, "missing admin token: send 'Authorization: Bearer <token>'",
                       code="unauthorized", headers={"WWW-Authenticate": REALM})
    token = match(value.strip(), tokens) if scheme.lower() == "bearer" and value.strip() else None
    if token is None:
        record_failure(request, "invalid admin token")
        entry = whole_entry(value.strip(), tokens) if scheme.lower() == "bearer" else None
        detail = ("invalid admin token" if entry is None else
                  f"invalid admin token: send only the secret of {entry.name!r} (the part after "
                  f"'{entry.name}:' in BILLING_ADMIN_TOKENS), not the whole entry")
        return problem(401, detail, code="unauthorized",
                       headers={"WWW-Authenticate": REALM + ', error="invalid_token"'})
    request.state.admin_token = token
    return None


async def require_admin(request: Request, _creds: object = Depends(bearer_scheme)) -> None:
    """Dependency for every admin route (also documents the security scheme); then
    :func:`strict_query` (one dependency, not two: each costs FastAPI time per request)."""
    denied = check(request)
    if denied is not None:
        raise AdminAuthFailed(denied)
    strict_query(request)


async def require_reader(request: Request, _creds: object = Depends(bearer_scheme)) -> None:
    """Dependency for the routes a read-only (finance) token may use too: reports; then
    :func:`strict_query`."""
    denied = check(request, allow_read=True)
    if denied is not None:
        raise AdminAuthFailed(denied)
    strict_query(request)


def _guard(route: BaseRoute | None) -> object | None:
    deps = getattr(route, "dependencies", None) or []
    for d in deps:
        if getattr(d, "dependency", None) in (require_admin, require_reader):
            return getattr(d, "dependency", None)
    return None


def rejection_for(request: Request) -> JSONResponse | None:
    """For error handlers: the auth problem if this is an admin route and auth fails."""
    guard = _guard(request.scope.get("route"))
    if guard is None:
        return None
    return check(request, allow_read=guard is require_reader)


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


ADMIN = [Depends(require_admin)]  # the token, then strict_query
READ = [Depends(require_reader)]  # admin and read-only (finance) tokens
