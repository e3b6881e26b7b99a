"""Outgoing webhook delivery: the outbox after commit, signed (Standard Webhooks), retried.

Never inside a billing transaction. A pass (:func:`deliver`, run by ``billing webhooks
deliver`` and at the end of ``billing run-cycle``) does, in its own short transactions:

1. **fan-out** — per enabled endpoint, the COMMITTED public events after the endpoint's
   cursor become ``webhook_deliveries`` rows (unique ``live:<endpoint>:<event>``). A
   rolled-back transaction left no event row, so nothing is ever sent for it. On
   PostgreSQL ids are handed out before commit, so an event may become visible after a
   higher id; the cursor therefore only moves past events recorded more than
   :data:`VISIBILITY_LAG` ago, and newer ones are found again (and skipped by the unique
   key) on the next pass.
2. **claim** — due rows switch to ``sending`` with a lease (``SKIP LOCKED`` on PostgreSQL),
   committed before any HTTP call;
3. **POST** — ``httpx`` with a timeout, no redirects; headers ``webhook-id`` (the event id,
   the same on every retry and resend: receivers dedupe on it), ``webhook-timestamp``,
   ``webhook-signature`` (``v1,<base64 HMAC-SHA256>``, two during a secret rotation);
4. **record** — 2xx: ``succeeded``. Anything else: retried after :data:`RETRY_SCHEDULE`
   (12 attempts over 3 days 3.6 hours); then ``failed``. An endpoint with no success for
   :data:`DISABLE_AFTER` whose delivery runs out of retries is disabled, the admin is
   e-mailed (``BILLING_ADMIN_EMAIL``) and the CLI prints a warning.

Ordering: per endpoint, due deliveries are sent oldest event first; a failed delivery does
not hold back later ones, so after a retry events can arrive out of order. Receivers order
by the event id (``evt_<n>``, increasing) or ``timestamp``, or re-read ``/v1/events``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import Table, and_, exists, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from standardwebhooks.webhooks import Webhook

from billing_engine import event_feed, mailer, webhook_endpoints
from billing_engine.db import locks_rows, transaction
from billing_engine.models import (
    Event,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEndpointStatus,
    new_id,
)
from billing_engine.settings import Settings

log = logging.getLogger(__name__)

#: wait after the n-th failed attempt (index n-1); after the last one the delivery fails
RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=5),
    timedelta(hours=10), timedelta(hours=10), timedelta(hours=12), timedelta(hours=12), timedelta(hours=12),
    timedelta(hours=12),
)
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
DISABLE_AFTER = timedelta(days=3)
VISIBILITY_LAG = timedelta(minutes=10)
LEASE = timedelta(minutes=2)
USER_AGENT = "billing-engine-webhooks/1"
DELIVERIES: Table = WebhookDelivery.__table__  # type: ignore[attr-defined]


@dataclass
class DeliveryReport:
    queued: int = 0  # new deliveries from the fan-out
    succeeded: int = 0
    failed_attempts: int = 0
    exhausted: int = 0  # deliveries that ran out of retries in this pass
    disabled: list[str] = field(default_factory=list)  # endpoints disabled in this pass (warnings)

    def as_dict(self) -> dict[str, Any]:
        return {"queued": self.queued, "succeeded": self.succeeded, "failed_attempts": self.failed_attempts,
                "exhausted": self.exhausted, "disabled_endpoints": self.disabled}


# --------------------------------------------------------------------------- fan-out


def _delivery_row(ep_id: str, event_id: int, key: str, now: datetime) -> dict[str, Any]:
    return {"id": new_id("whd"), "dedupe_key": key, "endpoint_id": ep_id, "event_id": event_id,
            "status": WebhookDeliveryStatus.PENDING.value, "attempts": 0, "next_attempt_at": now, "created_at": now}


def fan_out(engine: Engine, *, now: datetime, batch: int = 1000) -> int:
    """Queue a delivery per (enabled endpoint, new public event it subscribes to)."""
    with Session(engine) as s:
        ids = list(s.exec(select(WebhookEndpoint.id).where(
            WebhookEndpoint.status == WebhookEndpointStatus.ENABLED).order_by(col(WebhookEndpoint.id))))
    queued = 0
    for ep_id in ids:
        while True:
            with transaction(engine) as s:
                ep = s.get(WebhookEndpoint, ep_id, with_for_update=locks_rows(s))
                if ep is None or ep.status != WebhookEndpointStatus.ENABLED:
                    break
                already = exists().where(and_(col(WebhookDelivery.endpoint_id) == ep.id,
                                              col(WebhookDelivery.event_id) == col(Event.id),
                                              col(WebhookDelivery.dedupe_key).startswith("live:")))
                rows = list(s.exec(
                    select(Event.id, Event.recorded_at)
                    .where(col(Event.id) > ep.cursor_event_id)
                    .where(col(Event.type).in_(event_feed.internal_types(webhook_endpoints.types_of(ep))))
                    .where(~already)
                    .order_by(col(Event.id)).limit(batch)))
                new = [_delivery_row(ep.id, int(eid or 0), f"live:{ep.id}:{eid}", now) for eid, _ in rows]
                if new:
                    s.connection().execute(DELIVERIES.insert(), new)
                # the cursor moves over a prefix of settled rows only (recorded_at: wall clock)
                cut = datetime.now(UTC) - VISIBILITY_LAG
                prefix = 0
                for eid, rec in rows:
                    if rec > cut:
                        break
                    prefix = int(eid or 0)
                if prefix > ep.cursor_event_id:
                    ep.cursor_event_id = prefix
                    s.add(ep)
                queued += len(new)
            if len(rows) < batch:
                break
    return queued


# --------------------------------------------------------------------------- resend


def resend(
    engine: Engine, *, now: datetime, event_id: int | None = None, created_gte: datetime | None = None,
    created_lt: datetime | None = None, endpoint_id: str | None = None, types: Sequence[str] | None = None,
    batch: int = 1000,
) -> int:
    """Queue the event (or every public event created in ``[created_gte, created_lt)``)
    again, to ``endpoint_id`` or to every enabled endpoint that subscribes to it. Any event,
    however old. The receiver sees the same ``webhook-id`` (the event id). Returns the
    number of deliveries queued."""
    with transaction(engine) as s:
        if endpoint_id is not None:
            targets = [webhook_endpoints.get(s, endpoint_id)]
        else:
            targets = webhook_endpoints.list_endpoints(s, status=WebhookEndpointStatus.ENABLED, limit=10_000)
        if event_id is not None:
            event_feed.get(s, event_id)  # 404 for an unknown / non-public event
        plan = [(ep.id, None if endpoint_id else webhook_endpoints.types_of(ep)) for ep in targets]
    queued = 0
    for ep_id, ep_types in plan:
        wanted = list(types) if types is not None else None
        if ep_types is not None:
            wanted = [t for t in (wanted or ep_types) if t in ep_types]
        after: int | None = None
        while True:
            with transaction(engine) as s:
                if event_id is not None:
                    rows = [r for r in [s.get(Event, event_id)] if r is not None and r.id is not None
                            and event_feed.PUBLIC_TYPE.get(r.type) is not None
                            and (wanted is None or event_feed.PUBLIC_TYPE[r.type].value in wanted)]
                else:
                    rows = event_feed.list_events(s, after=after, types=wanted, created_gte=created_gte,
                                                  created_lt=created_lt, limit=batch)
                new = [_delivery_row(ep_id, r.id, f"replay:{ep_id}:{r.id}:{new_id('r')}", now)
                       for r in rows if r.id is not None]
                if new:
                    s.connection().execute(DELIVERIES.insert(), new)
                queued += len(new)
            if event_id is not None or len(rows) < batch:
                break
            after = rows[-1].id
    return queued


# --------------------------------------------------------------------------- claim / send / record


@dataclass(frozen=True)
class _Claimed:
    id: str
    endpoint_id: str
    event_id: int
    attempts: int


def _claim(engine: Engine, *, now: datetime, limit: int) -> list[_Claimed]:
    with transaction(engine) as s:
        enabled = select(WebhookEndpoint.id).where(WebhookEndpoint.status == WebhookEndpointStatus.ENABLED)
        q = (select(WebhookDelivery)
             .where(col(WebhookDelivery.status).in_([WebhookDeliveryStatus.PENDING, WebhookDeliveryStatus.SENDING]))
             .where(col(WebhookDelivery.next_attempt_at) <= now)
             .where(col(WebhookDelivery.endpoint_id).in_(enabled))
             .order_by(col(WebhookDelivery.event_id), col(WebhookDelivery.id)).limit(limit))
        if locks_rows(s):
            q = q.with_for_update(skip_locked=True, of=WebhookDelivery)
        rows = list(s.exec(q))
        out = []
        for d in rows:
            res = s.connection().execute(
                update(DELIVERIES).where(DELIVERIES.c.id == d.id).where(DELIVERIES.c.status == d.status)
                .where(DELIVERIES.c.next_attempt_at == d.next_attempt_at)
                .values(status=WebhookDeliveryStatus.SENDING.value, next_attempt_at=now + LEASE))
            if res.rowcount == 1:
                out.append(_Claimed(d.id, d.endpoint_id, int(d.event_id), d.attempts))
        return out


def body_of(session: Session, event_id: int) -> bytes:
    """The exact bytes POSTed for an event (the same as its ``/v1/events`` entry)."""
    ev = session.get(Event, event_id)
    assert ev is not None
    presented = event_feed.present_many(session, [ev])
    return json.dumps(presented[0], separators=(",", ":"), sort_keys=True).encode()


def sign(secrets_: Sequence[str], msg_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers (one ``v1,`` signature per active secret)."""
    sigs = " ".join(Webhook(sec).sign(msg_id, timestamp, body) for sec in secrets_)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": sigs, "content-type": "application/json", "user-agent": USER_AGENT}


