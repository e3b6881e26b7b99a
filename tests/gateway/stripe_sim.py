"""A scripted Stripe for the adapter tests: a ``stripe.HTTPClient`` that never touches
the network.

By default it behaves like Stripe test mode for the handful of endpoints the adapter
uses (PaymentIntents create/search/retrieve, Refunds, PaymentMethods, SetupIntents),
answering with Stripe's real JSON shapes (templates in ``stripe_fixtures/``): test
payment methods decline as documented (:mod:`billing_engine.gateway.cards`),
idempotency keys replay the saved answer or conflict, refunds cannot exceed what was
collected. ``script(...)`` queues faults for the next requests, in order:

* ``Fault.RATE_LIMIT`` -> 429 rate_limit body, request not processed;
* ``Fault.SERVER_ERROR`` -> 500 api_error body, not processed;
* ``Fault.CONNECTION_RESET`` -> the SDK's ``APIConnectionError``, never arrived;
* ``Fault.TIMEOUT_AFTER_COMMIT`` -> processed (money moved), then a timeout;
* ``Reply(status, body)`` -> exactly that answer;
* ``Fault.PASS`` -> processed normally (a placeholder, to aim later faults at later requests).

Every request is recorded (method, path, decoded params, Idempotency-Key header).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

from billing_engine.gateway import cards

FIXTURES = Path(__file__).parent / "stripe_fixtures"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


class Fault(StrEnum):
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    CONNECTION_RESET = "connection_reset"
    TIMEOUT_AFTER_COMMIT = "timeout_after_commit"
    PASS = "pass"  # no fault: answered normally


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    url: str


@dataclass
class _Saved:
    path: str
    body: str
    status: int
    answer: dict[str, Any]


class StripeSim(stripe.HTTPClient):
    name = "stripe-sim"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.setup_intents: dict[str, dict[str, Any]] = {}
        self.checkout_sessions: dict[str, dict[str, Any]] = {}
        self.search_lags = False  # True: the search index has not seen new objects yet
        self._script: deque[Fault | Reply] = deque()
        self._decline_next: deque[str] = deque()
        self._saved: dict[str, _Saved] = {}
        self._seq = 0
        self._lock = threading.RLock()

    # -- scripting ------------------------------------------------------------------

    def script(self, *steps: Fault | Reply) -> None:
        self._script.extend(steps)

    def decline_next(self, code: str) -> None:
        """The next PaymentIntent declines with ``code`` whatever its card."""
        self._decline_next.append(code)

    def posts(self, path: str = "/v1/payment_intents") -> list[Recorded]:
        return [r for r in self.requests if r.method == "post" and r.path == path]

    def succeeded_intents(self) -> list[dict[str, Any]]:
        return [pi for pi in self.payment_intents.values() if pi["status"] == "succeeded"]

    # -- stripe.HTTPClient ------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        with self._lock:
            parts = urlsplit(url)
            raw = post_data if method == "post" else parts.query
            raw = raw.decode() if isinstance(raw, bytes) else (raw or "")
            key = (headers or {}).get("Idempotency-Key")
            self.requests.append(Recorded(method, parts.path, decode_form(raw), key, url))
            step = self._script.popleft() if self._script else None
            if step is Fault.CONNECTION_RESET:
                raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                    "Unexpected error communicating with Stripe. (Network error: "
                    "ConnectionResetError: [Errno 104] Connection reset by peer)",
                    should_retry=True,
                )
            if step is Fault.RATE_LIMIT:
                return self._answer(429, fixture("error_rate_limit"))
            if step is Fault.SERVER_ERROR:
                return self._answer(500, fixture("error_api_error"))
            if isinstance(step, Reply):
                return self._answer(step.status, step.body)
            status, answer = self._idempotent(method, parts.path, raw, key)
            if step is Fault.TIMEOUT_AFTER_COMMIT:
                raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                    "Unexpected error communicating with Stripe. (Network error: "
                    "ReadTimeout: Read timed out. (read timeout=30))",
                    should_retry=True,
                )
            return self._answer(status, answer)

    def request_stream(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- Stripe, simulated --------------------------------------------------------------

    def _answer(self, status: int, body: dict[str, Any]) -> tuple[str, int, dict[str, str]]:
        self._seq += 1
        headers = {"Request-Id": f"req_sim{self._seq:06d}", "Content-Type": "application/json"}
        return json.dumps(body), status, headers

    def _idempotent(self, method: str, path: str, raw: str, key: str | None) -> tuple[int, dict[str, Any]]:
        if method != "post" or not key:
            return self._route(method, path, decode_form(raw))
        saved = self._saved.get(key)
        if saved is not None:
            if (saved.path, saved.body) == (path, raw):
                return saved.status, copy.deepcopy(saved.answer)
            error = fixture("error_idempotency")
            error["error"]["message"] = error["error"]["message"].replace("KEY", key)
            return 400, error
        status, answer = self._route(method, path, decode_form(raw))
        if status < 400 or status == 402:  # validation failures are not saved
            self._saved[key] = _Saved(path, raw, status, copy.deepcopy(answer))
        return status, answer

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if (method, path) == ("post", "/v1/payment_intents"):
            return self._create_intent(params)
        if (method, path) == ("get", "/v1/payment_intents/search"):
            return self._search(str(params.get("query", "")))
        if method == "get" and (m := re.fullmatch(r"/v1/payment_intents/([^/]+)", path)):
            found = self.payment_intents.get(m.group(1))
            return (200, found) if found else _missing("payment_intent", m.group(1))
        if (method, path) == ("post", "/v1/refunds"):
            return self._create_refund(params)
        if method == "get" and (m := re.fullmatch(r"/v1/payment_methods/([^/]+)", path)):
            card = cards.lookup(m.group(1))
            return (200, _payment_method(card)) if card else _missing("payment_method", m.group(1))
        if (method, path) == ("post", "/v1/setup_intents"):
            return self._create_setup(params)
        if method == "get" and (m := re.fullmatch(r"/v1/setup_intents/([^/]+)", path)):
            return self._retrieve_setup(m.group(1), params)
        if (method, path) == ("post", "/v1/checkout/sessions"):
            return self._create_checkout(params)
        return 404, {
            "error": {
                "message": f"Unrecognized request URL ({method.upper()}: {path}).",
                "type": "invalid_request_error",
            }
        }

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}_3Sim{self._seq:020d}"

    def _create_intent(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        token = str(params.get("payment_method"))
        card = cards.lookup(token)
        if card is None:
            return _missing("payment_method", token)
        amount = int(params.get("amount", 0))
        if amount < 1:
            return 400, _invalid("This value must be greater than or equal to 1.", "amount")
        code = self._decline_next.popleft() if self._decline_next else card.decline_code
        intent_id, charge_id = self._next_id("pi"), self._next_id("ch")
        pi = fixture("payment_intent")
        pi.update(
            id=intent_id,
            amount=amount,
            amount_received=0 if code else amount,
            automatic_payment_methods=_automatic(params),
            canceled_at=None,
            client_secret=f"{intent_id}_secret_sim",
            confirmation_method="automatic",
            created=1_700_000_000 + self._seq,
            currency=params.get("currency"),
            customer=params.get("customer"),
            description=params.get("description"),
            last_payment_error=None,
            latest_charge=charge_id,
            metadata=params.get("metadata", {}),
            next_action=None,
            payment_method=token,
            payment_method_configuration_details=None,
            payment_method_types=["card"],
            processing=None,
            status="requires_payment_method" if code else "succeeded",
            transfer_data=None,
        )
        self.payment_intents[intent_id] = pi
        if not code:
            return 200, copy.deepcopy(pi)
        error = fixture("error_card_declined")["error"]
        error.update(
            charge=charge_id,
            code=cards.TestCard(token=token, brand="visa", last4="0000", decline_code=code).error_code,
            decline_code=code,
            doc_url=f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
            message=cards.decline_message(code),
            payment_method=_payment_method(card),
        )
        pi["last_payment_error"] = {k: v for k, v in error.items() if k != "request_log_url"}
        error["payment_intent"] = copy.deepcopy(pi)
        return 402, {"error": error}

    def _search(self, query: str) -> tuple[int, dict[str, Any]]:
        clauses = [
            (_unq(k), _unq(v)) for k, v in re.findall(r"metadata\['((?:[^'\\]|\\.)*)'\]:'((?:[^'\\]|\\.)*)'", query)
        ]
        if not clauses:
            return 400, _invalid(f"Invalid search query: {query}", "query")
        result = fixture("search_result")
        if not self.search_lags:
            result["data"] = [
                copy.deepcopy(pi)
                for pi in self.payment_intents.values()
                if all(pi["metadata"].get(k) == v for k, v in clauses)
            ]
        return 200, result

    def _create_refund(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        intent_id = str(params.get("payment_intent"))
        pi = self.payment_intents.get(intent_id)
        if pi is None:
            return _missing("payment_intent", intent_id)
        if pi["status"] != "succeeded":
            msg = f"This PaymentIntent ({intent_id}) does not have a successful charge to refund."
            return 400, _invalid(msg, "payment_intent")
        refunded = sum(r["amount"] for r in self.refunds.values() if r["payment_intent"] == intent_id)
        remaining = pi["amount_received"] - refunded
        amount = int(params.get("amount", remaining))
        if amount < 1:
            return 400, _invalid("This value must be greater than or equal to 1.", "amount")
        if amount > remaining:
            return 400, _invalid(
                f"Refund amount (${amount / 100:.2f}) is greater than unrefunded amount on "
                f"charge (${remaining / 100:.2f})",
                "amount",
            )
        refund = fixture("refund")
        refund.update(
            id=self._next_id("re"),
            amount=amount,
            charge=pi["latest_charge"],
            currency=pi["currency"],
            metadata=params.get("metadata", {}),
            payment_intent=intent_id,
            payment_method=pi["payment_method"],
            reason=params.get("reason"),
            status="succeeded",
        )
        self.refunds[refund["id"]] = refund
        return 200, copy.deepcopy(refund)

    def _create_setup(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        token = str(params.get("payment_method"))
        card = cards.lookup(token)
        if card is None:
            return _missing("payment_method", token)
        si = fixture("setup_intent")
        setup_id = self._next_id("seti")
        needs_action = card.setup_requires_action
        expanded = "payment_method" in (params.get("expand") or [])
        si.update(
            id=setup_id,
            automatic_payment_methods=_automatic(params),
            client_secret=f"{setup_id}_secret_sim",
            customer=params.get("customer"),
            last_setup_error=None,
            metadata=params.get("metadata", {}),
            next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {}} if needs_action else None,
            payment_method=_payment_method(card) if expanded else token,
            payment_method_configuration_details=None,
            payment_method_types=["card"],
            status="requires_action" if needs_action else "succeeded",
            usage=params.get("usage", "off_session"),
        )
        return 200, si


    # -- Checkout in setup mode (the customer types the card on Stripe's page) ---------

    def _create_checkout(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if params.get("mode") != "setup":
            return 400, _invalid("this simulator only knows mode=setup", "mode")
        for required in ("success_url", "currency"):
            if not params.get(required):
                return 400, _invalid(f"Missing required param: {required}.", required)
        cs = fixture("checkout_session")
        cs_id = self._next_id("cs_test")
        si = fixture("setup_intent")
        si_id = self._next_id("seti")
        metadata = (params.get("setup_intent_data") or {}).get("metadata", {})
        si.update(id=si_id, status="requires_payment_method", payment_method=None, metadata=metadata,
                  customer=params.get("customer"), usage="off_session", last_setup_error=None, next_action=None,
                  client_secret=f"{si_id}_secret_sim", payment_method_types=["card"],
                  automatic_payment_methods=None, payment_method_configuration_details=None)
        self.setup_intents[si_id] = si
        cs.update(id=cs_id, object="checkout.session", mode="setup", status="open", payment_status="no_payment_required",
                  url=f"https://checkout.stripe.com/c/pay/{cs_id}", success_url=params["success_url"],
                  cancel_url=params.get("cancel_url"), currency=params["currency"], customer=params.get("customer"),
                  client_reference_id=params.get("client_reference_id"), metadata=params.get("metadata", {}),
                  setup_intent=si_id, payment_intent=None, subscription=None, invoice=None,
                  amount_subtotal=None, amount_total=None)
        self.checkout_sessions[cs_id] = cs
        return 200, copy.deepcopy(cs)

    def _retrieve_setup(self, setup_id: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        si = self.setup_intents.get(setup_id)
        if si is None:
            return 404, _invalid(f"No such setupintent: '{setup_id}'", "intent")
        out = copy.deepcopy(si)
        if "payment_method" in (params.get("expand") or []) and isinstance(out.get("payment_method"), str):
            card = cards.lookup(out["payment_method"])
            if card is not None:
                out["payment_method"] = _payment_method(card)
        return 200, out

    def complete_checkout(self, session_id: str, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The customer enters a card on Stripe's hosted page: the session completes and its
        SetupIntent succeeds with ``token``. Returns the two event objects Stripe would send
        (``checkout.session.completed``'s session, ``setup_intent.succeeded``'s intent)."""
        with self._lock:
            cs = self.checkout_sessions[session_id]
            si = self.setup_intents[cs["setup_intent"]]
            si.update(status="succeeded", payment_method=token)
            cs.update(status="complete")
            return copy.deepcopy(cs), copy.deepcopy(si)


