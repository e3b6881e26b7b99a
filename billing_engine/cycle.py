"""The run-cycle: a batched charge pipeline that charges every due period exactly once.

Per batch of due subscriptions (see DESIGN.md, "The charge pipeline"):

1. claim the batch (:mod:`claims`: SKIP LOCKED on PostgreSQL, a short lease renewed
   by a heartbeat while this worker lives);
2. ONE transaction (:func:`charging.prepare`): decide each subscription
   (:func:`renewals.decide`, the same decision the dry run shows), end what must end,
   write the invoices and ``pending`` attempts with their fixed idempotency keys —
   COMMIT before any gateway call;
3. gateway calls in parallel (``BILLING_GATEWAY_CONCURRENCY`` in flight; one after the
   other from the run's own thread while the gateway answers at once: :class:`_Lanes`),
   paced by the gateway's rate limiter (shared by all workers through the database); an
   attempt whose outcome is unknown is first looked up, then re-sent with the SAME key;
4. ONE transaction (:func:`charging.settle`): apply the answers set-based.

Batch k+1 is prepared while batch k is at the gateway. Only a definitive answer about
a charge settles it: any error leaves the attempt unresolved (reconciled first next
time). A configuration error (credentials, account, invalid request) stops the run at
once (exit 78); a run of consecutive unreachable answers trips the breaker (exit 75);
a stop request (SIGTERM/SIGINT) stops claiming, lets in-flight calls finish (bounded),
settles them and releases every claim; database failures are retried, then end the
run (exit 70). A crash at any instant leaves only pending attempts and claims that
lapse within the lease.
"""

from __future__ import annotations

import contextvars
import gc
import itertools
import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, col, select

from billing_engine import charging, claims, digests, pauses, payments, reminders, renewals
from billing_engine.db import transaction
from billing_engine.errors import DatabaseUnavailable
from billing_engine.gateway.protocol import (
    ChargeResult,
    ChargeStatus,
    GatewayAuthError,
    GatewayError,
    GatewayUnreachable,
    PaymentGateway,
    RecordsCallsTogether,
)
from billing_engine.models import Customer, Plan, Refund, RefundStatus, Subscription, SubscriptionStatus, new_id
from billing_engine.money import format_minor
from billing_engine.settings import Settings, get_settings

log = logging.getLogger(__name__)

T = TypeVar("T")

STOP_GATEWAY_UNREACHABLE = "gateway_unreachable"
STOP_GATEWAY_CONFIGURATION = "gateway_configuration"
STOP_REQUESTED = "stop_requested"
EXIT_CODES = {STOP_GATEWAY_UNREACHABLE: 75, STOP_GATEWAY_CONFIGURATION: 78, STOP_REQUESTED: 143}
# (database errors end a run by raising DatabaseUnavailable: exit 70)
DRAIN_SECONDS = 60.0  # on a stop request: how long in-flight gateway calls may still take


@dataclass
class CycleSummary:
    at: datetime
    dry_run: bool = False
    run_id: str | None = None  # on every log line of the run (and in the metrics' labels-free summary)
    total_due: int = 0  # counted up front (progress bar)
    due: int = 0  # processed this run
    charged: int = 0  # gateway charge calls made for new attempts
    succeeded: int = 0
    declined_soft: int = 0
    declined_hard: int = 0
    unknown: int = 0  # outcome still unknown: reconciled first next run
    unresolved: int = 0  # attempts an error left unresolved (not sent, or lookup failed)
    reconciled: int = 0
    canceled_involuntary: int = 0
    cancellations_effective: int = 0
    paused: int = 0  # scheduled pauses that took effect (no charge)
    resumed: int = 0  # paused subscriptions resumed by their resume date (then charged if due)
    blocked: int = 0  # not charged: no consent / no usable card
    refunded_after_cancel: int = 0  # charges that landed after the customer cancelled
    held_by_other_workers: int = 0  # due, but claimed by another live worker
    reminders_queued: int = 0
    digests_queued: int = 0  # monthly digests and yearly summaries offered to the outbox
    waiting_for_reminder: int = 0  # due, but the period's reminder is not the lead time old yet
    notifications_sent: int = 0
    collected: dict[str, int] = field(default_factory=dict)  # currency -> minor units
    declines_by_code: dict[str, int] = field(default_factory=dict)  # gateway decline code -> count (metrics)
    would_charge: list[dict[str, Any]] = field(default_factory=list)  # dry run: the planned action per subscription
    errors: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped early (see EXIT_CODES)
    stop_message: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.stopped or "", 0)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = self.at.isoformat().replace("+00:00", "Z")
        d["collected_display"] = {c: format_minor(v, c) for c, v in sorted(self.collected.items())}
        d["exit_code"] = self.exit_code
        return d


# --------------------------------------------------------------------------- dry run