def _post(client: httpx.Client, url: str, headers: dict[str, str], body: bytes) -> tuple[bool, int | None, str | None]:
    try:
        r = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return False, None, f"{type(exc).__name__}: {exc}"[:1000]
    if 200 <= r.status_code < 300:
        return True, r.status_code, None
    return False, r.status_code, f"HTTP {r.status_code}: {r.text[:200]}"


def retry_at(attempts: int, now: datetime) -> datetime | None:
    """When to try again after ``attempts`` failed attempts (None: give up)."""
    return now + RETRY_SCHEDULE[attempts - 1] if attempts < MAX_ATTEMPTS else None


def _record(engine: Engine, c: _Claimed, *, ok: bool, code: int | None, error: str | None, now: datetime,
            report: DeliveryReport) -> str | None:
    """Store the outcome; returns the endpoint id when this disabled it."""
    with transaction(engine) as s:
        d = s.get(WebhookDelivery, c.id, with_for_update=locks_rows(s))
        ep = s.get(WebhookEndpoint, c.endpoint_id, with_for_update=locks_rows(s))
        assert d is not None and ep is not None
        d.attempts = c.attempts + 1
        d.last_status_code = code
        d.last_error = error
        if ok:
            d.status = WebhookDeliveryStatus.SUCCEEDED
            d.delivered_at = now
            if ep.failing_since is not None:
                ep.failing_since = None
                s.add(ep)
            report.succeeded += 1
            s.add(d)
            return None
        report.failed_attempts += 1
        if ep.failing_since is None:
            ep.failing_since = now
            s.add(ep)
        nxt = retry_at(d.attempts, now)
        if nxt is not None:
            d.status, d.next_attempt_at = WebhookDeliveryStatus.PENDING, nxt
            s.add(d)
            return None
        d.status = WebhookDeliveryStatus.FAILED
        s.add(d)
        report.exhausted += 1
        if ep.status == WebhookEndpointStatus.ENABLED and ep.failing_since <= now - DISABLE_AFTER:
            reason = (f"every delivery failed for {(now - ep.failing_since).days} days "
                      f"(last: {error or 'no answer'})")
            webhook_endpoints.disable(s, ep, now=now, reason=reason, actor="system:webhooks")
            return ep.id
    return None


