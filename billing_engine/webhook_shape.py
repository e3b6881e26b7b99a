"""The shape a verified Stripe event must have before its effect is applied.

A valid signature proves who sent a body, not that it is a well-formed event: a JSON
array, a bare string, 5,000 levels of nesting or ``"amount": "abc"`` must be refused
(HTTP 400, nothing stored) instead of failing half-way through a handler. The checks
are what the handlers in :mod:`billing_engine.webhooks_stripe` rely on: the event's
``id`` / ``type`` / ``data.object``, and the type of every field they read, at any depth.
"""

from __future__ import annotations

from typing import Any

from billing_engine.errors import ValidationError

MAX_DEPTH = 32  # Stripe's objects nest a handful of levels
MAX_INT = 10**15  # amounts in minor units, Unix timestamps, card expiry
INT_FIELDS = frozenset({"amount", "amount_refunded", "amount_received", "amount_capturable", "amount_captured",
                        "created", "exp_month", "exp_year"})
STR_FIELDS = frozenset({"id", "object", "status", "currency", "reason", "brand", "last4", "fingerprint",
                        "failure_reason", "decline_code", "code", "type"})
DICT_FIELDS = frozenset({"card", "refunds", "last_payment_error"})
ID_OR_OBJECT_FIELDS = frozenset({"payment_intent", "charge", "payment_method", "customer"})


def _bad(path: str, problem: str) -> ValidationError:
    return ValidationError(f"not a Stripe event: {path} {problem}", field="body")


def _check_field(path: str, key: str, value: Any) -> None:
    if value is None:
        return
    if key in INT_FIELDS and (isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_INT):
        raise _bad(path, f"must be an integer, got {str(value)[:40]!r}")
    if key in STR_FIELDS and not (isinstance(value, str) and len(value) <= 5000):
        raise _bad(path, "must be a string")
    if key in DICT_FIELDS and not isinstance(value, dict):
        raise _bad(path, "must be an object")
    if key in ID_OR_OBJECT_FIELDS and not isinstance(value, str | dict):
        raise _bad(path, "must be an id or an object")
    if key == "metadata" and not (isinstance(value, dict)
                                  and all(isinstance(v, str) for v in value.values())):
        raise _bad(path, "must be an object of strings")


def validate_event(event: Any) -> None:
    """Raise :class:`ValidationError` (field ``body``) unless ``event`` has the shape above."""
    if not isinstance(event, dict):
        raise _bad("the body", "must be a JSON object")
    for key in ("id", "type"):
        if not isinstance(event.get(key), str) or not 0 < len(event[key]) <= 255:
            raise _bad(key, "must be a non-empty string")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise _bad("data.object", "must be an object")
    todo: list[tuple[str, Any, int]] = [("data.object", data["object"], 1)]
    while todo:  # iterative: no recursion limit to hit
        path, node, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise _bad(path, f"is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            for key, value in node.items():
                child = f"{path}.{key}"
                _check_field(child, str(key), value)
                if isinstance(value, dict | list):
                    todo.append((child, value, depth + 1))
        elif isinstance(node, list):
            todo.extend((f"{path}[{i}]", v, depth + 1) for i, v in enumerate(node) if isinstance(v, dict | list))