def _iter_due(engine: Engine, now: datetime, batch: int) -> Iterator[list[Subscription]]:
    cursor = claims.Cursor()
    while not cursor.exhausted:
        with Session(engine) as s:
            subs = claims.due_page(s, now, cursor, batch)
        if subs:
            yield subs


def plan_actions(engine: Engine, now: datetime, *, limit: int | None = None, batch: int = 500,
                 settings: Settings | None = None) -> list[dict[str, Any]]:
    """What a run at ``now`` will do, per due subscription (the dry run). Changes nothing."""
    out: list[dict[str, Any]] = []
    with Session(engine) as s:  # what the run's first step (pauses.run_due) will do
        for sub in pauses.planned(s, now):
            plan = s.get(Plan, sub.plan_id)
            cust = s.get(Customer, sub.customer_id)
            assert plan is not None
            ending = sub.cancel_at_period_end
            out.append({
                "subscription_id": sub.id, "customer_email": cust.email if cust else "", "plan": plan.code,
                "action": "end_at_period_end" if ending else "resume",
                "reason": sub.cancellation_reason if ending else "resume_date",
                "message": None if ending else "resumes, then charged if due (pauses.resume_changes)",
                "amount_minor": 0, "currency": plan.currency, "amount": format_minor(0, plan.currency),
                "status": sub.status, "due_at": sub.current_period_end if ending else sub.resumes_at,
            })
    for subs in _iter_due(engine, now, batch):
        with Session(engine) as s:
            snaps = renewals.load(s, subs, settings=settings)
            emails: dict[str, str] = {c.id: c.email for c in s.exec(
                select(Customer).where(col(Customer.id).in_({x.customer_id for x in subs})))}
        for snap in snaps:
            action = renewals.decide(snap, now)
            if action.kind == renewals.ActionKind.NOTHING:
                continue
            sub, plan = snap.sub, snap.plan
            amount = action.amount_minor if action.amount_minor is not None else plan.amount_minor
            currency = action.currency or plan.currency
            out.append({
                "subscription_id": sub.id, "customer_email": emails.get(sub.customer_id, ""), "plan": plan.code,
                "action": action.kind.value, "reason": action.reason, "message": action.message,
                "amount_minor": amount, "currency": currency, "amount": format_minor(amount, currency),
                "gross_minor": action.gross_minor, "discount_minor": action.discount_minor, "coupon": action.coupon,
                "status": sub.status,
                "due_at": sub.next_retry_at if sub.status == SubscriptionStatus.PAST_DUE else sub.current_period_end,
            })
            if limit and len(out) >= limit:
                return out
    return out


# --------------------------------------------------------------------------- the run


@dataclass
class _Answer:
    step: charging.Step
    result: ChargeResult | None = None
    error: BaseException | None = None


SLOW_CALL_S = 0.25  # one call this long that spent <= a fifth of it on CPU waited on the gateway
WAITED_CALL_S = 0.002  # ... or WAITED_CALLS calls in a row this long (a gateway ~10 ms away)
WAITED_CALLS = 3
WATCH_EVERY_S = 0.02