def _automatic(params: dict[str, Any]) -> dict[str, Any] | None:
    sent = params.get("automatic_payment_methods")
    if not sent:
        return None
    return {"allow_redirects": sent.get("allow_redirects", "always"), "enabled": sent.get("enabled") == "true"}


def _payment_method(card: cards.TestCard) -> dict[str, Any]:
    pm = fixture("payment_method")
    pm.update(id=card.token, metadata={}, customer=None)
    pm["card"].update(
        brand=card.brand,
        display_brand=card.brand,
        exp_month=cards.TEST_EXP_MONTH,
        exp_year=cards.TEST_EXP_YEAR,
        fingerprint=card.fingerprint,
        funding=card.funding,
        last4=card.last4,
    )
    pm["card"]["networks"]["available"] = [card.brand]
    return pm


def _missing(kind: str, object_id: str) -> tuple[int, dict[str, Any]]:
    error = fixture("error_resource_missing")
    label = {"payment_method": "PaymentMethod", "payment_intent": "payment_intent"}[kind]
    error["error"]["message"] = f"No such {label}: '{object_id}'"
    error["error"]["param"] = kind
    return 404, error


def _invalid(message: str, param: str) -> dict[str, Any]:
    error = fixture("error_invalid_request")
    error["error"].update(message=message, param=param)
    return error


def _unq(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def decode_form(raw: str) -> dict[str, Any]:
    """``a[b][0]=x&c=1`` (Stripe's form encoding) -> ``{"a": {"b": ["x"]}, "c": "1"}``."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        names = [key.split("[", 1)[0], *re.findall(r"\[([^\]]*)\]", key)]
        node = root
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = value
    decoded: dict[str, Any] = _listify(root)
    return decoded


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items
