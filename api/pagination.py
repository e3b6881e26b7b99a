"""Cursor pages: items ordered by id; ``after`` is the last id of the previous page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from api.schemas import Page

R = TypeVar("R")
T = TypeVar("T")


def _id(row: Any) -> str:
    return str(row.id)


def page(rows: Sequence[Any], limit: int, present: Callable[[Any], T], *,
         cursor: Callable[[Any], str] = _id, model: type[Page[Any]] = Page[Any]) -> Page[T]:
    """``rows`` was fetched with ``limit + 1`` to learn whether more follow; ``cursor`` gives
    a row's id (default: its ``id`` attribute); ``model``: the page class to build."""
    has_more = len(rows) > limit
    items = list(rows[:limit])
    data = [present(r) for r in items]
    return model(data=data, has_more=has_more, next_cursor=cursor(items[-1]) if has_more and items else None)