class _Lanes:
    """How a worker calls the gateway: from the run's own thread, one call after the
    other, while the gateway answers at once (an in-process gateway: more threads would
    only hand the interpreter lock around); from ``BILLING_GATEWAY_CONCURRENCY`` pool
    threads (lanes) per batch from the moment a call shows that it waits on the gateway
    -- a network round trip, a rate limiter's pause -- for the rest of the run.

    "Waits" is judged by the calling thread's CPU time against the wall clock, not by the
    wall clock alone: on a busy machine a quick call can take long while the thread waits
    for a core or the interpreter lock, but it is on the CPU for much of that time; a call
    to Stripe (~300 ms) spends well under 1 % of it on the CPU. Either one call of
    ``SLOW_CALL_S`` (longer than a garbage collection's pause of every thread), or
    ``WAITED_CALLS`` calls in a row of ``WAITED_CALL_S`` each (a pause or a preemption
    does not hit three 30-us calls in a row; a gateway 10 ms away does). A watchdog looks
    at the call in flight every ``WATCH_EVERY_S`` (its thread's CPU clock), so a slow
    gateway gets every lane while the first call is still out, not after its answer.

    Waiting for the interpreter lock is off the CPU too: a quick in-process call that lets
    go of the lock (a SQLite read does) while the run's settling thread is busy in Python
    gets it back one switch interval (5 ms) later. So a call shorter than two switch
    intervals during which the process's other threads were on the CPU for half its time
    proves nothing either way (it neither counts nor breaks a row): the lock explains it.
    (Three such calls in a row opened the lanes for the rest of a run in ~1 of 5 runs of
    bench/cycle_cpu.py, costing ~40 % more CPU per renewal in thread switches.)"""

    def __init__(self, most: int) -> None:
        self.most = most
        self.now = 0  # 0: calls made by the run's own thread; else lanes per batch
        self._waited = 0  # calls in a row that waited WAITED_CALL_S
        # thread id -> (wall, thread CPU, process CPU) at the call's start
        self._calls: dict[int, tuple[float, float, float]] = {}
        self._batches: weakref.WeakSet[_Batch] = weakref.WeakSet()
        self._closed = threading.Event()
        self._watchdog: threading.Thread | None = None

    def add(self, batch: _Batch) -> None:
        """A batch at the gateway: it gets lanes at once when the gateway turns out slow."""
        self._batches.add(batch)
        if not self.now and self._watchdog is None and hasattr(time, "pthread_getcpuclockid"):
            self._watchdog = threading.Thread(target=self._watch, name="billing-lanes", daemon=True)
            self._watchdog.start()

    def calling(self) -> None:
        self._calls[threading.get_ident()] = (time.perf_counter(), time.thread_time(), time.process_time())

    def called(self) -> None:
        begun = self._calls.pop(threading.get_ident(), None)
        if begun is not None and not self.now:
            wall, cpu = time.perf_counter() - begun[0], time.thread_time() - begun[1]
            if wall < WAITED_CALL_S or cpu > 0.2 * wall:
                self._waited = 0
                return
            others = time.process_time() - begun[2] - cpu
            if wall < 2 * sys.getswitchinterval() and others >= 0.5 * wall:
                return  # the interpreter lock explains it: no evidence either way
            self._waited += 1
            if self._waited >= WAITED_CALLS:
                self._open(f"{WAITED_CALLS} calls in a row waited on it")
            else:
                self._judge(wall, cpu)

    def _judge(self, wall: float, cpu: float) -> None:
        if not self.now and wall >= SLOW_CALL_S and cpu <= 0.2 * wall:
            self._open(f"a call waited {wall:.2f}s on it")

    def _open(self, why: str) -> None:
        if self.now:
            return
        self.now = self.most
        log.info("run-cycle: the gateway makes calls wait (%s): up to %d in flight", why, self.most)
        for batch in list(self._batches):
            batch.open()

    def _watch(self) -> None:
        while not self.now and not self._closed.wait(WATCH_EVERY_S):
            at = time.perf_counter()
            for tid, (wall, cpu, _process) in list(self._calls.items()):
                if at - wall < SLOW_CALL_S:
                    continue
                try:
                    spent = time.clock_gettime(time.pthread_getcpuclockid(tid)) - cpu
                except (OSError, OverflowError):  # the call ended and its thread went away
                    continue
                self._judge(at - wall, spent)

    def close(self) -> None:
        self._closed.set()


