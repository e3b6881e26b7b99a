"""Merchant ``metadata``: string key-value pairs on customers, plans and subscriptions.

Limits (as Stripe's): at most 50 keys, keys of 1-40 characters, values of at most 500
characters, both strings. Stored as a JSON object; setting a key to ``""`` (or ``None``)
in an update removes it. Errors name the offending key: ``metadata.<key>``.
"""

from __future__ import annotations

import json
from typing import Any

from billing_engine.errors import ValidationError

MAX_KEYS = 50
MAX_KEY_LENGTH = 40
MAX_VALUE_LENGTH = 500


def validate(data: Any, *, field: str = "metadata", allow_delete: bool = False) -> dict[str, str]:
    """Check ``data`` against the limits; returns it (values None allowed only to delete)."""
    if not isinstance(data, dict):
        raise ValidationError("must be an object of string keys and string values", field=field)
    if len(data) > MAX_KEYS:
        raise ValidationError(f"at most {MAX_KEYS} keys (got {len(data)})", field=field)
    out: dict[str, Any] = {}
    for k, v in data.items():
        if not isinstance(k, str) or not k.strip():
            raise ValidationError("keys must be non-empty strings", field=field)
        if len(k) > MAX_KEY_LENGTH:
            raise ValidationError(f"key is longer than {MAX_KEY_LENGTH} characters", field=f"{field}.{k[:MAX_KEY_LENGTH]}")
        if "\x00" in k:
            raise ValidationError("keys must not contain NUL characters", field=field)
        if v is None and allow_delete:
            out[k] = None
            continue
        if not isinstance(v, str):
            raise ValidationError("values must be strings", field=f"{field}.{k}")
        if len(v) > MAX_VALUE_LENGTH:
            raise ValidationError(f"value is longer than {MAX_VALUE_LENGTH} characters", field=f"{field}.{k}")
        if "\x00" in v:
            raise ValidationError("values must not contain NUL characters", field=f"{field}.{k}")
        out[k] = v
    return out


def load(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    data = json.loads(raw)
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def dump(data: dict[str, str]) -> str | None:
    return json.dumps(data, sort_keys=True) if data else None


def merge(raw: str | None, update: Any, *, field: str = "metadata") -> tuple[str | None, dict[str, str]]:
    """Apply an update (``""`` / None deletes a key) to stored metadata; checks the result's limits."""
    changes = validate(update, field=field, allow_delete=True)
    current = load(raw)
    for k, v in changes.items():
        if v in (None, ""):
            current.pop(k, None)
        else:
            current[k] = v
    validate(current, field=field)
    return dump(current), current
