"""``created_gte`` / ``created_lt`` / ``updated_gte`` / ``updated_lt`` on the admin lists."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query
from pydantic import AfterValidator

from api.schemas import clean_optional
from billing_engine.listing import Ranges
from billing_engine.periods import parse_datetime

_When = Annotated[str | None, Query(max_length=40, description="ISO-8601 instant with an offset."),
                  AfterValidator(clean_optional)]


async def ranges(created_gte: _When = None, created_lt: _When = None, updated_gte: _When = None,
           updated_lt: _When = None) -> Ranges:
    def when(v: str | None, field: str) -> datetime | None:
        return None if v is None else parse_datetime(v, field)

    return Ranges(created_gte=when(created_gte, "created_gte"), created_lt=when(created_lt, "created_lt"),
                  updated_gte=when(updated_gte, "updated_gte"), updated_lt=when(updated_lt, "updated_lt")).check()


RangesDep = Annotated[Ranges, Depends(ranges)]
