"""Prometheus metrics (``prometheus-client``).

Two sources, one set of names (docs/operations.md lists them):

- **state gauges**, read from the database at scrape time (each one indexed count):
  ``billing_due_backlog`` (subscriptions with work due now), ``billing_unresolved_attempts``
  (charges whose outcome is not known yet), ``billing_outbox_backlog{status}`` (e-mails
  pending / sending / failed), ``billing_claims_held`` (due subscriptions claimed by a live
  run-cycle worker), ``billing_last_run_completed_timestamp_seconds`` (the last complete
  run of any process, from the audit log), plus any gauge registered with :func:`register_state_gauge` (the hook
  for webhook delivery failures, filled by the webhooks feature);
- **run counters**, from a run-cycle's summary (:func:`record_run`):
  ``billing_charges_total{outcome}``, ``billing_declines_total{code}``,
  ``billing_collected_minor_total{currency}``, ``billing_run_duration_seconds``,
  ``billing_run_last_completed_timestamp_seconds``, ``billing_run_due``, ``billing_run_stopped{reason}``.

``billing run-cycle`` writes both to a node-exporter textfile (``--metrics-textfile``)
and/or pushes them to a Pushgateway (``--metrics-pushgateway``); the API serves both at
``GET /metrics`` (runs made through ``POST /v1/run-cycle`` in that process).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import claims
from billing_engine.events import EventType
from billing_engine.models import Event, Notification, NotificationStatus, PaymentAttempt, Subscription
from billing_engine.payments import UNRESOLVED_SQL

if TYPE_CHECKING:
    from billing_engine.cycle import CycleSummary

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: plain totals

StateGauge = tuple[str, str, Callable[[Session, datetime], float]]
_extra_gauges: list[StateGauge] = []


def register_state_gauge(name: str, documentation: str, read: Callable[[Session, datetime], float]) -> None:
    """Add a gauge read from the database at every scrape, e.g. the webhooks feature's
    ``billing_webhook_delivery_failures`` (``read(session, now) -> value``; keep it one
    indexed query)."""
    if name not in {n for n, _, _ in _extra_gauges}:
        _extra_gauges.append((name, documentation, read))


class StateCollector(Collector):
    """Reads the backlog gauges from the database on every collection (a scrape)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine, self.clock = engine, clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        wall = datetime.now(UTC)
        with Session(self.engine) as s:
            due = s.exec(select(func.count()).select_from(Subscription).where(claims.due_condition(now))).one()
            held = s.exec(select(func.count()).select_from(Subscription).where(
                claims.due_condition(now), col(Subscription.lease_expires_at) >= wall)).one()
            unresolved = s.exec(select(func.count()).select_from(PaymentAttempt).where(text(UNRESOLVED_SQL))).one()
            unsent = [NotificationStatus.PENDING, NotificationStatus.SENDING, NotificationStatus.FAILED]
            outbox = {str(k): int(v) for k, v in s.exec(select(Notification.status, func.count()).where(
                col(Notification.status).in_(unsent)).group_by(Notification.status)).all()}
            extra = [(name, doc, read(s, now)) for name, doc, read in _extra_gauges]
            last_run = _last_complete_run(s)
        yield GaugeMetricFamily("billing_due_backlog", "Subscriptions with billing work due now.", value=due)
        yield GaugeMetricFamily("billing_claims_held", "Due subscriptions claimed by a live run-cycle worker.",
                                value=held)
        yield GaugeMetricFamily("billing_unresolved_attempts",
                                "Charge attempts whose outcome is not known yet (pending or unknown).", value=unresolved)
        g = GaugeMetricFamily("billing_outbox_backlog", "Customer e-mails not sent, by outbox status.",
                              labels=["status"])
        for status in (NotificationStatus.PENDING, NotificationStatus.SENDING, NotificationStatus.FAILED):
            g.add_metric([status.value], float(outbox.get(status.value, 0)))
        yield g
        for name, doc, value in extra:
            yield GaugeMetricFamily(name, doc, value=value)
        if last_run is not None:  # absent until some run-cycle completed (not 0: that reads as 1970)
            yield GaugeMetricFamily(
                "billing_last_run_completed_timestamp_seconds",
                "When the last run-cycle of any process (cron, CLI, another server's API) that was not "
                "stopped early finished, from the audit log (Unix time, wall clock).", value=last_run)


