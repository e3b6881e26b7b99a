"""Finance reports as JSON or CSV / XLSX downloads: ``GET /v1/reports/{name}``.

The same functions and exports as ``billing report``; see docs/reports.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response

from api.auth import READ
from api.deps import EngineDep, NowDep, SettingsDep
from api.responses import admin
from api.threads import long_running
from billing_engine.errors import ValidationError
from billing_engine.reports import MEDIA_TYPES, REPORTS, build_query, run_report, to_csv, to_dict, to_xlsx

router = APIRouter(tags=["reports"], dependencies=READ)  # finance (read-only) tokens too

EXPORT_FORMATS = ("json", "csv", "xlsx")


FromQ = Annotated[str | None, Query(max_length=40, alias="from", description=(
    "First day (inclusive), ISO-8601, e.g. 2026-01-01. Default: 12 months before `to`."))]
ToQ = Annotated[str | None, Query(max_length=40, description=(
    "End: a bare date is included (2026-12-31); a date-time is exclusive. Default: end of this month."))]
PeriodQ = Annotated[str | None, Query(max_length=10, description="day | week | month | quarter | year | all")]
ByQ = Annotated[str | None, Query(max_length=10, description="Split by: plan")]
CurrencyQ = Annotated[str | None, Query(max_length=10, description="Only this ISO-4217 currency, e.g. USD")]
FormatQ = Annotated[str | None, Query(max_length=10, description="json | csv | xlsx (default json)")]


def download_name(name: str, start: str, end: str, fmt: str) -> str:
    return f"{name}_{start[:10]}_{end[:10]}.{fmt}"


def export_response(report: Any, fmt: str) -> Response:
    if fmt == "json":
        return JSONResponse(to_dict(report))
    q = report.query
    filename = download_name(report.name, q.as_dict()["from"] or "", q.as_dict()["to"] or "", fmt)
    body: bytes = to_xlsx(report) if fmt == "xlsx" else to_csv(report).encode("utf-8")
    return Response(body, media_type=MEDIA_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Cache-Control": "no-store"})


@router.get(
    "/v1/reports/{name}",
    responses=admin(),
    summary="A finance report (churn | revenue | mrr | segments | cohorts | retention | recovery | funnel) "
    "as JSON, CSV or XLSX",
    description="Amounts: JSON in integer minor units with `currency`; CSV as decimal strings in the "
    "currency's major unit; XLSX as typed decimal cells. `to` is exclusive, except that a bare date "
    "includes that whole day. Definitions: docs/reports.md.",
)
@long_running  # seconds on a large database: not in the quick requests' pool (api.threads)
def get_report(
    engine: EngineDep,
    settings: SettingsDep,
    now: NowDep,
    name: Annotated[str, Path(max_length=20, description="churn | revenue | mrr | segments | cohorts | retention | "
                                                         "recovery | funnel")],
    start: FromQ = None,
    to: ToQ = None,
    period: PeriodQ = None,
    by: ByQ = None,
    currency: CurrencyQ = None,
    format: FormatQ = None,
) -> Response:
    if name not in REPORTS:
        raise ValidationError(f"must be one of {', '.join(REPORTS)}, got {name!r}", field="name")
    fmt = (format or "json").strip().lower()
    if fmt not in EXPORT_FORMATS:
        raise ValidationError(f"must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}", field="format")
    q = build_query(start=start, end=to, period=period, by=by, currency=currency, now=now)
    report = run_report(engine, name, q, thresholds=settings.segment_thresholds_minor, generated_at=now)
    return export_response(report, fmt)