def _tell_admin(engine: Engine, settings: Settings, endpoint_id: str, now: datetime) -> None:
    with Session(engine) as s:
        ep = s.get(WebhookEndpoint, endpoint_id)
    if ep is None:
        return
    log.warning("webhook endpoint %s (%s) disabled: %s", ep.id, ep.url, ep.disabled_reason)
    if not settings.admin_email:
        log.warning("BILLING_ADMIN_EMAIL is not set: no e-mail about the disabled webhook endpoint")
        return
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = settings.admin_email
    msg["Subject"] = f"Webhook endpoint disabled: {ep.url}"
    msg["Message-ID"] = mailer.message_id_for(f"whdisabled-{ep.id}-{int(now.timestamp())}", settings)
    msg.set_content(
        f"The webhook endpoint {ep.id} ({ep.url}) was disabled at {now.isoformat()}.\n\n"
        f"Why: {ep.disabled_reason}\n\n"
        "Nothing was lost: every event stays in GET /v1/events. After fixing the receiver:\n"
        f"  billing webhook-endpoint enable {ep.id}\n"
        f"  billing webhook resend --endpoint {ep.id} --from <when it started failing>\n")
    try:
        transport = mailer.build_transport(settings)
        if transport is None:
            return
        try:
            transport.send(msg)
        finally:
            transport.close()
    except Exception as exc:  # the warning is also in the log and on the CLI
        log.error("could not e-mail the admin about webhook endpoint %s: %s", ep.id, exc)