def _last_complete_run(s: Session) -> float | None:
    """The wall-clock time the newest ``run_cycle.completed`` event without ``stopped`` was
    recorded (a run stopped early is recorded too, with its reason): the audit log is
    shared by every worker, so this is right whichever process ran it."""
    rows = s.exec(select(Event.recorded_at, Event.payload).where(Event.type == EventType.RUN_CYCLE_COMPLETED)
                  .order_by(col(Event.id).desc()).limit(_LAST_RUNS)).all()
    for recorded_at, payload in rows:
        try:
            stopped = json.loads(payload).get("stopped")
        except (ValueError, AttributeError):
            continue
        if not stopped:
            return float(recorded_at.timestamp())
    return None


_LAST_RUNS = 50  # runs looked at for one that completed (more stopped in a row: an alert is due anyway)


class RunMetrics:
    """The counters of run-cycles made by this process (one registry per process or run)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self.charges = Counter("billing_charges", "Charge outcomes settled by run-cycles.", ["outcome"],
                               registry=registry)
        self.declines = Counter("billing_declines", "Declined charges by gateway decline code.", ["code"],
                                registry=registry)
        self.collected = Counter("billing_collected_minor", "Money collected, in minor units of the currency.",
                                 ["currency"], registry=registry)
        self.duration = Gauge("billing_run_duration_seconds", "Wall time of the last run-cycle.", registry=registry)
        self.last_completed = Gauge("billing_run_last_completed_timestamp_seconds",
                                    "When the last run-cycle that was not stopped early finished (Unix time).",
                                    registry=registry)
        self.due = Gauge("billing_run_due", "Subscriptions the last run-cycle processed.", registry=registry)
        self.stopped = Counter("billing_run_stopped", "Run-cycles stopped early, by reason.", ["reason"],
                               registry=registry)

    def record(self, summary: CycleSummary, *, finished: datetime | None = None) -> None:
        if summary.dry_run:
            return
        with self._lock:
            for outcome, n in (("succeeded", summary.succeeded), ("declined_soft", summary.declined_soft),
                               ("declined_hard", summary.declined_hard), ("unknown", summary.unknown),
                               ("unresolved", summary.unresolved), ("refunded_after_cancel",
                                                                    summary.refunded_after_cancel)):
                self.charges.labels(outcome).inc(n)
            for code, n in summary.declines_by_code.items():
                self.declines.labels(code).inc(n)
            for currency, minor in summary.collected.items():
                self.collected.labels(currency).inc(minor)
            self.duration.set(summary.timings.get("total_s", 0.0))
            self.due.set(summary.due)
            if summary.stopped:
                self.stopped.labels(summary.stopped).inc()
            else:
                self.last_completed.set((finished or datetime.now(UTC)).timestamp())


def registry_for(engine: Engine, *, clock: Callable[[], datetime] | None = None) -> tuple[CollectorRegistry, RunMetrics]:
    """A registry with the state gauges of ``engine`` and empty run counters."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StateCollector(engine, clock) if clock else StateCollector(engine))
    return registry, RunMetrics(registry)


def carry_over(path: str, run: RunMetrics) -> None:
    """Add the counters of the textfile a previous run wrote, so that they keep counting up
    across runs (a counter that restarts at every run would read as a reset each time)."""
    from pathlib import Path

    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = Path(path).read_text()
    except OSError:
        return
    counters = {"billing_charges_total": (run.charges, "outcome"), "billing_declines_total": (run.declines, "code"),
                "billing_collected_minor_total": (run.collected, "currency"),
                "billing_run_stopped_total": (run.stopped, "reason")}
    try:
        samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    except ValueError:  # not a metrics file: start again
        return
    for s in samples:
        target = counters.get(s.name)
        if target is not None and target[1] in s.labels and s.value > 0:
            target[0].labels(s.labels[target[1]]).inc(s.value)


def write_textfile(path: str, registry: CollectorRegistry) -> None:
    """For node-exporter's textfile collector (written atomically: temp file + rename)."""
    from prometheus_client import write_to_textfile

    write_to_textfile(path, registry)


def push(gateway: str, registry: CollectorRegistry, *, job: str = "billing_run_cycle",
         grouping: Iterable[tuple[str, str]] = ()) -> None:
    """Push to a Prometheus Pushgateway (``http://host:9091``); replaces this job's group."""
    from prometheus_client import push_to_gateway

    push_to_gateway(gateway, job=job, registry=registry, grouping_key=dict(grouping), timeout=10)