class _Batch:
    """A batch's gateway calls. While the gateway answers at once (``lanes.now == 0``)
    the thread that starts the batch (:meth:`start`) makes them itself, inside the gateway's
    :meth:`~RecordsCallsTogether.together` when it has one; else pool threads (lanes)
    that each take the next step until none is left (one future per lane, not per call:
    a future per call cost a tenth of the run's CPU with a fast gateway). If the gateway
    turns out slow meanwhile, ``lanes`` opens the lanes (:meth:`open`) and the calling
    thread stops after its call: the lanes take the remaining steps."""

    def __init__(self, steps: list[charging.Step], call: Callable[[charging.Step], _Answer],
                 pool: ThreadPoolExecutor, lanes: _Lanes, gateway: PaymentGateway | None = None) -> None:
        self.ids = [st.subscription_id for st in steps]  # in flight, claimed by this worker
        self.steps = steps
        self.answers: list[_Answer | None] = [None] * len(steps)
        self._next = itertools.count()
        self._call = call
        self._pool, self._lanes = pool, lanes
        self._gateway = gateway
        self._lock = threading.Lock()
        self.futures: list[Future[None]] = []
        self._calling = False  # the starting thread is making calls (it counts as a lane)

    def start(self) -> None:
        self._lanes.add(self)
        if not self._lanes.now:
            self._inline()
        self.open()

    def _inline(self) -> None:
        together = self._gateway.together() if isinstance(self._gateway, RecordsCallsTogether) else nullcontext()
        done: list[int] = []
        self._calling = True
        try:
            with together:  # until the gateway turns out slow: then the lanes take the rest
                done = self._take(until_lanes_open=True)
        except Exception as exc:  # the gateway did not record these calls: none of them happened
            log.error("run-cycle: the gateway could not record %d calls; they stay pending", len(done), exc_info=True)
            for i in done:
                self.answers[i] = _Answer(self.steps[i], error=exc)
        finally:
            self._calling = False

    def open(self) -> None:
        with self._lock:
            if not self._lanes.now:
                return
            for _ in range(min(self._lanes.now, len(self.steps)) - len(self.futures) - self._calling):
                try:
                    self.futures.append(self._pool.submit(contextvars.copy_context().run, self._lane))
                except RuntimeError:  # the pool is shutting down (the run stops): no new lanes
                    return

    def _lane(self) -> None:
        self._take()

    def _take(self, *, until_lanes_open: bool = False) -> list[int]:
        """Make calls, each for the next step not taken yet, until none is left (or the
        lanes open); the indexes of the steps this thread called."""
        made: list[int] = []
        for i in self._next:  # itertools.count is atomic under the GIL
            if i >= len(self.steps):
                break
            self.answers[i] = self._call(self.steps[i])
            made.append(i)
            if until_lanes_open and self._lanes.now:
                break
        return made

    def done(self) -> bool:
        with self._lock:
            return all(f.done() for f in self.futures)

    def wait(self, timeout: float | None) -> None:
        """Until every lane is done (lanes opened meanwhile included), or ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                lanes = list(self.futures)
            wait_futures(lanes, timeout=None if deadline is None else max(deadline - time.monotonic(), 0))
            with self._lock:
                if len(self.futures) == len(lanes) or (deadline is not None and time.monotonic() >= deadline):
                    return


def _db(fn: Callable[[], T], *, what: str, tries: int = 3) -> T:
    """Run one transaction, retrying a lost connection / serialisation failure (each
    phase is safe to repeat: it re-reads state and is idempotent)."""
    for i in range(tries):
        try:
            return fn()
        except (OperationalError, DBAPIError) as exc:
            if i == tries - 1 or (isinstance(exc, DBAPIError) and not exc.connection_invalidated
                                  and not isinstance(exc, OperationalError)):
                log.error("run-cycle: database error while %s", what, exc_info=True)
                raise DatabaseUnavailable(
                    f"database error while {what}: {type(exc.orig).__name__ if exc.orig else type(exc).__name__}; "
                    "nothing was lost: pending attempts are reconciled on the next run"
                ) from exc
            time.sleep(0.2 * (2**i))
    raise AssertionError("unreachable")


class _Runner:
    def __init__(self, engine: Engine, gateway: PaymentGateway, *, now: datetime, settings: Settings,
                 summary: CycleSummary, worker: str, stop: threading.Event, lanes: int = 1) -> None:
        self.engine, self.gateway, self.now, self.settings = engine, gateway, now, settings
        self.summary, self.worker, self.stop = summary, worker, stop
        self.halt = threading.Event()  # no more gateway calls (config error / breaker / stop)
        self._lock = threading.Lock()
        self._consecutive_unreachable = 0
        self.plans: dict[str, Plan] = {}
        self.again: list[str] = []  # paid, and the next period is due too (a late run catching up)
        self.batches = 0
        self.lanes = _Lanes(lanes)

    def ids(self, step: charging.Step) -> dict[str, str]:
        """The identifiers on every log line about one renewal (pool threads do not see the
        run's context variables, so they are passed explicitly)."""
        return {"run_id": self.summary.run_id or "", "worker_id": self.worker,
                "subscription_id": step.subscription_id, "attempt_id": step.attempt_id}

    # -- gateway (runs in the pool's threads) ----------------------------------------

    def call(self, step: charging.Step) -> _Answer:
        if self.halt.is_set():
            return _Answer(step, error=_NotSent("the run stopped before this call"))
        self.lanes.calling()
        try:
            if step.reconcile:
                found = self.gateway.find_charge(step.request.idempotency_key, metadata=step.request.metadata)
                if found is not None:
                    return self._seen(_Answer(step, result=found))
            return self._seen(_Answer(step, result=self.gateway.charge(step.request)))
        except GatewayAuthError as exc:
            self._halt(STOP_GATEWAY_CONFIGURATION, f"the payment gateway refused our credentials: {exc}")
            return _Answer(step, error=exc)
        except GatewayUnreachable as exc:
            return self._seen(_Answer(step, error=exc))
        except GatewayError as exc:
            if not step.reconcile:  # a new charge refused as a request: our configuration, not the card
                self._halt(STOP_GATEWAY_CONFIGURATION, f"the payment gateway refused a charge request: {exc}")
            return _Answer(step, error=exc)
        except Exception as exc:  # an adapter bug must not settle anything
            log.exception("run-cycle: gateway call failed", extra=self.ids(step))
            return _Answer(step, error=exc)
        finally:
            self.lanes.called()

    def _seen(self, answer: _Answer) -> _Answer:
        unreachable = isinstance(answer.error, GatewayUnreachable) or (
            answer.result is not None and answer.result.status == ChargeStatus.UNKNOWN)
        with self._lock:
            self._consecutive_unreachable = self._consecutive_unreachable + 1 if unreachable else 0
            tripped = self._consecutive_unreachable >= self.settings.gateway_breaker_failures
        if tripped:
            self._halt(STOP_GATEWAY_UNREACHABLE,
                       f"the payment gateway is unreachable: {self.settings.gateway_breaker_failures} "
                       "consecutive calls got no answer")
        return answer

    def _halt(self, reason: str, message: str) -> None:
        with self._lock:
            first = self.summary.stopped is None
            if first:
                self.summary.stopped, self.summary.stop_message = reason, message
        if first:
            log.error("run-cycle: stopping: %s", message, extra={"run_id": self.summary.run_id or "",
                                                                 "worker_id": self.worker, "reason": reason})
        self.halt.set()

    # -- database phases (main thread) -----------------------------------------------

    def claim_and_prepare(self, cursor: claims.Cursor, want: int, lease: timedelta,
                          again: list[str] | None = None) -> tuple[list[str], charging.Prepared]:
        """ONE transaction: claim a batch (or re-claim ``again`` for catch-up) and write
        its invoices and pending attempts. Committed before any gateway call."""
        saved = (dict(cursor.positions), set(cursor.done))

        def txn() -> tuple[list[str], charging.Prepared]:
            cursor.positions, cursor.done = dict(saved[0]), set(saved[1])  # a retry reads the same page
            with transaction(self.engine) as s:
                rows: list[Any] | None = None
                if again is not None:
                    ids = claims.claim_ids_in(s, again, now=self.now, worker=self.worker, lease=lease)
                else:
                    rows = claims.claim_rows_in(s, now=self.now, worker=self.worker, batch_size=want, lease=lease,
                                                cursor=cursor)
                    ids = [r.id for r in rows]
                if not ids:
                    return ids, charging.Prepared()
                prepared = charging.prepare(s, ids, now=self.now, worker=self.worker, plans=self.plans,
                                            settings=self.settings, subs=rows)
                claims.release_in(s, prepared.settled_ids, self.worker)  # decided without the gateway
                return ids, prepared
        ids, prepared = _db(txn, what="preparing a batch")
        with self._lock:
            self._count_actions(prepared)
        return ids, prepared

    def _count_actions(self, prepared: charging.Prepared) -> None:
        for _sid, action in prepared.actions:
            if action.kind == renewals.ActionKind.NOTHING or action.reason == renewals.CUT_OVER:
                continue  # (an import before its cut-over: the previous biller charges it)
            self.summary.due += 1
            if action.kind == renewals.ActionKind.END_AT_PERIOD_END:
                self.summary.cancellations_effective += 1
            elif action.kind == renewals.ActionKind.PAUSE:
                self.summary.paused += 1
            elif action.kind == renewals.ActionKind.CANCEL_INVOLUNTARY:
                self.summary.blocked += 1
                self.summary.canceled_involuntary += 1
            elif action.kind == renewals.ActionKind.SKIP:
                self.summary.blocked += 1
                self.summary.errors.append(f"{_sid}: not charged: {action.message}")
            elif action.kind == renewals.ActionKind.WAIT:
                self.summary.waiting_for_reminder += 1
            elif action.kind == renewals.ActionKind.CHARGE:
                self.summary.charged += 1

    def settle(self, batch: _Batch, *, timeout: float | None = None) -> None:
        """Settle the batch's answers and release its claims in ONE transaction (if that
        fails, the claims are still let go here rather than at the end of the lease)."""
        try:
            self._settle(batch, timeout=timeout)
        except BaseException:
            claims.release(self.engine, batch.ids, self.worker)
            raise

    def _settle(self, batch: _Batch, *, timeout: float | None = None) -> None:
        batch.wait(timeout)
        for f in list(batch.futures):  # what ``call`` does not catch (SystemExit, KeyboardInterrupt) is the run's
            if f.done() and not f.cancelled() and (exc := f.exception()) is not None:
                raise exc
        answers = [a for a in batch.answers if a is not None]  # a late one stays pending: reconciled later
        not_done = len(batch.steps) - len(answers)
        definitive = [(a.step, a.result) for a in answers if a.result is not None]
        debug = log.isEnabledFor(logging.DEBUG)
        failed = 0
        with self._lock:
            for a in answers:
                if a.error is not None:
                    self.summary.unresolved += 1
                    failed += 1
                    if not isinstance(a.error, _NotSent):
                        self.summary.errors.append(
                            f"{a.step.subscription_id}: left unresolved: {type(a.error).__name__}: {a.error}")
                    if debug:
                        log.debug("run-cycle: attempt left unresolved: %s", type(a.error).__name__, extra=self.ids(a.step))
                elif a.result is not None and a.result.decline_code:
                    code = a.result.decline_code
                    self.summary.declines_by_code[code] = self.summary.declines_by_code.get(code, 0) + 1
            self.summary.unresolved += not_done

        def txn() -> list[charging.Settled]:
            with transaction(self.engine) as s:
                return charging.settle(s, definitive, now=self.now, plans=self.plans,
                                       schedule_days=self.settings.dunning_schedule_days,
                                       release=(self.worker, batch.ids),
                                       number_prefix=self.settings.invoice_number_prefix, settings=self.settings)
        settled = _db(txn, what="settling a batch")
        reconciles = {a.step.attempt_id for a in answers if a.step.reconcile}
        outcomes: dict[str, int] = {}
        with self._lock:
            for st in settled:
                self._count(st, reconciled=st.attempt_id in reconciles)
                outcomes[st.outcome.value] = outcomes.get(st.outcome.value, 0) + 1
                if debug:
                    log.debug("run-cycle: renewal settled: %s", st.outcome.value, extra={
                        "run_id": self.summary.run_id or "", "worker_id": self.worker,
                        "subscription_id": st.subscription_id, "attempt_id": st.attempt_id, "outcome": st.outcome.value})
                if st.next_due_at is not None and st.next_due_at <= self.now:
                    self.again.append(st.subscription_id)
            self.batches += 1
            batch_no = self.batches
        log.info("run-cycle: batch settled", extra={
            "batch": batch_no, "calls": len(batch.steps), "outcomes": outcomes,
            "unresolved": failed + not_done})

    def take_again(self, want: int) -> list[str]:
        """Up to ``want`` renewals paid in this run whose next period is due too."""
        with self._lock:
            again, self.again = self.again[:want], self.again[want:]
        return again

    def _count(self, st: charging.Settled, *, reconciled: bool) -> None:
        s, o = self.summary, st.outcome
        if reconciled and o not in (payments.Outcome.UNKNOWN, payments.Outcome.ALREADY_SETTLED):
            s.reconciled += 1
        if o == payments.Outcome.SUCCEEDED:
            s.succeeded += 1
            s.collected[st.currency] = s.collected.get(st.currency, 0) + st.amount_minor
        elif o == payments.Outcome.REFUNDING:
            s.refunded_after_cancel += 1
        elif o == payments.Outcome.DECLINED_SOFT:
            s.declined_soft += 1
        elif o == payments.Outcome.DECLINED_HARD:
            s.declined_hard += 1
            s.canceled_involuntary += 1
        elif o == payments.Outcome.EXHAUSTED:
            s.declined_soft += 1
            s.canceled_involuntary += 1
        elif o == payments.Outcome.UNKNOWN:
            s.unknown += 1


GROWING_TABLES = ("invoices", "payment_attempts", "events", "notifications", "subscriptions")


class _Statistics:
    """Keeps PostgreSQL's planner statistics in step with a big run.

    A run writes as many invoices, attempts and events as there are renewals; planned
    with the statistics of the tables' earlier, smaller selves (or of empty tables, and
    autovacuum may be off or slow), PostgreSQL picks sequential scans that make every
    batch cost O(table). ``ANALYZE`` the growing tables each time the run has renewed 4x
    more than at the last one (2,000, 8,000, 32,000, ...): log(N) times per run."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.next_at = 2_000 if engine.dialect.name == "postgresql" else None
        self.thread: threading.Thread | None = None

    def after(self, processed: int) -> None:
        """On a thread of its own (its own connection): an ANALYZE of the growing tables
        takes a while (0.2-1 s at 10k renewals) and the batches need not wait for it; at
        most one runs at a time."""
        if self.next_at is None or processed < self.next_at or (self.thread is not None and self.thread.is_alive()):
            return
        self.next_at = processed * 4
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._analyze,),
                                       name="billing-analyze", daemon=True)
        self.thread.start()

    def _analyze(self) -> None:
        try:
            with self.engine.begin() as c:
                c.exec_driver_sql("ANALYZE " + ", ".join(GROWING_TABLES))
        except Exception:  # statistics are an optimisation, never a reason to stop billing
            log.warning("run-cycle: ANALYZE failed", exc_info=True)

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join()


class _Settler:
    """Settles the batches in order. On PostgreSQL in a thread of its own: the database
    then writes one batch's settle while the run-cycle's thread prepares the next (the
    worker is CPU-bound in Python, the database works on the other core). At most one
    settle waits behind the running one. Elsewhere (SQLite: one writer) inline."""

    def __init__(self, runner: _Runner, *, threaded: bool) -> None:
        self.runner = runner
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="billing-settle") if threaded else None
        self.pending: deque[tuple[_Batch, Future[None]]] = deque()
        self.inline: _Batch | None = None

    def submit(self, batch: _Batch, *, timeout: float | None = None) -> None:
        if self.pool is None:
            self.inline = batch  # listed while it settles: the heartbeat renews its claims
            try:
                self.runner.settle(batch, timeout=timeout)
            finally:
                self.inline = None
            return
        # in a copy of this thread's context: the run's log fields (run id, worker id) go along
        self.pending.append((batch, self.pool.submit(contextvars.copy_context().run, self.runner.settle, batch,
                                                     timeout=timeout)))
        while len(self.pending) > 1:
            self.wait_one()

    def wait_one(self) -> None:
        try:
            self.pending[0][1].result()  # a settle's error (DatabaseUnavailable) is the run's
        finally:
            self.pending.popleft()  # listed until settled: the heartbeat renews its claims

    def drain(self) -> None:
        while self.pending:
            self.wait_one()

    def busy(self) -> bool:
        return bool(self.pending)

    def ids(self) -> list[str]:
        inline = self.inline
        return [sid for b, _f in list(self.pending) for sid in b.ids] + (inline.ids if inline else [])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


class _NotSent(Exception):
    """The call was never made (the run stopped first); the attempt stays pending."""


def send_pending_refunds(engine: Engine, gateway: PaymentGateway, now: datetime) -> int:
    """Send the automatic refunds (charges that landed after a cancellation) still pending."""
    from billing_engine import refunds

    with Session(engine) as s:
        ids = list(s.exec(select(Refund.id).where(
            Refund.status == RefundStatus.PENDING,
            col(Refund.idempotency_key).startswith(payments.AUTO_REFUND_PREFIX))))
    sent = 0
    for rid in ids:
        try:
            refunds.send(engine, gateway, rid, now=now, actor="system:refund_after_cancel")
            sent += 1
        except Exception as exc:  # stays pending: tried again on the next run
            log.warning("automatic refund %s not sent: %s", rid, exc)
    return sent


RUN_GC_THRESHOLD = (10_000, 20, 20)
_gc_lock = threading.Lock()
_gc_runs = 0  # runs going on in this process
_gc_before = gc.get_threshold()  # the process's own thresholds, set again after the last run


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """The garbage collector's thresholds raised while a run goes on (restored after the
    last concurrent run in this process ends). A run allocates millions of short-lived
    containers -- rows, dicts, answers -- and almost no reference cycles; with the
    default thresholds (700, 10, 10) the collector ran ~480 times per 10,000 renewals and
    its full collections walked the whole heap, ~10 % of the run's time, pausing every
    thread. Cyclic garbage is still collected: a full collection every ~4 M allocations."""
    global _gc_runs, _gc_before
    with _gc_lock:
        if not _gc_runs:
            _gc_before = gc.get_threshold()
            gc.set_threshold(*RUN_GC_THRESHOLD)
        _gc_runs += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_runs -= 1
            if not _gc_runs:
                gc.set_threshold(*_gc_before)


def run_cycle(
    engine: Engine,
    gateway: PaymentGateway,
    *,
    now: datetime,
    settings: Settings | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    batch_size: int | None = None,
    worker: str | None = None,
    lease: timedelta | None = None,
    concurrency: int | None = None,
    deliver: Callable[[Engine, datetime], int] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> CycleSummary:
    """Run one billing cycle as of ``now``. Safe to run in parallel and to re-run.

    Never raises for a gateway problem: the summary says why the run stopped
    (``stopped`` / ``exit_code``). Raises :class:`DatabaseUnavailable` when the
    database stays unusable."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    settings = settings or get_settings()
    summary = CycleSummary(at=now, dry_run=dry_run)
    batch_size = batch_size or settings.cycle_batch_size
    started = time.perf_counter()
    if dry_run:
        summary.would_charge = plan_actions(engine, now, limit=limit, batch=batch_size, settings=settings)
        summary.due = len(summary.would_charge)
        summary.timings["total_s"] = round(time.perf_counter() - started, 3)
        return summary
    # paused subscriptions whose resume date has come are resumed first (then due like any
    # other), and scheduled cancellations of paused ones take effect
    summary.resumed, ended = _db(lambda: pauses.run_due(engine, now), what="resuming paused subscriptions")
    summary.cancellations_effective += ended
    summary.total_due = _db(lambda: claims.count_due(engine, now), what="counting due work")
    if limit:
        summary.total_due = min(summary.total_due, limit)
    if on_progress:
        on_progress(0, summary.total_due)  # the total is known before the first batch
    worker = worker or claims.new_worker_id()
    summary.run_id = new_id("run")
    with structlog.contextvars.bound_contextvars(run_id=summary.run_id, worker_id=worker):
        log.info("run-cycle: started", extra={"at": now.isoformat(), "total_due": summary.total_due,
                                              "batch_size": batch_size})
        with _fewer_collections():
            _run(engine, gateway, summary, now=now, settings=settings, limit=limit, batch_size=batch_size,
                 worker=worker, lease=lease, concurrency=concurrency, deliver=deliver, on_progress=on_progress,
                 stop=stop, started=started)
        log.info("run-cycle: finished", extra={
            "due": summary.due, "succeeded": summary.succeeded, "declined_soft": summary.declined_soft,
            "declined_hard": summary.declined_hard, "unknown": summary.unknown, "unresolved": summary.unresolved,
            "collected": summary.collected, "stopped": summary.stopped, "duration_s": summary.timings.get("total_s")})
    return summary