def deliver(
    engine: Engine, settings: Settings, *, now: datetime, limit: int = 1000, client: httpx.Client | None = None,
) -> DeliveryReport:
    """One pass: fan-out, then send what is due at ``now`` (at most ``limit`` POSTs).

    ``now`` schedules retries and is normally the wall clock; a later ``now`` is how tests
    travel over the back-off. Signatures always carry the real clock."""
    report = DeliveryReport(queued=fan_out(engine, now=now))
    own = client is None
    http: httpx.Client | None = client  # built at the first POST: most passes have nothing to send
    try:
        sent = 0
        while sent < limit:
            claimed = _claim(engine, now=now, limit=min(100, limit - sent))
            if not claimed:
                break
            if http is None:  # (an SSL context and a connection pool: 20-40 ms of CPU)
                http = httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False)
            down: dict[str, datetime] = {}  # endpoints that failed in this pass: the rest waits
            for c in claimed:
                sent += 1
                with Session(engine) as s:
                    ep = s.get(WebhookEndpoint, c.endpoint_id)
                    assert ep is not None
                    body = body_of(s, c.event_id)
                if ep.id in down:
                    _release(engine, c, down[ep.id])
                    continue
                why = webhook_endpoints.check_resolved(ep.url, settings)
                ok: bool
                code: int | None
                error: str | None
                if why is not None:
                    ok, code, error = False, None, why
                else:
                    # the signature's timestamp is the real clock (receivers check it against theirs)
                    headers = sign(webhook_endpoints.signing_secrets(ep, now), event_feed.event_id(c.event_id),
                                   datetime.now(UTC), body)
                    ok, code, error = _post(http, ep.url, headers, body)
                disabled = _record(engine, c, ok=ok, code=code, error=error, now=now, report=report)
                if not ok and code is None:  # unreachable: do not wait a timeout per queued event
                    down[ep.id] = retry_at(1, now) or now
                if disabled:
                    report.disabled.append(disabled)
                    _tell_admin(engine, settings, disabled, now)
    finally:
        if own and http is not None:
            http.close()
    return report


def _release(engine: Engine, c: _Claimed, at: datetime) -> None:
    """Give back a claimed delivery untried (its endpoint just failed): due again at ``at``."""
    with transaction(engine) as s:
        s.connection().execute(
            update(DELIVERIES).where(DELIVERIES.c.id == c.id)
            .values(status=WebhookDeliveryStatus.PENDING.value, next_attempt_at=at))


# --------------------------------------------------------------------------- inspect


def list_deliveries(
    session: Session, *, endpoint_id: str | None = None, event_id: int | None = None, status: str | None = None,
    limit: int = 50,
) -> list[WebhookDelivery]:
    q = select(WebhookDelivery).order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id).desc())
    if endpoint_id:
        q = q.where(WebhookDelivery.endpoint_id == endpoint_id)
    if event_id is not None:
        q = q.where(WebhookDelivery.event_id == event_id)
    if status:
        q = q.where(WebhookDelivery.status == status)
    return list(session.exec(q.limit(limit)))


def delivery_summary(d: WebhookDelivery) -> dict[str, Any]:
    return {"id": d.id, "endpoint_id": d.endpoint_id, "event_id": event_feed.event_id(d.event_id),
            "replay": d.dedupe_key.startswith("replay:"), "status": d.status, "attempts": d.attempts,
            "next_attempt_at": d.next_attempt_at if d.status == WebhookDeliveryStatus.PENDING else None,
            "last_status_code": d.last_status_code, "last_error": d.last_error, "created_at": d.created_at,
            "delivered_at": d.delivered_at}


