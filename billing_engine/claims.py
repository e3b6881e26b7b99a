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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import payments
from billing_engine.db import among, locks_rows, transaction
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
        and_(col(Subscription.status).in_(list(CHARGEABLE)), col(Subscription.current_period_end) <= now, _ours(now)),
        and_(col(Subscription.status) == SubscriptionStatus.PAST_DUE, col(Subscription.next_retry_at) <= now,
             _ours(now)),
        col(Subscription.id).in_(unresolved.order_by(None)),
    )


def _ours(now: datetime) -> Any:
    """Not an imported subscription that the previous biller still charges (``charge_from``
    in the future) and that has nothing else due: no work for a run-cycle, so not claimed,
    counted as due or as backlog (the dry run still lists it, with the reason). One that
    ends or pauses at its period end is still ours to end or pause (without a charge)."""
    return or_(col(Subscription.charge_from).is_(None), col(Subscription.charge_from) <= now,
               col(Subscription.cancel_at_period_end), col(Subscription.pause_at_period_end))


def _free(wall: datetime) -> Any:
    return or_(col(Subscription.lease_expires_at).is_(None), col(Subscription.lease_expires_at) < wall)


def count_due(engine: Engine, now: datetime) -> int:
    """How many subscriptions have work due at ``now``."""
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(Subscription).where(due_condition(now))).one())


def count_held(engine: Engine, now: datetime) -> int:
    """How many of those a live claim of some worker holds."""
    wall = datetime.now(UTC)
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(Subscription).where(
            due_condition(now), col(Subscription.lease_expires_at) >= wall)).one())


LANES: tuple[str, ...] = ("unresolved", SubscriptionStatus.INCOMPLETE, SubscriptionStatus.TRIALING,
                          SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE)


@dataclass
class Cursor:
    """A run's position in each lane of due work, so nothing is claimed twice in one run
    and every page is an index range scan with a LIMIT (never a sort of all due rows):

    * ``unresolved``: subscriptions with a pending/unknown attempt, by id;
    * one lane per chargeable status, by (current_period_end, id), via ``ix_subscriptions_due``;
    * ``past_due``: dunning retries, by (next_retry_at, id), via ``ix_subscriptions_retry``."""

    positions: dict[str, tuple[Any, str]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)

    @property
    def exhausted(self) -> bool:
        return all(lane in self.done for lane in LANES)


def _lane_query(lane: str, now: datetime, after: tuple[Any, str] | None, *, keys_only: bool) -> Any:
    sub = Subscription
    what: Any = (select(sub.id, sub.current_period_end, sub.next_retry_at) if keys_only else select(sub))
    if lane == "unresolved":
        q = what.where(col(sub.id).in_(
            payments.unresolved_query().with_only_columns(col(PaymentAttempt.subscription_id)).order_by(None)))
        if after is not None:
            q = q.where(col(sub.id) > after[1])
        return q.order_by(col(sub.id))
    key = col(sub.next_retry_at) if lane == SubscriptionStatus.PAST_DUE else col(sub.current_period_end)
    has_unresolved = select(PaymentAttempt.id).where(
        PaymentAttempt.subscription_id == sub.id,
        text(payments.UNRESOLVED_SQL)).exists()
    q = what.where(col(sub.status) == lane, key <= now, ~has_unresolved)
    if keys_only:  # claiming: held imports are not this run's work (listed by the dry run)
        q = q.where(_ours(now))
    if after is not None:  # "key >= a" starts the index range there (not at dead entries below it)
        q = q.where(key >= after[0], or_(key > after[0], col(sub.id) > after[1]))
    return q.order_by(key, col(sub.id))


def _position(lane: str, row: Any) -> tuple[Any, str]:
    if lane == "unresolved":
        return (None, row.id)
    return (row.next_retry_at if lane == SubscriptionStatus.PAST_DUE else row.current_period_end, row.id)


def due_page(session: Session, now: datetime, cursor: Cursor, limit: int, *, claim_for: str | None = None,
             wall: datetime | None = None) -> list[Any]:
    """The next ``limit`` due subscriptions after ``cursor`` (which it advances), lane by
    lane. With ``claim_for``: only unclaimed rows, locked with SKIP LOCKED on PostgreSQL,
    and only their keys (id, current_period_end, next_retry_at)."""
    out: list[Subscription] = []
    for lane in LANES:
        if lane in cursor.done or len(out) >= limit:
            continue
        want = limit - len(out)
        q = _lane_query(lane, now, cursor.positions.get(lane), keys_only=claim_for is not None).limit(want)
        if claim_for is not None:
            q = q.where(_free(wall or datetime.now(UTC)))
            if locks_rows(session):
                q = q.with_for_update(skip_locked=True)
        got = list(session.exec(q))
        if got:
            cursor.positions[lane] = _position(lane, got[-1])
        if len(got) < want:
            cursor.done.add(lane)
        out.extend(got)
    return out


