"""Shared options of the admin lists: created / updated ranges, and the "more exist" line
(a list never stops silently at --limit)."""

from __future__ import annotations

from typing import Any

import typer

from billing_engine.listing import Ranges
from billing_engine.periods import parse_datetime

CreatedFrom = typer.Option(None, "--created-from", help="Created at or after (ISO-8601).")
CreatedTo = typer.Option(None, "--created-to", help="Created before (ISO-8601).")
UpdatedFrom = typer.Option(None, "--updated-from", help="Changed at or after (ISO-8601).")
UpdatedTo = typer.Option(None, "--updated-to", help="Changed before (ISO-8601).")


def ranges(created_from: str | None, created_to: str | None, updated_from: str | None,
           updated_to: str | None) -> Ranges:
    def when(v: str | None, field: str) -> Any:
        return None if v is None else parse_datetime(v, field)

    return Ranges(created_gte=when(created_from, "--created-from"), created_lt=when(created_to, "--created-to"),
                  updated_gte=when(updated_from, "--updated-from"),
                  updated_lt=when(updated_to, "--updated-to")).check(names=("--created-to", "--updated-to"))


