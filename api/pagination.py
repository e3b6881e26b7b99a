"""Cursor pages: items ordered by id; ``after`` is the last id of the previous page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from api.schemas import Page

R = TypeVar("R")
T = TypeVar("T")


def page(rows: Sequence[Any], limit: int, present: Callable[[Any], T]) -> Page[T]:
    """``rows`` was fetched with ``limit + 1`` to learn whether more follow."""
    has_more = len(rows) > limit
    items = list(rows[:limit])
    data = [present(r) for r in items]
    return Page[Any](data=data, has_more=has_more, next_cursor=items[-1].id if has_more and items else None)
