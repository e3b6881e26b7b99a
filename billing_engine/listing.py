"""Time-range filters shared by the admin lists (subscriptions, customers, invoices):
``created`` and ``updated`` ranges, each ``[gte, lt)``, on indexed columns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlmodel import col

from billing_engine.errors import ValidationError

Q = TypeVar("Q")


@dataclass(frozen=True, kw_only=True)
class Ranges:
    created_gte: datetime | None = None
    created_lt: datetime | None = None
    updated_gte: datetime | None = None
    updated_lt: datetime | None = None

    def check(self, *, names: tuple[str, str] = ("created_lt", "updated_lt")) -> Ranges:
        """Refuse an empty range (end not after start), naming the end field."""
        if self.created_gte and self.created_lt and self.created_lt <= self.created_gte:
            raise ValidationError("must be after the start of the range", field=names[0])
        if self.updated_gte and self.updated_lt and self.updated_lt <= self.updated_gte:
            raise ValidationError("must be after the start of the range", field=names[1])
        return self


def cursor(after: str | None, prefix: str) -> str | None:
    """``after``, the cursor of a list ordered by id (the previous page's ``next_cursor``),
    refused unless it is an id of the listed kind: a mistyped cursor would otherwise start
    the page somewhere arbitrary (``garbage`` sorts before every ``sub_`` id: the whole list
    again, and no error)."""
    if after and not after.startswith(prefix + "_"):
        raise ValidationError(f"not a cursor of this list: the next_cursor of the previous page, an id "
                              f"starting with {prefix}_", field="after")
    return after


def apply(q: Q, model: Any, r: Ranges | None) -> Q:
    """``q`` narrowed to ``model``'s rows created / updated within the ranges."""
    if r is None:
        return q
    out: Any = q
    r.check()
    if r.created_gte is not None:
        out = out.where(col(model.created_at) >= r.created_gte)
    if r.created_lt is not None:
        out = out.where(col(model.created_at) < r.created_lt)
    if r.updated_gte is not None:
        out = out.where(col(model.updated_at) >= r.updated_gte)
    if r.updated_lt is not None:
        out = out.where(col(model.updated_at) < r.updated_lt)
    return out  # type: ignore[no-any-return]
