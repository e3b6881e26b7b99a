"""Revenue retention: gross and net revenue retention (GRR / NRR) per period (and plan).

Of the subscribers active at the period start (their MRR is ``mrr_start``), what is left at the
end of the period: ``GRR = (mrr_start - churn - contraction) / mrr_start`` (never above 100%)
and ``NRR = (mrr_start - churn - contraction + expansion) / mrr_start``. Only the movements of
those starting subscribers count -- subscriptions activated during the period are not in
either figure. Definitions: docs/reports.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from billing_engine.reports.model import Column, Report, group_columns, period_columns, rate
from billing_engine.reports.params import ReportQuery
from billing_engine.reports.subscribers import Timeline, timeline_report


def columns(by: str | None) -> tuple[Column, ...]:
    return period_columns() + group_columns(by) + (
        Column("subscribers_start", "subscribers_start", "count"),
        Column("mrr_start_minor", "mrr_start", "money"),
        Column("churn_minor", "churn", "money"),
        Column("contraction_minor", "contraction", "money"),
        Column("expansion_minor", "expansion", "money"),
        Column("mrr_retained_minor", "mrr_retained", "money"),
        Column("grr", "grr", "rate"),
        Column("nrr", "nrr", "rate"),
    )


def retention_report(engine: Engine, q: ReportQuery, *, generated_at: datetime | None = None) -> Report:
    def row_of(tl: Timeline, i: int, balance: tuple[int, int, int, int]) -> dict[str, Any]:
        s0, _s1, m0, _m1 = balance
        ex = tl.periods[i].existing_mrr
        churn, contraction, expansion = ex["churn"], ex["contraction"], ex["expansion"]
        return {"subscribers_start": s0, "mrr_start_minor": m0, "churn_minor": churn,
                "contraction_minor": contraction, "expansion_minor": expansion,
                "mrr_retained_minor": m0 - churn - contraction + expansion,
                "grr": rate(m0 - churn - contraction, m0), "nrr": rate(m0 - churn - contraction + expansion, m0)}
    return timeline_report(engine, q, "retention", "Revenue retention", columns(q.by), row_of, generated_at)
