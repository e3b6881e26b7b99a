"""Outgoing webhook endpoints: create, list, disable / enable, rotate the secret.

Secrets follow Standard Webhooks (``whsec_`` + base64 of 32 random bytes). A rotation
keeps the previous secret signing alongside the new one for a grace period
(``BILLING_WEBHOOK_SECRET_GRACE_HOURS``, 24 h by default): every delivery in that window
carries two signatures (``v1,<new> v1,<old>``), so a receiver verifies with either
secret while the merchant deploys the new one.

URLs: ``https://`` only, and never a loopback, private or link-local address, unless
``BILLING_ENV`` is ``demo`` / ``test`` or ``BILLING_WEBHOOK_ALLOW_INSECURE_URLS``
is set (the delivery worker checks the resolved address again before each POST).
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlmodel import Session, col, select

from billing_engine import event_feed, events, listing, validation
from billing_engine.errors import NotFound, ValidationError
from billing_engine.models import Event, WebhookEndpoint, WebhookEndpointStatus
from billing_engine.settings import Mode, Settings

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def insecure_urls_allowed(settings: Settings) -> bool:
    return settings.webhook_allow_insecure_urls or settings.mode in (Mode.DEMO, Mode.TEST)


def _forbidden_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified)


def check_url(url: str, settings: Settings, *, field: str = "url") -> str:
    """A URL the engine may POST to (see the module docstring). Returns it cleaned."""
    url = validation.text(url, field, max_length=2000)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        raise ValidationError("is not a valid URL", field=field) from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValidationError("must be an https:// URL with a host", field=field)
    if parts.username or parts.password:
        raise ValidationError("must not carry a user name or password", field=field)
    if insecure_urls_allowed(settings):
        return url
    if parts.scheme != "https":
        raise ValidationError("must be https:// (set BILLING_WEBHOOK_ALLOW_INSECURE_URLS=true to allow http)",
                              field=field)
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise ValidationError("must be a public host, not a local name", field=field)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return url
    if _forbidden_ip(ip):
        raise ValidationError("must be a public address, not a loopback / private one", field=field)
    return url


def check_resolved(url: str, settings: Settings) -> str | None:
    """At delivery time: why the URL's host must not be called (None: fine). In production
    a name that resolves to a private address is refused (DNS rebinding, SSRF)."""
    if insecure_urls_allowed(settings):
        return None
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for info in infos:
        if _forbidden_ip(ipaddress.ip_address(info[4][0])):
            return f"{host} resolves to a non-public address ({info[4][0]}); refused"
    return None


def _types_text(types: list[str] | None) -> str:
    return "*" if types is None else ",".join(types)


def types_of(ep: WebhookEndpoint) -> list[str] | None:
    """The public types the endpoint receives (None: all)."""
    return None if ep.event_types.strip() in ("", "*") else [t for t in ep.event_types.split(",") if t]


def create(
    session: Session, *, url: str, event_types: list[str] | str | None, settings: Settings, now: datetime,
    description: str = "", from_now: bool = True, actor: str = "admin",
) -> WebhookEndpoint:
    """A new enabled endpoint. It receives events recorded from now on (``from_now``);
    older ones can be sent with a resend over a time range."""
    url = check_url(url, settings)
    types = event_feed.parse_types(event_types, field="events")
    description = validation.text(description, "description", max_length=200)
    cursor = 0
    if from_now:
        last = session.exec(select(Event.id).order_by(col(Event.id).desc()).limit(1)).first()
        cursor = int(last or 0)
    ep = WebhookEndpoint(url=url, description=description, event_types=_types_text(types), secret=new_secret(),
                         cursor_event_id=cursor, created_at=now, updated_at=now)
    session.add(ep)
    session.flush()
    _record(session, events.EventType.WEBHOOK_ENDPOINT_CREATED, ep, now=now, actor=actor)
    return ep


def _record(session: Session, type: events.EventType, ep: WebhookEndpoint, *, now: datetime, actor: str,
            **extra: Any) -> None:
    """The audit trail of endpoint changes (never the secret)."""
    events.record(session, type, at=now, actor=actor,
                  payload={"endpoint_id": ep.id, "url": ep.url, "events": ep.event_types, **extra})


def get(session: Session, endpoint_id: str) -> WebhookEndpoint:
    ep = session.get(WebhookEndpoint, endpoint_id.strip())
    if ep is None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}", field="endpoint")
    return ep


def list_endpoints(session: Session, *, status: str | None = None, limit: int = 100,
                   after: str | None = None) -> list[WebhookEndpoint]:
    q = select(WebhookEndpoint).order_by(col(WebhookEndpoint.id)).limit(limit)
    if status:
        if status not in {s.value for s in WebhookEndpointStatus}:
            raise ValidationError("must be enabled or disabled", field="status")
        q = q.where(WebhookEndpoint.status == status)
    if listing.cursor(after, "we"):
        q = q.where(col(WebhookEndpoint.id) > after)
    return list(session.exec(q))


def update(session: Session, ep: WebhookEndpoint, *, settings: Settings, now: datetime, url: str | None = None,
           event_types: list[str] | str | None = None, description: str | None = None,
           actor: str = "admin") -> WebhookEndpoint:
    if url is not None:
        ep.url = check_url(url, settings)
    if event_types is not None:
        ep.event_types = _types_text(event_feed.parse_types(event_types, field="events"))
    if description is not None:
        ep.description = validation.text(description, "description", max_length=200)
    ep.updated_at = now
    session.add(ep)
    _record(session, events.EventType.WEBHOOK_ENDPOINT_UPDATED, ep, now=now, actor=actor)
    return ep


def disable(session: Session, ep: WebhookEndpoint, *, now: datetime, reason: str = "disabled by an admin",
            actor: str = "admin") -> WebhookEndpoint:
    """Stop deliveries (pending ones wait; nothing is lost: enable sends them)."""
    if ep.status != WebhookEndpointStatus.DISABLED:
        ep.status = WebhookEndpointStatus.DISABLED
        ep.disabled_at = now
        ep.disabled_reason = reason[:500]
        ep.updated_at = now
        session.add(ep)
        _record(session, events.EventType.WEBHOOK_ENDPOINT_DISABLED, ep, now=now, actor=actor, reason=ep.disabled_reason)
    return ep


def enable(session: Session, ep: WebhookEndpoint, *, now: datetime, actor: str = "admin") -> WebhookEndpoint:
    """Deliveries resume (including what queued while disabled; failed ones: resend)."""
    if ep.status != WebhookEndpointStatus.ENABLED:
        ep.status = WebhookEndpointStatus.ENABLED
        ep.disabled_at = None
        ep.disabled_reason = None
        ep.failing_since = None
        ep.updated_at = now
        session.add(ep)
        _record(session, events.EventType.WEBHOOK_ENDPOINT_ENABLED, ep, now=now, actor=actor)
    return ep


def rotate_secret(session: Session, ep: WebhookEndpoint, *, now: datetime, grace: timedelta,
                  actor: str = "admin") -> WebhookEndpoint:
    """A new secret signs from now on; the old one ALSO signs until ``now + grace`` (a
    secret older than that stops at once: rotate with ``grace=0`` after a leak)."""
    if grace < timedelta(0):
        raise ValidationError("must not be negative", field="grace")
    ep.previous_secret = ep.secret if grace > timedelta(0) else None
    ep.previous_secret_expires_at = now + grace if grace > timedelta(0) else None
    ep.secret = new_secret()
    ep.updated_at = now
    session.add(ep)
    _record(session, events.EventType.WEBHOOK_ENDPOINT_SECRET_ROTATED, ep, now=now, actor=actor,
            previous_secret_expires_at=ep.previous_secret_expires_at)
    return ep


def signing_secrets(ep: WebhookEndpoint, now: datetime) -> list[str]:
    out = [ep.secret]
    if ep.previous_secret and ep.previous_secret_expires_at and ep.previous_secret_expires_at > now:
        out.append(ep.previous_secret)
    return out


def summary(ep: WebhookEndpoint, *, with_secret: bool = False) -> dict[str, Any]:
    """The endpoint as shown to admins (CLI ``--json`` and the API). The secret only on
    creation and rotation (and ``show --secret``)."""
    out: dict[str, Any] = {
        "id": ep.id, "url": ep.url, "description": ep.description, "events": types_of(ep) or ["*"],
        "status": ep.status, "failing_since": ep.failing_since, "disabled_at": ep.disabled_at,
        "disabled_reason": ep.disabled_reason, "previous_secret_expires_at": ep.previous_secret_expires_at,
        "created_at": ep.created_at, "updated_at": ep.updated_at,
    }
    if with_secret:
        out["secret"] = ep.secret
    return out
