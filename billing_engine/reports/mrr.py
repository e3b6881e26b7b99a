"""MRR report: per period (and plan), MRR at the start and end of the period and the
movements between them -- new, reactivation, expansion, contraction, churn -- so that

    mrr_end = mrr_start + new + reactivation + expansion - contraction - churn

holds exactly for every row. Definitions: docs/reports.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from billing_engine.reports.model import Column, Report, group_columns, period_columns
from billing_engine.reports.params import ReportQuery
from billing_engine.reports.subscribers import Timeline, timeline_report

MOVEMENTS = ("new", "reactivation", "expansion", "contraction", "churn")


def columns(by: str | None) -> tuple[Column, ...]:
    return period_columns() + group_columns(by) + (
        Column("subscribers_start", "subscribers_start", "count"),
        Column("subscribers_end", "subscribers_end", "count"),
        Column("mrr_start_minor", "mrr_start", "money"),
        *(Column(f"{m}_minor", m, "money") for m in MOVEMENTS),
        Column("net_change_minor", "net_change", "money"),
        Column("mrr_end_minor", "mrr_end", "money"),
    )


def mrr_report(engine: Engine, q: ReportQuery, *, generated_at: datetime | None = None) -> Report:
    def row_of(tl: Timeline, i: int, balance: tuple[int, int, int, int]) -> dict[str, Any]:
        s0, s1, m0, m1 = balance
        moves = tl.periods[i]
        return {"subscribers_start": s0, "subscribers_end": s1, "mrr_start_minor": m0,
                **{f"{m}_minor": moves.mrr[m] for m in MOVEMENTS},
                "net_change_minor": m1 - m0, "mrr_end_minor": m1}
    return timeline_report(engine, q, "mrr", "MRR", columns(q.by), row_of, generated_at)
