"""Claims: which run-cycle worker owns which due subscription, for how long.

A worker claims a batch by stamping ``lease_owner`` / ``lease_expires_at`` (wall
clock) in one short transaction; on PostgreSQL the claim reads with ``FOR UPDATE SKIP
LOCKED`` so any number of workers on any number of machines share the work. While
the worker lives a :class:`Heartbeat` renews its leases, so a lease can be short
(``BILLING_CLAIM_LEASE_SECONDS``, default 60 s): a killed worker's claims lapse within
that and the next run takes them over. Admins see and release claims with
``billing run-cycle --status`` / ``--release-claims``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import payments
from billing_engine.db import transaction
from billing_engine.models import PaymentAttempt, Subscription, SubscriptionStatus
from billing_engine.renewals import CHARGEABLE

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def due_condition(now: datetime) -> Any:
    """Subscriptions with work at ``now``: a due period, a dunning retry, or an
    attempt whose outcome is unknown (reconciled before anything else)."""
    unresolved = payments.unresolved_query().with_only_columns(col(PaymentAttempt.subscription_id))
    return or_(
        and_(col(Subscription.status).in_(list(CHARGEABLE)), col(Subscription.current_period_end) <= now),
        and_(col(Subscription.status) == SubscriptionStatus.PAST_DUE, col(Subscription.next_retry_at) <= now),
        col(Subscription.id).in_(unresolved.order_by(None)),
    )


def _free(wall: datetime) -> Any:
    return or_(col(Subscription.lease_expires_at).is_(None), col(Subscription.lease_expires_at) < wall)


def count_due(engine: Engine, now: datetime) -> tuple[int, int]:
    """(due now, of which held by a live claim of some worker)."""
    wall = datetime.now(UTC)
    with Session(engine) as s:
        total = int(s.exec(select(func.count()).select_from(Subscription).where(due_condition(now))).one())
        held = int(s.exec(select(func.count()).select_from(Subscription).where(
            due_condition(now), col(Subscription.lease_expires_at) >= wall)).one())
    return total, held


def claim(
    engine: Engine, *, now: datetime, worker: str, batch_size: int, lease: timedelta,
    after: tuple[datetime, str] | None = None,
) -> list[tuple[str, datetime]]:
    """Claim up to ``batch_size`` due, unclaimed subscriptions for ``worker``.

    ``after`` is this run's cursor on (current_period_end, id): rows processed earlier in
    the same run that are still due (outcome unknown, skipped) are not re-claimed.
    Returns (id, current_period_end) pairs in cursor order."""
    wall = datetime.now(UTC)
    with transaction(engine) as s:
        q = (
            select(Subscription.id, Subscription.current_period_end)
            .where(due_condition(now))
            .where(_free(wall))
            .order_by(col(Subscription.current_period_end), col(Subscription.id))
            .limit(batch_size)
        )
        if after is not None:
            q = q.where(or_(
                col(Subscription.current_period_end) > after[0],
                and_(col(Subscription.current_period_end) == after[0], col(Subscription.id) > after[1]),
            ))
        if engine.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True, of=Subscription)
        rows = [(r[0], r[1]) for r in s.exec(q)]
        if rows:
            s.execute(
                update(Subscription)
                .where(col(Subscription.id).in_([r[0] for r in rows]))
                .values(lease_owner=worker, lease_expires_at=wall + lease)
            )
    return rows


def claim_ids(engine: Engine, ids: Sequence[str], *, now: datetime, worker: str, lease: timedelta) -> list[str]:
    """Claim these subscriptions again if they are still due and free (catch-up)."""
    wall = datetime.now(UTC)
    with transaction(engine) as s:
        q = (select(Subscription.id).where(col(Subscription.id).in_(list(ids)), due_condition(now), _free(wall))
             .order_by(col(Subscription.current_period_end), col(Subscription.id)))
        if engine.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True, of=Subscription)
        got = list(s.exec(q))
        if got:
            s.execute(update(Subscription).where(col(Subscription.id).in_(got))
                      .values(lease_owner=worker, lease_expires_at=wall + lease))
    return got


def release(engine: Engine, ids: Sequence[str], worker: str) -> None:
    if not ids:
        return
    with transaction(engine) as s:
        s.execute(
            update(Subscription)
            .where(col(Subscription.id).in_(list(ids)), col(Subscription.lease_owner) == worker)
            .values(lease_owner=None, lease_expires_at=None)
        )


def renew(engine: Engine, worker: str, lease: timedelta) -> int:
    """Push back the expiry of every lease ``worker`` holds. Returns how many."""
    with transaction(engine) as s:
        res = s.execute(
            update(Subscription).where(col(Subscription.lease_owner) == worker)
            .values(lease_expires_at=datetime.now(UTC) + lease)
        )
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


class Heartbeat:
    """Renews a worker's leases every third of the lease while the run lives."""

    def __init__(self, engine: Engine, worker: str, lease: timedelta) -> None:
        self.engine, self.worker, self.lease = engine, worker, lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="billing-claims-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        interval = max(self.lease.total_seconds() / 3, 0.2)
        while not self._stop.wait(interval):
            try:
                renew(self.engine, self.worker, self.lease)
            except Exception:  # the run itself notices a dead database
                log.warning("claims heartbeat failed", exc_info=True)


@dataclass(frozen=True, kw_only=True)
class ClaimHolder:
    worker: str
    subscriptions: int
    expires_at: datetime
    live: bool


def holders(engine: Engine) -> list[ClaimHolder]:
    """Every worker holding claims now, with how many and until when."""
    wall = datetime.now(UTC)
    with Session(engine) as s:
        rows = s.exec(
            select(Subscription.lease_owner, func.count(), func.max(Subscription.lease_expires_at))
            .where(col(Subscription.lease_owner).is_not(None))
            .group_by(col(Subscription.lease_owner))
            .order_by(col(Subscription.lease_owner))
        ).all()
    out = []
    for owner, n, expires in rows:
        if expires is None:
            continue
        exp = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
        out.append(ClaimHolder(worker=str(owner), subscriptions=int(n), expires_at=exp, live=exp >= wall))
    return out


def release_all(engine: Engine, *, worker: str | None = None) -> int:
    """Release claims: one worker's (e.g. a machine that died), or every expired one."""
    with transaction(engine) as s:
        q = update(Subscription).where(col(Subscription.lease_owner).is_not(None))
        if worker is not None:
            q = q.where(col(Subscription.lease_owner) == worker)
        else:
            q = q.where(col(Subscription.lease_expires_at) < datetime.now(UTC))
        res = s.execute(q.values(lease_owner=None, lease_expires_at=None))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]
