"""The audit trail of admin actions and access: who (token name / OS user), what, when.

State changes are recorded by the services themselves, in their own transaction
(:func:`billing_engine.events.record`). The actions here change no billing state of their
own (a run-cycle summary, a minted cancel link, an outbox flush, a dashboard login, a
refused credential), so each is one event in a short transaction of its own, written by
the CLI / API layer once the action is done. Never a secret: no token, no link.
"""

from __future__ import annotations

import getpass
import logging
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from billing_engine import events
from billing_engine.db import transaction
from billing_engine.events import EventType

if TYPE_CHECKING:
    from billing_engine.cycle import CycleSummary

log = logging.getLogger("billing.audit")

# the counts of a run-cycle kept in its audit event (CycleSummary field names)
RUN_COUNTS = ("total_due", "due", "charged", "succeeded", "declined_soft", "declined_hard", "unknown",
              "unresolved", "reconciled", "canceled_involuntary", "cancellations_effective", "blocked",
              "refunded_after_cancel", "held_by_other_workers", "reminders_queued", "notifications_sent")


def api_actor(token_name: str) -> str:
    return f"admin:api:{token_name}"


def cli_actor() -> str:
    """``admin:cli:<OS user>`` for the person running ``billing``."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name and no passwd entry (some containers)
        user = f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"admin:cli:{user}"


def record(engine: Engine, type: EventType, *, at: datetime, actor: str, payload: dict[str, Any] | None = None,
           subscription_id: str | None = None, customer_id: str | None = None) -> None:
    """Write one audit event in its own transaction."""
    with transaction(engine) as s:
        events.record(s, type, at=at, actor=actor, payload=payload, subscription_id=subscription_id,
                      customer_id=customer_id)


def run_cycle_completed(engine: Engine, summary: CycleSummary, *, actor: str, simulate: bool = False) -> None:
    """``run_cycle.completed``: the run's ``at``, its counts, money collected and why it
    stopped, if it did. A database that is down after the run (the run itself reported it)
    is logged rather than raised, so the run's own exit code stands."""
    if summary.dry_run:
        return  # a dry run changes nothing, the audit log included
    payload: dict[str, Any] = {k: getattr(summary, k) for k in RUN_COUNTS}
    payload.update(at=summary.at, simulate=simulate, collected=dict(summary.collected), stopped=summary.stopped)
    try:
        record(engine, EventType.RUN_CYCLE_COMPLETED, at=summary.at, actor=actor, payload=payload)
    except SQLAlchemyError:
        log.exception("could not record the run-cycle in the audit log")


__all__ = ["api_actor", "cli_actor", "record", "run_cycle_completed"]
