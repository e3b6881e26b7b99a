"""FakeGateway: a deterministic, in-memory :class:`PaymentGateway` with fault switches.

Used by the demo, the benchmarks and the tests. It behaves like Stripe test mode:

Tokens
    * Stripe's documented test payment methods (:mod:`billing_engine.gateway.cards`):
      ``pm_card_visa``, ``pm_card_mastercard``, ``pm_card_amex`` ... succeed;
      ``pm_card_chargeDeclined`` (generic_decline, soft),
      ``pm_card_chargeDeclinedInsufficientFunds`` (soft), ``...ExpiredCard``,
      ``...LostCard``, ``...StolenCard``, ``...Fraudulent`` (hard),
      ``...ProcessingError``, ``...IncorrectCvc`` (soft),
      ``pm_card_authenticationRequired`` / ``pm_card_authenticationRequiredOnSetup``
      (off-session: declined, hard, ``authentication_required``). The
      ``pm_card_visa_chargeDeclined...`` spellings work too.
    * ``pm_fake_recover_after_<N>``: the first N charges that reach the processor on
      that token decline with ``insufficient_funds`` (soft); from then on they succeed.
    * ``pm_fake_decline_<code>``: every charge declines with ``<code>``
      (e.g. ``pm_fake_decline_expired_card``).
    * ``pm_fake_decline_<code>_after_<N>``: N charges succeed, then every charge
      declines with ``<code>`` (a card reported stolen in month N+1).
    * Any other ``pm_...`` token is a Visa ending 4242 that succeeds.
    * Anything else raises ``GatewayError("no such payment method ...")``.
    Card details: brand/last4 from the card number, expiry 12/2034.

Idempotency (like Stripe)
    Same key + same parameters returns exactly the saved result (a decline too) and
    moves no money; same key + different parameters raises ``IdempotencyConflict``.

Switches (for tests, demos and benchmarks)
    * ``script(token, ["insufficient_funds", "insufficient_funds", "succeed"])``:
      outcomes for the next charges on that token; each entry is ``"succeed"``, a
      decline code, ``"unknown"`` (charged, answer lost) or ``"unreachable"``
      (never arrived). When the script runs out the token's own behaviour resumes.
    * ``fail_next(code)``: the next charge declines with ``code``.
    * ``unknown_next(charged=True)``: the next charge returns ``ChargeStatus.UNKNOWN``.
      ``charged=True``: it went through and is in the ledger ("sent, answer lost");
      ``charged=False``: it never arrived (``find_charge`` returns ``None``).
    * ``transient_error_rate`` with ``seed``: every try fails transiently with that
      probability, half before sending, half after (processed, answer lost). Like the
      Stripe adapter, the fake retries ``max_tries`` times with the same key; a retry
      after a lost answer replays the saved result. All tries failing -> UNKNOWN.
    * ``latency``: seconds slept (``sleep`` is injectable) per call.

Durable ledger (``ledger_path`` / ``BILLING_FAKE_LEDGER``)
    By default the fake's memory dies with its process. With ``ledger_path`` every
    charge, refund, saved idempotent answer and per-token counter lives in a SQLite
    file, written in the same lock as the answer: a charge made by a process that is
    then killed is still known to the next process (reconciliation finds it, a re-send
    with the same key replays it), ``billing refund create`` can refund it, and crash
    tests check the money against this independent ledger.

Money
    ``ledger`` lists every charge that moved money and every refund
    (:class:`LedgerEntry`); ``total_collected(cur)`` is gross charges,
    ``total_refunded(cur)`` refunds, ``net_collected(cur)`` the difference.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import random
import re
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from billing_engine.gateway import cards, outcomes
from billing_engine.gateway.protocol import (
    CardDetails,
    ChargeRequest,
    ChargeResult,
    GatewayError,
    IdempotencyConflict,
    RefundRequest,
    RefundResult,
    RefundStatus,
    SetupResult,
)

SUCCEED = "succeed"
UNKNOWN = "unknown"  # processed, the answer was lost
UNREACHABLE = "unreachable"  # never reached the processor
_SUCCEED_ALIASES = {"succeed", "succeeded", "success"}

_RECOVER = re.compile(r"^pm_fake_recover_after_(\d+)$")
_DECLINE = re.compile(r"^pm_fake_decline_([a-z_]+?)(?:_after_(\d+))?$")


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    kind: str  # "charge" | "refund"
    id: str  # "pi_fake_..." | "re_fake_..."
    amount_minor: int  # always positive; a refund's kind says which way it went
    currency: str  # upper case
    idempotency_key: str
    token: str | None = None
    charge_id: str | None = None  # refunds: the charge they return money from
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Saved:
    operation: str
    fingerprint: tuple[Any, ...]
    result: Any


CALL_LOG_SIZE = 10_000

# A forked child must open its own connection to the ledger file and draw its own charge
# ids: counted here at fork time (an ``os.getpid()`` per statement was a system call per
# statement, ~7 % of a charge's CPU in a VM).
_FORKS = [0]
_IDS = random.Random()  # charge ids unique across processes (seeded from os.urandom)


def _after_fork() -> None:
    _FORKS[0] += 1
    _IDS.seed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class _Store:
    """The fake's durable state in a SQLite file: ONE connection per process, used under
    a lock (the gateway's calls are serialised by its own lock anyway). A connection per
    thread (64 gateway lanes) cost every charge a cold page cache -- SQLite drops a
    connection's cache whenever another connection wrote since its last transaction --
    and each connection kept its own cache of up to 2 MB.

    Inside :meth:`txn` (which holds the file's write lock from its start, so a read and
    the write that depends on it are atomic across processes) the writes are kept in
    memory and written together just before the COMMIT (``executemany``: a statement per
    table, not per write); reads see them. :meth:`savepoint` is a layer of those writes
    that an exception drops. ``synchronous=OFF``: what a COMMIT wrote is in the
    operating system's hands, so it survives the process being killed (what the crash
    tests need of this fake), not a power cut."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._conn: sqlite3.Connection | None = None
        self._forks = -1
        # pending writes of the open transaction: a layer per savepoint, innermost last;
        # each is (kv writes by (ns, key), ledger rows in order)
        self._layers: list[tuple[dict[tuple[str, str], bytes], list[tuple[bytes, float]]]] = []
        with contextlib.closing(self._connect()) as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("CREATE TABLE IF NOT EXISTS kv (ns TEXT, k TEXT, v BLOB, PRIMARY KEY (ns, k)) WITHOUT ROWID")
            c.execute("CREATE TABLE IF NOT EXISTS ledger (seq INTEGER PRIMARY KEY, entry BLOB, at REAL)")

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        c.execute("PRAGMA synchronous=OFF")
        return c

    @property
    def conn(self) -> sqlite3.Connection:
        """(Callers hold ``_lock``.) A forked child opens its own connection."""
        if self._conn is None or self._forks != _FORKS[0]:
            self._conn, self._forks = self._connect(), _FORKS[0]
        return self._conn

    @contextlib.contextmanager
    def txn(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            self._layers = [({}, [])]
            try:
                yield
                kv, ledger = self._layers[0]
                if kv:
                    self.conn.executemany("INSERT OR REPLACE INTO kv (ns, k, v) VALUES (?, ?, ?)",
                                          [(ns, k, v) for (ns, k), v in kv.items()])
                if ledger:
                    self.conn.executemany("INSERT INTO ledger (entry, at) VALUES (?, ?)", ledger)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._depth = 0
                self._layers = []

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """(Inside :meth:`txn`.) What the block wrote is undone if it raises; the
        transaction goes on."""
        with self._lock:
            assert self._layers, "a savepoint needs a transaction"
            self._layers.append(({}, []))
            try:
                yield
            except BaseException:
                self._layers.pop()
                raise
            kv, ledger = self._layers.pop()
            self._layers[-1][0].update(kv)
            self._layers[-1][1].extend(ledger)

    def get(self, ns: str, k: str) -> Any:
        with self._lock:
            for kv, _ledger in reversed(self._layers):
                data = kv.get((ns, k))
                if data is not None:
                    return pickle.loads(data)
            row = self.conn.execute("SELECT v FROM kv WHERE ns = ? AND k = ?", (ns, k)).fetchone()
        return pickle.loads(row[0]) if row else None

    def put(self, ns: str, k: str, v: Any) -> None:
        data = pickle.dumps(v)
        with self._lock:
            if self._layers:
                self._layers[-1][0][(ns, k)] = data
            else:
                self.conn.execute("INSERT OR REPLACE INTO kv (ns, k, v) VALUES (?, ?, ?)", (ns, k, data))

    def append(self, entry: LedgerEntry, at: float) -> None:
        data = pickle.dumps(entry)
        with self._lock:
            if self._layers:
                self._layers[-1][1].append((data, at))
            else:
                self.conn.execute("INSERT INTO ledger (entry, at) VALUES (?, ?)", (data, at))

    def _pending(self) -> list[tuple[bytes, float]]:
        return [row for _kv, ledger in self._layers for row in ledger]

    def entries(self) -> list[LedgerEntry]:
        with self._lock:
            rows = self.conn.execute("SELECT entry FROM ledger ORDER BY seq").fetchall()
            pending = self._pending()
        return [pickle.loads(r[0]) for r in rows] + [pickle.loads(d) for d, _at in pending]

    def times(self) -> list[float]:
        with self._lock:
            rows = self.conn.execute("SELECT at FROM ledger ORDER BY seq").fetchall()
            pending = self._pending()
        return [float(r[0]) for r in rows] + [at for _d, at in pending]


class _Durable(MutableMapping[str, Any]):
    """A dict whose values live in the store (``default`` for missing keys, like Counter)."""

    def __init__(self, store: _Store, ns: str, default: Any = None) -> None:
        self.store, self.ns, self.default = store, ns, default

    def __getitem__(self, k: str) -> Any:
        v = self.store.get(self.ns, k)
        if v is None:
            if self.default is None:
                raise KeyError(k)
            return self.default
        return v

    def get(self, k: str, default: Any = None) -> Any:
        v = self.store.get(self.ns, k)
        return default if v is None else v

    def __setitem__(self, k: str, v: Any) -> None:
        self.store.put(self.ns, k, v)

    def __delitem__(self, k: str) -> None:  # pragma: no cover - never used
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - never used
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - never used
        raise NotImplementedError


class _Slot:
    """One call waiting for its turn in a group commit (:meth:`FakeGateway._grouped`)."""

    __slots__ = ("fn", "at", "done", "result", "error")

    def __init__(self, fn: Callable[[], Any], at: float | None) -> None:
        self.fn, self.at = fn, at
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class FakeGateway:
    """In-memory gateway; see the module docstring for tokens and switches."""

    name = "fake"

    def __init__(
        self,
        *,
        latency: float = 0.0,
        transient_error_rate: float = 0.0,
        seed: int = 0,
        max_tries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        ledger_path: str | None = None,
        rate_limiter: Any = None,
    ) -> None:
        if not 0.0 <= transient_error_rate <= 1.0:
            raise ValueError("transient_error_rate must be between 0 and 1")
        if max_tries < 1:
            raise ValueError("max_tries must be >= 1")
        self.latency = latency
        self.transient_error_rate = transient_error_rate
        self.max_tries = max_tries
        self._ledger: list[LedgerEntry] = []
        self.rate_limiter = rate_limiter  # anything with acquire(), e.g. a shared token bucket
        # (operation, idempotency key or token): the most recent calls, for tests (bounded,
        # so a long run's memory stays flat; the ledger keeps every charge)
        self.calls: deque[tuple[str, str]] = deque(maxlen=CALL_LOG_SIZE)
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._saved: dict[str, _Saved] = {}
        self._collected: dict[str, LedgerEntry] = {}  # charge id -> ledger entry
        self._refunded: Counter[str] = Counter()  # charge id -> minor units refunded
        self._fail_next: deque[str] = deque()
        self._unknown_next: deque[bool] = deque()
        self._scripts: dict[str, deque[str]] = {}
        self._attempts: Counter[str] = Counter()  # token -> charges that reached us (_counts_attempts)
        self._seq = 0
        self._store = _Store(ledger_path) if ledger_path else None
        self._sent = threading.local()  # when this thread's current request was sent
        self._pending: list[_Slot] = []  # durable ledger: calls waiting for the next group commit
        self._group_cond = threading.Condition(threading.Lock())
        self._leading = False  # a thread is running a group (followers wait for it)
        self._together: int | None = None  # the thread inside together(), if any
        if self._store is not None:
            self._saved = _Durable(self._store, "saved")  # type: ignore[assignment]
            self._collected = _Durable(self._store, "collected")  # type: ignore[assignment]
            self._refunded = _Durable(self._store, "refunded", 0)  # type: ignore[assignment]
            self._attempts = _Durable(self._store, "attempts", 0)  # type: ignore[assignment]

    @property
    def ledger(self) -> list[LedgerEntry]:
        """Every charge that moved money and every refund, oldest first."""
        if self._store is not None:
            return self._store.entries()
        return self._ledger

    def ledger_times(self) -> list[float]:
        """When each ledger entry's request was sent (wall clock, after the rate limiter;
        a server sees them half a round trip later, evenly shifted). Durable ledger only."""
        return self._store.times() if self._store is not None else []

    @contextlib.contextmanager
    def _txn(self) -> Iterator[None]:
        with self._lock:
            if self._store is None:
                yield
            else:
                with self._store.txn():
                    yield

    def _grouped(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` under the gateway's lock and in a ledger transaction, its answer
        returned only after that transaction committed.

        With the durable ledger, the calls of concurrent threads share ONE transaction
        (group commit): a thread queues its call, and the thread that then gets the lock
        runs every queued call in order -- each in a savepoint, so one that raises undoes
        only its own writes -- commits once, and hands each caller its own answer or
        error. A commit per charge was ~0.1 ms of CPU per charge (a quarter of a
        run-cycle worker's CPU with this gateway); the answers are the same, in the same
        order of the ledger, and none is returned before its charge is on the file."""
        if self._store is None:
            with self._lock:
                return fn()
        if self._together == threading.get_ident():  # recorded when together() ends
            with self._lock, self._store.savepoint():
                return fn()
        slot = _Slot(fn, getattr(self._sent, "at", None))
        with self._group_cond:
            self._pending.append(slot)
            while not slot.done and self._leading:
                self._group_cond.wait()
            if slot.done:
                group: list[_Slot] = []
            else:  # lead the next group: every call queued so far
                self._leading = True
                group, self._pending = self._pending, []
        if group:
            try:
                with self._lock:
                    self._run_group(group)
            finally:
                with self._group_cond:
                    self._leading = False
                    self._group_cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """The calls this thread makes inside the block share ONE ledger transaction,
        committed when the block ends (:class:`RecordsCallsTogether`): each is answered at
        once, in a savepoint of its own (one that raises undoes only itself), but none is
        on the file before the block ends, and if the block raises or the commit fails,
        none of them happened. Other threads' calls wait for the block. Without a durable
        ledger (or nested) it changes nothing. The run-cycle calls the gateway this way
        while the gateway answers at once: a transaction per call was two thirds of the
        fake's cost there (each SQLite call hands the interpreter lock to another thread)."""
        if self._store is None or self._together == threading.get_ident():
            yield
            return
        with self._group_cond:  # no group commit may run meanwhile: this block is one
            while self._leading:
                self._group_cond.wait()
            self._leading = True
        try:
            with self._lock, self._store.txn():
                self._together = threading.get_ident()
                try:
                    yield
                finally:
                    self._together = None
        finally:
            with self._group_cond:
                self._leading = False
                self._group_cond.notify_all()

    def _run_group(self, group: list[_Slot]) -> None:
        assert self._store is not None
        try:
            with self._store.txn():
                for s in group:
                    self._sent.at = s.at if s.at is not None else time.time()
                    try:
                        if len(group) == 1:
                            s.result = s.fn()
                        else:
                            with self._store.savepoint():
                                s.result = s.fn()
                    except BaseException as exc:  # this call's own error, handed to its caller
                        s.error = exc
                        if len(group) == 1:
                            raise
        except BaseException as exc:  # the transaction failed: no call of the group happened
            for s in group:
                if s.error is None:
                    s.result, s.error = None, exc
        finally:
            for s in group:
                s.done = True

    def _record(self, entry: LedgerEntry) -> None:
        if self._store is not None:
            self._store.append(entry, getattr(self._sent, "at", time.time()))
        else:
            self._ledger.append(entry)

    # -- switches -----------------------------------------------------------------

    def script(self, token: str, outcomes_: Iterable[str]) -> None:
        """Outcomes for the next charges on ``token`` (see module docstring)."""
        steps = deque(SUCCEED if o in _SUCCEED_ALIASES else o for o in outcomes_)
        if not all(isinstance(o, str) and o for o in steps):
            raise ValueError("script outcomes must be non-empty strings")
        with self._lock:
            self._scripts[token] = steps

    def fail_next(self, code: str = "generic_decline", *, times: int = 1) -> None:
        """The next ``times`` charges decline with ``code`` (hard/soft per the code)."""
        with self._lock:
            self._fail_next.extend([code] * times)

    def unknown_next(self, *, charged: bool = True, times: int = 1) -> None:
        """The next ``times`` charges return UNKNOWN; ``charged`` says if money moved."""
        with self._lock:
            self._unknown_next.extend([charged] * times)

    # -- money --------------------------------------------------------------------

    def total_collected(self, currency: str) -> int:
        """Gross minor units charged in ``currency`` (refunds not subtracted)."""
        return self._sum("charge", currency)

    def total_refunded(self, currency: str) -> int:
        return self._sum("refund", currency)

    def net_collected(self, currency: str) -> int:
        return self.total_collected(currency) - self.total_refunded(currency)

    def _sum(self, kind: str, currency: str) -> int:
        cur = currency.upper()
        with self._lock:
            return sum(e.amount_minor for e in self.ledger if e.kind == kind and e.currency == cur)

    # -- PaymentGateway -----------------------------------------------------------

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self._pause()
        _check_amount(request.amount_minor, request.currency)
        card = _resolve(request.payment_method_token)
        fingerprint = (
            request.amount_minor,
            request.currency.upper(),
            request.payment_method_token,
            request.gateway_customer_id,
            request.description,
            tuple(sorted(request.metadata.items())),
        )
        lost = outcomes.unknown(
            amount_minor=request.amount_minor,
            currency=request.currency,
            message="no answer from the payment processor; reconcile with find_charge",
        )
        def call() -> ChargeResult:
            self.calls.append(("charge", request.idempotency_key))
            forced = self._unknown_next.popleft() if self._unknown_next else None
            if forced is False:
                return lost
            for _ in range(self.max_tries):
                fault = self._draw_fault()
                if fault == "before":
                    continue
                result, answer_lost = self._process_charge(request, card, fingerprint)
                if result is None:
                    return lost  # scripted "unreachable"
                if fault == "after":
                    continue  # retry with the same key replays the saved result
                return lost if (forced or answer_lost) else result
            return lost

        answer: ChargeResult = self._grouped(call)
        return answer

    def find_charge(self, idempotency_key: str, *, metadata: dict[str, str] | None = None) -> ChargeResult | None:
        self._pause()

        def call() -> ChargeResult | None:
            self.calls.append(("find_charge", idempotency_key))
            saved = self._saved.get(idempotency_key)
            if saved is None or saved.operation != "charge":
                return None
            sent_metadata = dict(saved.fingerprint[5])
            if metadata and any(sent_metadata.get(k) != v for k, v in metadata.items()):
                return None
            result: ChargeResult = saved.result
            return result

        found: ChargeResult | None = self._grouped(call)
        return found

    def refund(self, request: RefundRequest) -> RefundResult:
        self._pause()
        _check_amount(request.amount_minor, request.currency, what="refund")
        fingerprint = (
            request.gateway_charge_id,
            request.amount_minor,
            request.currency.upper(),
            request.reason,
            tuple(sorted(request.metadata.items())),
        )
        with self._txn():
            self.calls.append(("refund", request.idempotency_key))
            replay = self._replay("refund", request.idempotency_key, fingerprint)
            if replay is not None:
                result: RefundResult = replay
                return result
            charge = self._collected.get(request.gateway_charge_id)
            if charge is None:
                raise GatewayError(f"no successful charge {request.gateway_charge_id!r} to refund")
            cur = request.currency.upper()
            if cur != charge.currency:
                raise GatewayError(f"refund currency {cur} does not match charge currency {charge.currency}")
            already = self._refunded[charge.id]
            remaining = charge.amount_minor - already
            if request.amount_minor > remaining:
                raise GatewayError(
                    f"refund of {request.amount_minor} {cur} exceeds the {remaining} {cur} "
                    f"still refundable on {charge.id} (charged {charge.amount_minor}, "
                    f"already refunded {already})"
                )
            refund_id = self._next_id("re")
            self._refunded[charge.id] += request.amount_minor
            self._record(
                LedgerEntry(
                    kind="refund",
                    id=refund_id,
                    amount_minor=request.amount_minor,
                    currency=cur,
                    idempotency_key=request.idempotency_key,
                    token=charge.token,
                    charge_id=charge.id,
                    metadata=dict(request.metadata),
                )
            )
            result = RefundResult(
                status=RefundStatus.SUCCEEDED,
                gateway_refund_id=refund_id,
                amount_minor=request.amount_minor,
            )
            self._saved[request.idempotency_key] = _Saved("refund", fingerprint, result)
            return result

    def card_details(self, payment_method_token: str) -> CardDetails:
        self._pause()
        card = _resolve(payment_method_token)
        with self._lock:
            self.calls.append(("card_details", payment_method_token))
        return _details(card)

    def setup_off_session(
        self, *, payment_method_token: str, gateway_customer_id: str | None, idempotency_key: str
    ) -> SetupResult:
        self._pause()
        card = _resolve(payment_method_token)
        fingerprint = (payment_method_token, gateway_customer_id)
        with self._txn():
            self.calls.append(("setup_off_session", idempotency_key))
            replay = self._replay("setup", idempotency_key, fingerprint)
            if replay is not None:
                saved: SetupResult = replay
                return saved
            setup_id = self._next_id("seti")
            if card.setup_requires_action:
                result = SetupResult(
                    status="requires_action",
                    gateway_setup_id=setup_id,
                    card=None,
                    message="the card issuer requires authentication (3-D Secure); "
                    "the customer must complete it on-session",
                )
            else:
                result = SetupResult(status="succeeded", gateway_setup_id=setup_id, card=_details(card))
            self._saved[idempotency_key] = _Saved("setup", fingerprint, result)
            return result

    # -- internals ----------------------------------------------------------------

    def _pause(self) -> None:
        if self.rate_limiter is not None:
            self.rate_limiter.acquire()
        self._sent.at = time.time()
        if self.latency > 0:
            self._sleep(self.latency)

    def _next_id(self, prefix: str) -> str:
        if self._store is not None:  # unique across processes (64 random bits)
            return f"{prefix}_fake_{_IDS.getrandbits(64):016x}"
        self._seq += 1
        return f"{prefix}_fake_{self._seq:06d}"

    def _draw_fault(self) -> str | None:
        if self.transient_error_rate <= 0 or self._rng.random() >= self.transient_error_rate:
            return None
        return "before" if self._rng.random() < 0.5 else "after"

    def _replay(self, operation: str, key: str, fingerprint: tuple[Any, ...]) -> Any:
        saved = self._saved.get(key)
        if saved is None:
            return None
        if saved.operation != operation or saved.fingerprint != fingerprint:
            raise IdempotencyConflict(f"idempotency key {key!r} was already used with different parameters")
        return saved.result

    def _process_charge(
        self, request: ChargeRequest, card: cards.TestCard, fingerprint: tuple[Any, ...]
    ) -> tuple[ChargeResult | None, bool]:
        """Run one charge that reached the processor: (result or None, answer lost)."""
        replay = self._replay("charge", request.idempotency_key, fingerprint)
        if replay is not None:
            return replay, False
        outcome = self._next_outcome(request.payment_method_token, card)
        if outcome == UNREACHABLE:
            return None, False
        answer_lost = outcome == UNKNOWN
        charge_id = self._next_id("pi")
        if outcome in (SUCCEED, UNKNOWN):
            result = outcomes.succeeded(
                charge_id=charge_id, amount_minor=request.amount_minor, currency=request.currency
            )
            entry = LedgerEntry(
                kind="charge",
                id=charge_id,
                amount_minor=request.amount_minor,
                currency=request.currency.upper(),
                idempotency_key=request.idempotency_key,
                token=request.payment_method_token,
                metadata=dict(request.metadata),
            )
            self._record(entry)
            self._collected[charge_id] = entry
        else:
            result = outcomes.declined(
                outcome,
                message=cards.decline_message(outcome),
                charge_id=charge_id,
                amount_minor=request.amount_minor,
                currency=request.currency,
            )
        self._saved[request.idempotency_key] = _Saved("charge", fingerprint, result)
        return result, answer_lost

    def _next_outcome(self, token: str, card: cards.TestCard) -> str:
        script = self._scripts.get(token)
        if self._fail_next:
            outcome = self._fail_next.popleft()
        elif script:
            outcome = script.popleft()
        else:
            outcome = _own_behaviour(token, card, self._attempts[token] if _counts_attempts(token) else 0)
        if outcome != UNREACHABLE and _counts_attempts(token):
            # only tokens whose answer depends on it keep a count (a durable count costs the
            # ledger file two statements per charge)
            self._attempts[token] += 1
        return outcome


@functools.lru_cache(maxsize=1024)
def _counts_attempts(token: str) -> bool:
    """Whether the token's own behaviour depends on how many charges reached it."""
    m = _DECLINE.match(token)
    return bool(_RECOVER.match(token) or (m and m.group(2) is not None))


def _own_behaviour(token: str, card: cards.TestCard, attempts_so_far: int) -> str:
    if m := _RECOVER.match(token):
        return "insufficient_funds" if attempts_so_far < int(m.group(1)) else SUCCEED
    if m := _DECLINE.match(token):
        code, after = m.group(1), m.group(2)
        if after is not None and attempts_so_far < int(after):
            return SUCCEED
        return code
    return card.decline_code or SUCCEED


def _resolve(token: str) -> cards.TestCard:
    card = cards.lookup(token)
    if card is not None:
        return card
    if token.startswith("pm_") and len(token) > 3:
        return cards.TestCard(token=token, brand="visa", last4="4242")
    raise GatewayError(f"no such payment method: {token!r}")


def _details(card: cards.TestCard) -> CardDetails:
    return CardDetails(
        token=card.token,
        brand=card.brand,
        last4=card.last4,
        exp_month=cards.TEST_EXP_MONTH,
        exp_year=cards.TEST_EXP_YEAR,
        fingerprint=card.fingerprint,
    )


def _check_amount(amount_minor: int, currency: str, *, what: str = "charge") -> None:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise GatewayError(f"{what} amount must be a positive integer of minor units")
    if len(currency) != 3 or not currency.isalpha():
        raise GatewayError(f"currency must be an ISO-4217 code, got {currency!r}")


__all__ = ["FakeGateway", "LedgerEntry", "SUCCEED", "UNKNOWN", "UNREACHABLE"]
