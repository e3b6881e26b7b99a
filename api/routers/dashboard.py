"""The finance dashboard: one server-rendered page, charts as inline SVG, no JavaScript.

Authentication: a browser cannot send ``Authorization: Bearer`` when it navigates, so the
page also accepts a session cookie set by a login form. ``POST /dashboard/login`` checks an
admin token (constant time, ``api.auth.token_ok``) and sets ``billing_dashboard``: HttpOnly,
SameSite=Strict, Path=/dashboard, Secure on https, 8 hours. Its value is signed with
``BILLING_SECRET_KEYS`` / ``BILLING_SECRET_KEY`` (itsdangerous) and holds only a SHA-256 fingerprint of the token,
never the token; removing the token from BILLING_ADMIN_TOKENS ends its sessions at once.
Admin and read-only (finance) tokens may both log in; each login is in the audit log
(``dashboard.login``, actor ``admin:api:<token name>``), each refused token too (``auth.failed``).
Tokens in URLs (``?token=``) are deliberately NOT accepted: they end up in browser
history, proxy logs and Referer headers. A Bearer header works too (scripts, tests).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer

from api.auth import client_address, record_failure, throttled, token_ok
from api.deps import EngineDep, NowDep, SettingsDep
from api.routers.reports import EXPORT_FORMATS, export_response
from api.threads import long_running
from billing_engine import audit
from billing_engine.admin_tokens import match
from billing_engine.errors import BillingError, ValidationError
from billing_engine.events import EventType
from billing_engine.links import itsdangerous_keys
from billing_engine.reports import REPORTS, build_query, run_report
from billing_engine.reports import dashboard as board
from billing_engine.settings import Settings

router = APIRouter(tags=["dashboard"], include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))

COOKIE = "billing_dashboard"
MAX_AGE = 8 * 3600
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _signer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(itsdangerous_keys(settings), salt="billing-dashboard-session")


def _tokens(settings: Settings) -> list[str]:
    return settings.admin_secrets()


def authenticated(request: Request, settings: Settings) -> bool:
    tokens = _tokens(settings)
    if not tokens:
        return False
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        if token_ok(value.strip(), tokens):
            return True
        record_failure(request, "invalid admin token (dashboard)")
        return False
    raw = request.cookies.get(COOKIE)
    if not raw:
        return False
    try:
        data = _signer(settings).loads(raw, max_age=MAX_AGE)
    except BadSignature:
        return False
    fp = data.get("fp", "") if isinstance(data, dict) else ""
    ok = False
    for t in tokens:
        ok |= hmac.compare_digest(str(fp), _fingerprint(t))
    return ok


def _page(request: Request, name: str, context: dict[str, Any], status_code: int = 200,
          headers: dict[str, str] | None = None) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code,
                                      headers={**HEADERS, **(headers or {})})


def _login(request: Request, settings: Settings, *, error: str | None = None, status_code: int = 401,
           headers: dict[str, str] | None = None) -> HTMLResponse:
    disabled = not _tokens(settings)
    return _page(request, "dashboard_login.html",
                 {"error": error, "disabled": disabled, "company_name": settings.company_name},
                 status_code=503 if disabled else status_code, headers=headers)


def _throttled_page(request: Request, settings: Settings) -> HTMLResponse | None:
    """The login page with 429 while this address has failed too often (api.auth's throttle)."""
    wait = throttled(request) if _tokens(settings) else None
    if wait is None:
        return None
    return _login(request, settings, status_code=429, headers={"Retry-After": str(wait)},
                  error=f"Too many failed logins from this address. Try again in {wait} seconds.")


def _gate(request: Request, settings: Settings) -> HTMLResponse | None:
    """None when the request may see the dashboard, else the page to answer with."""
    denied = _throttled_page(request, settings)
    if denied is None and not authenticated(request, settings):
        denied = _login(request, settings)
    return denied


@router.post("/dashboard/login")
async def login(request: Request, settings: SettingsDep) -> Response:
    body = (await request.body())[:4096].decode("utf-8", "replace")
    token = (parse_qs(body).get("token") or [""])[0].strip()
    tokens = _tokens(settings)
    if not tokens:
        return _login(request, settings)
    denied = _throttled_page(request, settings)
    if denied is not None:
        return denied
    named = match(token, settings.named_admin_tokens()) if token else None
    if named is None:
        record_failure(request, "invalid admin token (dashboard login)")
        return _login(request, settings, error="That token is not valid.")
    audit.record(request.app.state.engine, EventType.DASHBOARD_LOGIN, at=request.app.state.clock(),
                 actor=audit.api_actor(named.name), payload={"address": client_address(request)})
    resp = RedirectResponse("/dashboard", status_code=303, headers={"Cache-Control": "no-store"})
    resp.set_cookie(COOKIE, _signer(settings).dumps({"fp": _fingerprint(token)}), max_age=MAX_AGE,
                    path="/dashboard", httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return resp


@router.post("/dashboard/logout")
def logout() -> Response:
    resp = RedirectResponse("/dashboard", status_code=303, headers={"Cache-Control": "no-store"})
    resp.delete_cookie(COOKIE, path="/dashboard")
    return resp


Opt = Annotated[str | None, Query(max_length=40)]


@router.get("/dashboard", response_class=HTMLResponse)
@long_running  # seconds on a large database: not in the quick requests' pool (api.threads)
def dashboard(request: Request, engine: EngineDep, settings: SettingsDep, now: NowDep,
              start: Annotated[str | None, Query(max_length=40, alias="from")] = None,
              to: Opt = None, currency: Opt = None) -> Response:
    denied = _gate(request, settings)
    if denied is not None:
        return denied
    params = {k: v for k, v in (("from", start), ("to", to), ("currency", currency)) if v}
    try:
        q = build_query(start=start, end=to, period="month", currency=currency, now=now)
        d = board.build(engine, q)
    except BillingError as exc:
        return _page(request, "dashboard.html", {"error": str(exc), "d": None, "params": params,
                                                 "company_name": settings.company_name}, status_code=422)
    links = {
        f"{name}.{fmt}": "/dashboard/export/" + name + "?" + urlencode({**params, "format": fmt,
                                                                         "currency": d.currency or ""})
        for name in REPORTS for fmt in ("csv", "xlsx")
    }
    switch = {c: "/dashboard?" + urlencode({**params, "currency": c}) for c in d.currencies}
    return _page(request, "dashboard.html", {"d": d, "error": None, "params": params, "links": links,
                                             "switch": switch, "company_name": settings.company_name,
                                             "range": q.as_dict()})


@router.get("/dashboard/export/{name}")
@long_running  # seconds on a large database: not in the quick requests' pool (api.threads)
def export(request: Request, name: str, engine: EngineDep, settings: SettingsDep, now: NowDep,
           start: Annotated[str | None, Query(max_length=40, alias="from")] = None,
           to: Opt = None, currency: Opt = None, by: Opt = None, period: Opt = None,
           format: Opt = None) -> Response:
    """The same downloads as /v1/reports, for the logged-in browser."""
    denied = _gate(request, settings)
    if denied is not None:
        return denied
    if name not in REPORTS:
        raise ValidationError(f"must be one of {', '.join(REPORTS)}", field="name")
    fmt = (format or "csv").lower()
    if fmt not in EXPORT_FORMATS:
        raise ValidationError(f"must be one of {', '.join(EXPORT_FORMATS)}", field="format")
    q = build_query(start=start, end=to, period=period, by=by, currency=currency, now=now)
    return export_response(run_report(engine, name, q, thresholds=settings.segment_thresholds_minor,
                                      generated_at=now), fmt)
