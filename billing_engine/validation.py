"""Small input validators shared by services (they raise ValidationError naming the field)."""

from __future__ import annotations

import re

from billing_engine.errors import ValidationError

_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[A-Za-z]{2,63}$")
_CODE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_PAN_RUN = re.compile(r"(?:\d[ -]?){12,19}")


def email(value: str, field: str = "email") -> str:
    v = (value or "").strip()
    if len(v) > 320 or not _EMAIL.match(v):
        raise ValidationError(f"not a valid e-mail address: {value!r}", field=field)
    return v


def text(value: str | None, field: str, *, max_length: int, required: bool = False) -> str:
    v = (value or "").strip()
    if required and not v:
        raise ValidationError("must not be empty", field=field)
    if len(v) > max_length:
        raise ValidationError(f"must be at most {max_length} characters", field=field)
    if any(ord(c) < 32 and c not in "\t\n" for c in v) or "\x00" in v:
        raise ValidationError("must not contain control characters", field=field)
    return v


def code(value: str, field: str = "code") -> str:
    v = (value or "").strip()
    if not _CODE.match(v):
        raise ValidationError(
            "must be 1-64 characters of lower-case letters, digits, '_', '.', '-'", field=field
        )
    return v


def int_range(value: int, field: str, *, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("must be an integer", field=field)
    if not lo <= value <= hi:
        raise ValidationError(f"must be between {lo} and {hi}", field=field)
    return value


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def looks_like_pan(value: str) -> bool:
    """True if the text contains something shaped like a card number (12-19 digits, Luhn)."""
    for m in _PAN_RUN.finditer(value or ""):
        digits = re.sub(r"\D", "", m.group())
        for n in range(len(digits), 11, -1):
            for start in range(0, len(digits) - n + 1):
                if luhn_ok(digits[start : start + n]) and n >= 13:
                    return True
    return False
