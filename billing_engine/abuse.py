"""Limits on what the customer pages can be made to do repeatedly.

The cancel link is a capability anyone holding it may use without logging in, so its
side effects must stay bounded however often it is clicked:

- :func:`coalesced_emails`: ten cancel / undo cycles in a second queue at most one
  cancellation confirmation and one reactivation e-mail (per subscription, within
  :data:`COALESCE_WINDOW`, while still unsent). The newest change wins: the e-mail already
  waiting takes the new payload and moves behind the others, so the last e-mail a customer
  receives describes the state they left the subscription in. Every change still writes
  its event row (the audit log is complete); only duplicate, unsent e-mails are folded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from billing_engine.models import Notification, NotificationStatus
from billing_engine.notifications import Kind

COALESCE_WINDOW = timedelta(minutes=10)
COALESCED_KINDS = (Kind.CANCELLATION_CONFIRMED, Kind.SUBSCRIPTION_REACTIVATED)


def _unsent(session: Session, subscription_id: str, since: datetime) -> list[Notification]:
    session.flush()
    return list(session.exec(
        select(Notification)
        .where(col(Notification.subscription_id) == subscription_id,
               col(Notification.kind).in_(COALESCED_KINDS),
               col(Notification.status) == NotificationStatus.PENDING,
               col(Notification.attempts) == 0,
               col(Notification.created_at) >= since)
        .order_by(col(Notification.created_at), col(Notification.id))
    ).all())


@contextmanager
def coalesced_emails(
    session: Session, subscription_id: str, *, now: datetime, window: timedelta = COALESCE_WINDOW
) -> Iterator[None]:
    """Run a customer's change; fold the confirmation e-mails it queued into unsent ones of
    the same kind queued for this subscription within ``window``. Returns nothing: the
    caller's transaction owns the rows."""
    since = now - window
    before = {n.id: n for n in _unsent(session, subscription_id, since)}
    yield
    for fresh in _unsent(session, subscription_id, since):
        if fresh.id in before:
            continue
        waiting = next((n for n in before.values() if n.kind == fresh.kind), None)
        if waiting is None:
            continue
        folded = session.execute(
            update(Notification)
            .where(col(Notification.id) == waiting.id, col(Notification.status) == NotificationStatus.PENDING,
                   col(Notification.attempts) == 0)
            .values(payload=fresh.payload, next_attempt_at=fresh.next_attempt_at)
            .execution_options(synchronize_session=False)
        )
        if folded.rowcount == 1:  # type: ignore[attr-defined]
            session.delete(fresh)  # queued in this very transaction: as if never queued
            session.flush()
        # else a sender claimed the waiting one meanwhile: the fresh e-mail stays queued


__all__ = ["COALESCED_KINDS", "COALESCE_WINDOW", "coalesced_emails"]
