"""Every report through the per-day rollups equals the same report over the raw tables
(``rollups.ready`` forced False), for every period kind, with and without the plan split,
with a currency filter, and for ranges the rollups cannot answer (which fall back)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from billing_engine.reports import REPORTS, build_query, rollups, run_report
from billing_engine.reports.params import calendar_start, day_aligned, period_aligned

SHAPES: tuple[tuple[str, Any, int, str | None], ...] = (
    # period, by, shift of the start in hours (0 = aligned), currency
    ("month", "plan", 0, None), ("month", None, 0, None), ("week", "plan", 0, None), ("quarter", None, 0, None),
    ("year", "plan", 0, None), ("day", "plan", 0, None), ("all", "plan", 0, None), ("month", "plan", 0, "EUR"),
    ("month", "plan", 24 * 9, None), ("month", None, 5, None),
)


def rollup_vs_raw(engine: Engine, start: datetime, end: datetime) -> list[str]:
    problems: list[str] = []
    names = [n for n in REPORTS if n != "segments"]
    for period, by, shift, currency in SHAPES:
        s = start + timedelta(hours=shift)
        e = min(end, s + timedelta(days=75)) if period == "day" else end
        if shift == 0 and period != "all":
            s = calendar_start(s, period)  # a whole first period: the rollups answer it
        q = build_query(start=s, end=e, period=period, by=by, currency=currency, now=end)
        assert day_aligned(q) == (shift % 24 == 0)
        assert period_aligned(q) == (shift == 0 and period != "all")
        fast = {n: run_report(engine, n, q).rows for n in names}
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(rollups, "ready", lambda conn: False)
            slow = {n: run_report(engine, n, q).rows for n in names}
        for n in names:
            if fast[n] != slow[n]:
                diff = [(a, b) for a, b in zip(fast[n], slow[n], strict=False) if a != b][:2]
                problems.append(f"{n} {period} by={by} +{shift}h {currency}: {len(fast[n])} vs {len(slow[n])} rows,"
                                f" first differences {diff}")
    return problems
