"""The shape every report returns: typed columns and one dict per row.

Column kinds drive every export: ``count`` (int), ``money`` (int minor units; the row's
``currency`` says which), ``rate`` (``Decimal`` with 4 places, or ``None`` when the
denominator is zero), ``decimal`` (``Decimal`` with 2 places, e.g. days; or ``None``), ``time`` (aware
UTC datetime), ``text``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from billing_engine.reports.params import ReportQuery

Kind = Literal["time", "text", "count", "money", "rate", "decimal"]
RATE_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class Column:
    key: str  # row dict key; money keys end in "_minor"
    label: str  # CSV / XLSX / table header
    kind: Kind


@dataclass(frozen=True)
class Report:
    name: str  # churn | revenue | mrr | segments
    title: str
    query: ReportQuery
    columns: tuple[Column, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)
    generated_at: datetime | None = None

    def column(self, key: str) -> Column:
        for c in self.columns:
            if c.key == key:
                return c
        raise KeyError(key)


def rate(numerator: int, denominator: int) -> Decimal | None:
    """``numerator / denominator`` rounded half-even to 4 places (None when nothing to divide by)."""
    if denominator == 0:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(RATE_PLACES, rounding=ROUND_HALF_EVEN)


def period_columns() -> tuple[Column, ...]:
    return (Column("period_start", "period_start", "time"), Column("period_end", "period_end", "time"))


def group_columns(by: str | None) -> tuple[Column, ...]:
    cols: tuple[Column, ...] = (Column("currency", "currency", "text"),)
    if by == "plan":
        cols += (Column("plan_code", "plan", "text"),)
    return cols


def is_blank(rows: list[dict[str, Any]], columns: tuple[Column, ...]) -> bool:
    """True when every count and amount in ``rows`` is zero (a group with nothing to show)."""
    keys = [c.key for c in columns if c.kind in ("count", "money")]
    return all(not row.get(k) for row in rows for k in keys)
