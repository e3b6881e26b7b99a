"""Declared error responses (problem+json) for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from api.schemas import Problem

_DESCRIPTIONS = {
    401: "Missing or invalid admin token.",
    402: ("Payment declined: the card refused the charge. `code` is payment_declined (or payment_requires_action: "
          "the customer must authenticate, 3-D Secure), `detail` names the decline code and the subscription, and "
          "`subscription` is the subscription as it now stands (kept incomplete only with allow_incomplete)."),
    404: "Unknown id.",
    409: "Conflicts with the current state.",
    422: "Invalid input; `field` names the offending field.",
    429: "Too many wrong admin tokens from this address; retry after `Retry-After` seconds.",
    503: "Admin API disabled (no BILLING_ADMIN_TOKENS), database or gateway unavailable.",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for these status codes, each a problem+json body."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {
            "model": Problem,
            "description": _DESCRIPTIONS.get(code, "Error."),
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out


def admin(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Every admin endpoint can answer 401, 422, 429 (auth throttle) and 503."""
    return problems(*sorted({401, 422, 429, 503, *codes}))