def claim_in(
    session: Session, *, now: datetime, worker: str, batch_size: int, lease: timedelta, cursor: Cursor,
) -> list[str]:
    """Claim up to ``batch_size`` due, unclaimed subscriptions for ``worker`` in the
    caller's transaction (the run-cycle prepares the batch in the same one).
    ``cursor`` is this run's position: rows processed earlier in the same run that are
    still due (outcome unknown, skipped) are not re-claimed. The ids of
    :func:`claim_rows_in`."""
    return [r.id for r in claim_rows_in(session, now=now, worker=worker, batch_size=batch_size, lease=lease,
                                        cursor=cursor)]


def claim_rows_in(
    session: Session, *, now: datetime, worker: str, batch_size: int, lease: timedelta, cursor: Cursor,
) -> list[Any]:
    """:func:`claim_in`, returning the claimed subscriptions' rows as the claim left them
    (in claim order): the stamp's ``UPDATE ... RETURNING`` reads them, so preparing the
    batch needs no second read of its rows (locked by the claim until the COMMIT). The
    run-cycle claims this way."""
    wall = datetime.now(UTC)
    ids = [r.id for r in due_page(session, now, cursor, batch_size, claim_for=worker, wall=wall)]
    if not ids:
        return []
    got = session.connection().execute(
        update(_SUBS).where(among(_SUBS.c.id, ids)).values(lease_owner=worker, lease_expires_at=wall + lease)
        .returning(*_SUBS.c)).all()
    order = {sid: i for i, sid in enumerate(ids)}
    return sorted(got, key=lambda r: order[r.id])


def claim_ids_in(session: Session, ids: Sequence[str], *, now: datetime, worker: str, lease: timedelta) -> list[str]:
    """Claim these subscriptions again if they are still due and free (catch-up)."""
    wall = datetime.now(UTC)
    q = (select(Subscription.id).where(among(col(Subscription.id), ids), due_condition(now), _free(wall))
         .order_by(col(Subscription.id)))
    if locks_rows(session):
        q = q.with_for_update(skip_locked=True, of=Subscription)
    got = list(session.exec(q))
    _stamp(session, got, worker, wall + lease)
    return got


_SUBS = Subscription.__table__  # type: ignore[attr-defined]


def _stamp(session: Session, ids: Sequence[str], worker: str, expires: datetime) -> None:
    # Core, not an ORM bulk update: no objects in this session to synchronise, and the
    # ORM's bulk-update bookkeeping cost more than the statement itself
    if ids:
        session.connection().execute(update(_SUBS).where(among(_SUBS.c.id, ids))
                                     .values(lease_owner=worker, lease_expires_at=expires))


def release_in(session: Session, ids: Sequence[str], worker: str) -> None:
    """Give up ``worker``'s claims on ``ids`` in the caller's transaction."""
    if ids:
        session.connection().execute(
            update(_SUBS)
            .where(among(_SUBS.c.id, ids), _SUBS.c.lease_owner == worker)
            .values(lease_owner=None, lease_expires_at=None)
        )


def release(engine: Engine, ids: Sequence[str], worker: str) -> None:
    """Give up the claims on ``ids``. Never fails the run: a claim not released lapses
    at the end of its lease."""
    if not ids:
        return
    try:
        _release(engine, ids, worker)
    except Exception:
        log.warning("could not release %d claim(s) of %s; they lapse with the lease", len(ids), worker,
                    exc_info=True)


def _release(engine: Engine, ids: Sequence[str], worker: str) -> None:
    with transaction(engine) as s:
        release_in(s, ids, worker)


def renew(engine: Engine, worker: str, lease: timedelta, ids: Sequence[str]) -> int:
    """Push back the expiry of ``worker``'s leases on ``ids`` (by primary key). Returns how many.

    Rows the worker's own batch transaction has locked right now are skipped (SKIP
    LOCKED, in id order): waiting for them could deadlock with that transaction, and the
    batch releases them itself."""
    if not ids:
        return 0
    with transaction(engine) as s:
        mine = (select(Subscription.id).where(among(col(Subscription.id), sorted(ids)),
                                              col(Subscription.lease_owner) == worker)
                .order_by(col(Subscription.id)))
        if engine.dialect.name == "postgresql":
            mine = mine.with_for_update(skip_locked=True)
        res = s.execute(
            update(Subscription).where(col(Subscription.id).in_(mine.scalar_subquery()))
            .values(lease_expires_at=datetime.now(UTC) + lease)
        )
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


class Heartbeat:
    """Renews a worker's leases every third of the lease while the run lives."""

    def __init__(self, engine: Engine, worker: str, lease: timedelta, held: Callable[[], list[str]]) -> None:
        self.engine, self.worker, self.lease, self.held = engine, worker, lease, held
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
                renew(self.engine, self.worker, self.lease, self.held())
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
