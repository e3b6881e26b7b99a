"""MRR report: per period (and plan), MRR at the start and end of the period and the
movements between them -- new, reactivation, expansion, contraction, churn -- so that

    mrr_end = mrr_start + new + reactivation + expansion - contraction - churn

holds exactly for every row. Definitions: docs/reports.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from billing_engine.reports import rollups
from billing_engine.reports.model import Column, Report, group_columns, is_blank, period_columns
from billing_engine.reports.params import ReportQuery
from billing_engine.reports.sql import tune
from billing_engine.reports.subscribers import key_fields, sorted_groups, timelines

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
    periods = q.periods()
    rollups.refresh(engine)  # the rollups read below are brought up to date first
    with engine.connect() as conn:
        tune(conn)
        tls = timelines(conn, q)
    cols = columns(q.by)
    rows: list[dict[str, Any]] = []
    for key in sorted_groups(tls):
        tl = tls[key]
        group_rows = []
        for i, ((start, end), (s0, s1, m0, m1)) in enumerate(zip(periods, tl.balances(), strict=True)):
            moves = tl.periods[i]
            row: dict[str, Any] = {"period_start": start, "period_end": end, **key_fields(key, q.by)}
            row["subscribers_start"] = s0
            row["subscribers_end"] = s1
            row["mrr_start_minor"] = m0
            for m in MOVEMENTS:
                row[f"{m}_minor"] = moves.mrr[m]
            row["net_change_minor"] = m1 - m0
            row["mrr_end_minor"] = m1
            group_rows.append(row)
        if not is_blank(group_rows, cols):
            rows.extend(group_rows)
    return Report("mrr", "MRR", q, cols, rows, generated_at)