def _run(engine: Engine, gateway: PaymentGateway, summary: CycleSummary, *, now: datetime, settings: Settings,
         limit: int | None, batch_size: int, worker: str, lease: timedelta | None, concurrency: int | None,
         deliver: Callable[[Engine, datetime], int] | None, on_progress: Callable[[int, int], None] | None,
         stop: threading.Event | None, started: float) -> None:
    lease = lease or timedelta(seconds=settings.claim_lease_seconds)
    stop = stop or threading.Event()
    lanes = concurrency or settings.gateway_concurrency
    runner = _Runner(engine, gateway, now=now, settings=settings, summary=summary, worker=worker, stop=stop,
                     lanes=lanes)
    pool = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="billing-gateway")
    processed = 0
    statistics = _Statistics(engine)
    inflight: deque[_Batch] = deque()
    settler = _Settler(runner, threaded=engine.dialect.name == "postgresql")
    try:
        def held() -> list[str]:
            return [sid for b in list(inflight) for sid in b.ids] + settler.ids()

        with claims.Heartbeat(engine, worker, lease, held):
            cursor = claims.Cursor()
            while not (stop.is_set() or runner.halt.is_set()) and (limit is None or processed < limit):
                want = batch_size if limit is None else min(batch_size, limit - processed)
                ids: list[str] = []
                prepared = charging.Prepared()
                if not cursor.exhausted:
                    ids, prepared = runner.claim_and_prepare(cursor, want, lease)
                if not ids and (again := runner.take_again(want)):
                    ids, prepared = runner.claim_and_prepare(cursor, want, lease, again=again)
                    if not ids:
                        continue
                if not ids:  # settle what is left: its renewals may be due again (catch-up)
                    if inflight:
                        settler.submit(inflight.popleft())
                    elif settler.busy():
                        settler.drain()
                    else:
                        break
                    continue
                batch = _Batch(prepared.steps, runner.call, pool, runner.lanes, gateway)
                inflight.append(batch)  # listed first: the heartbeat renews its claims while it calls
                batch.start()
                processed += len(ids)
                while inflight and (len(inflight) >= 2 or inflight[0].done()):
                    settler.submit(inflight.popleft())  # listed by the settler: the heartbeat renews it
                statistics.after(processed)
                if on_progress:
                    on_progress(processed, summary.total_due)
            if stop.is_set() and summary.stopped is None:
                summary.stopped, summary.stop_message = STOP_REQUESTED, "stopped on request"
            deadline = time.monotonic() + DRAIN_SECONDS
            while inflight:
                settler.submit(inflight.popleft(), timeout=max(deadline - time.monotonic(), 0.1)
                               if summary.stopped == STOP_REQUESTED else None)
            settler.drain()
    finally:
        runner.lanes.close()
        pool.shutdown(wait=summary.stopped != STOP_REQUESTED, cancel_futures=True)
        settler.close()  # a settle that fails lets its own batch's claims go
        statistics.close()
        for b in inflight:  # only on an exception: let the claims go now rather than at lease end
            try:
                claims.release(engine, b.ids, worker)
            except Exception:
                log.warning("could not release claims of %s", worker, exc_info=True)
    summary.timings["charging_s"] = round(time.perf_counter() - started, 3)
    if on_progress:
        on_progress(processed, summary.total_due)
    if summary.refunded_after_cancel or processed:
        send_pending_refunds(engine, gateway, now)
    summary.held_by_other_workers = _db(lambda: claims.count_held(engine, now), what="counting claimed work")
    if summary.stopped is None:
        t = time.perf_counter()
        summary.reminders_queued = reminders.queue(engine, now=now, settings=settings)
        summary.digests_queued = digests.queue_monthly(engine, now=now) + digests.queue_yearly(engine, now=now)
        summary.timings["reminders_s"] = round(time.perf_counter() - t, 3)
        if deliver is not None:
            try:
                summary.notifications_sent = deliver(engine, now)
            except Exception as exc:  # e-mail trouble never fails a billing run
                summary.errors.append(f"notifications: {type(exc).__name__}: {exc}")
    summary.timings["total_s"] = round(time.perf_counter() - started, 3)


def charge_now(
    engine: Engine, gateway: PaymentGateway, subscription_id: str, *, now: datetime, settings: Settings | None = None,
) -> CycleSummary:
    """Run the renewal pipeline for ONE subscription at once (a card just replaced on a
    subscription in dunning): the same claim -> invoice + pending attempt COMMIT ->
    gateway call -> settle path as the run-cycle, so the open invoice of the period is
    retried (never a second one) and the idempotency key is fixed before the call. If
    another worker holds the subscription, or it is not due, nothing happens."""
    settings = settings or get_settings()
    summary = CycleSummary(at=now)
    worker = claims.new_worker_id()
    lease = timedelta(seconds=settings.claim_lease_seconds)
    runner = _Runner(engine, gateway, now=now, settings=settings, summary=summary, worker=worker,
                     stop=threading.Event())
    ids, prepared = runner.claim_and_prepare(claims.Cursor(), 1, lease, again=[subscription_id])
    if not ids:
        return summary
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="billing-gateway")
    try:
        batch = _Batch(prepared.steps, runner.call, pool, runner.lanes, gateway)
        batch.start()
        runner.settle(batch)
    finally:
        runner.lanes.close()
        pool.shutdown(wait=True)
    return summary
