"""Cursor pages for every CLI list: fetch one row more than asked, show ``limit`` rows and
say on stderr (so ``--json`` output stays a plain list) how to get the next page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from cli.common import err_console

T = TypeVar("T")


def one_page(rows: Sequence[T], limit: int, *, cursor_of: str = "id", option: str = "--after") -> list[T]:
    """``rows`` was fetched with ``limit + 1``: keep ``limit`` and, when more exist, print
    ``more results: run again with --after <last id>`` on stderr."""
    page = list(rows[:limit])
    if len(rows) > limit and page:
        last = getattr(page[-1], cursor_of, None)
        if last is None and isinstance(page[-1], dict):
            last = page[-1].get(cursor_of)
        err_console.print(f"more results: run again with {option} {last}", highlight=False, soft_wrap=True)
    return page
