"""Finance reports: churn, revenue, MRR, customer segments -- computed in SQL aggregates,
exported as JSON / CSV / XLSX / tables, charted as inline SVG. Definitions: docs/reports.md.

Public API::

    q = build_query(start="2026-01-01", end="2026-12-31", by="plan", now=now)
    report = run_report(engine, "churn", q)          # or churn_report(engine, q) ...
    to_csv(report); to_json(report); to_xlsx(report)
    reconcile(engine, start, end)                    # [] when every figure matches the raw rows
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from billing_engine.errors import ValidationError
from billing_engine.reports.churn import churn_report
from billing_engine.reports.cohorts import cohorts_report
from billing_engine.reports.export import FORMATS, MEDIA_TYPES, to_csv, to_dict, to_json, to_rich_tables, to_xlsx
from billing_engine.reports.model import Column, Report
from billing_engine.reports.mrr import mrr_report
from billing_engine.reports.params import ReportQuery, build_query
from billing_engine.reports.reconcile import reconcile
from billing_engine.reports.recovery import funnel_report, recovery_report
from billing_engine.reports.retention import retention_report
from billing_engine.reports.revenue import revenue_report
from billing_engine.reports.segments import Thresholds, segments_report

REPORTS = ("churn", "revenue", "mrr", "segments", "cohorts", "retention", "recovery", "funnel")
_PERIOD_REPORTS: dict[str, Any] = {"cohorts": cohorts_report, "retention": retention_report,
                                   "recovery": recovery_report, "funnel": funnel_report}


def run_report(engine: Engine, name: str, query: ReportQuery, *,
               thresholds: Thresholds = (10_000, 100_000), generated_at: datetime | None = None) -> Report:
    """Run one report by name (see ``REPORTS``)."""
    if name == "churn":
        return churn_report(engine, query, generated_at=generated_at)
    if name == "revenue":
        return revenue_report(engine, query, generated_at=generated_at)
    if name == "mrr":
        return mrr_report(engine, query, generated_at=generated_at)
    if name == "segments":
        return segments_report(engine, query, thresholds=thresholds, generated_at=generated_at)
    if name in _PERIOD_REPORTS:
        report: Report = _PERIOD_REPORTS[name](engine, query, generated_at=generated_at)
        return report
    raise ValidationError(f"unknown report {name!r} (expected one of {', '.join(REPORTS)})", field="report")


__all__ = [
    "FORMATS", "MEDIA_TYPES", "REPORTS", "Column", "Report", "ReportQuery", "Thresholds", "build_query",
    "churn_report", "cohorts_report", "funnel_report", "mrr_report", "recovery_report", "retention_report", "reconcile", "revenue_report", "run_report", "segments_report",
    "to_csv", "to_dict", "to_json", "to_rich_tables", "to_xlsx",
]
