"""Render a :class:`Report` as JSON, CSV, XLSX or a rich table -- the same numbers everywhere.

- JSON: amounts as integer minor units (keys ending ``_minor``) next to ``currency``;
  rates as decimal strings ("0.0500"); times ISO-8601 UTC ("...Z").
- CSV: one header row (column labels); amounts as decimal strings in the currency's major
  unit (``money.format_minor``: "17.00", JPY "1700", KWD "1.700") with a ``currency``
  column; rates as decimal strings; times ISO-8601 UTC. Never a float.
- XLSX (openpyxl): typed cells -- ints for counts; amounts as ``Decimal(minor) * 10**-exp``
  (exact decimal text in the file, no float rounding on our side) with a number format of
  the currency's decimals; rates as Decimal with a percent format; times as naive UTC
  datetimes (header says UTC).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from billing_engine.money import exponent, format_minor
from billing_engine.reports.model import Column, Report
from billing_engine.reports.params import iso

FORMATS = ("table", "csv", "json", "xlsx")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def period_label(start: datetime, end: datetime) -> str:
    """"2026-01" for a whole calendar month, "2026-01-05" for one day, else "start..end" (inclusive dates)."""
    whole_day = start.time() == end.time() == datetime.min.time()
    if whole_day and start.day == 1 and end.day == 1 and (end.year * 12 + end.month) - (start.year * 12 + start.month) == 1:
        return start.strftime("%Y-%m")
    if whole_day and end - start == timedelta(days=1):
        return start.strftime("%Y-%m-%d")
    last = end - timedelta(microseconds=1)
    if whole_day:
        return f"{start:%Y-%m-%d}..{last:%Y-%m-%d}"
    return f"{iso(start)}..{iso(end)}"


def _json_value(col: Column, value: Any) -> Any:
    if value is None:
        return None
    if col.kind == "time":
        return iso(value)
    if col.kind in ("rate", "decimal"):
        return str(value)
    return value


def to_dict(report: Report) -> dict[str, Any]:
    return {
        "report": report.name,
        "title": report.title,
        "query": report.query.as_dict(),
        "generated_at": iso(report.generated_at) if report.generated_at else None,
        "columns": [{"key": c.key, "label": c.label, "kind": c.kind} for c in report.columns],
        "rows": [{c.key: _json_value(c, row.get(c.key)) for c in report.columns} for row in report.rows],
    }


def to_json(report: Report) -> str:
    return json.dumps(to_dict(report), indent=2) + "\n"


def _text(col: Column, row: dict[str, Any]) -> str:
    value = row.get(col.key)
    if value is None:
        return ""
    if col.kind == "money":
        return format_minor(int(value), row["currency"])
    if col.kind == "time":
        return iso(value)
    return str(value)


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([c.label for c in report.columns])
    for row in report.rows:
        w.writerow([_text(c, row) for c in report.columns])
    return buf.getvalue()


def money_decimal(amount_minor: int, currency: str) -> Decimal:
    """Exact major-unit Decimal: 1700 USD -> Decimal("17.00")."""
    return Decimal(int(amount_minor)).scaleb(-exponent(currency))


def money_number_format(currency: str) -> str:
    exp = exponent(currency)
    return "#,##0" + ("." + "0" * exp if exp else "")


def to_xlsx(report: Report) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = report.name[:31]
    headers = [c.label + (" (UTC)" if c.kind == "time" else "") for c in report.columns]
    ws.append(headers)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for r, row in enumerate(report.rows, start=2):
        for ci, col in enumerate(report.columns, start=1):
            value = row.get(col.key)
            cell = ws.cell(row=r, column=ci)
            if value is None:
                continue
            if col.kind == "money":
                cell.value = money_decimal(int(value), row["currency"])
                cell.number_format = money_number_format(row["currency"])
            elif col.kind == "rate":
                cell.value = Decimal(value)
                cell.number_format = "0.00%"
            elif col.kind == "decimal":
                cell.value = Decimal(value)
                cell.number_format = "0.00"
            elif col.kind == "time":
                cell.value = value.astimezone(UTC).replace(tzinfo=None)
                cell.number_format = "yyyy-mm-dd hh:mm"
            elif col.kind == "count":
                cell.value = int(value)
                cell.number_format = "0"
            else:
                cell.value = str(value)
    for ci, h in enumerate(headers, start=1):
        ws.column_dimensions[ws.cell(row=1, column=ci).column_letter].width = max(10, min(len(h) + 2, 28))
    ws.freeze_panes = "A2"
    info = wb.create_sheet("query")
    for k, v in report.query.as_dict().items():
        info.append([k, v or ""])
    if report.generated_at:
        info.append(["generated_at", iso(report.generated_at)])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _cell(c: Column, row: dict[str, Any]) -> str:
    v = row.get(c.key)
    if v is None:
        return "-"
    if c.kind == "money":
        return format_minor(int(v), row["currency"])
    if c.kind == "rate":
        return f"{(Decimal(v) * 100).quantize(Decimal('0.01'))}%"
    return str(v)


def to_rich_tables(report: Report) -> list[Any]:
    """Human tables. Period reports are transposed -- one table per currency (and plan) with
    the periods as columns and one line per figure, the way finance reads them."""
    from rich.table import Table

    q = report.query
    caption = f"{iso(q.start)} .. {iso(q.end)} (end exclusive, UTC)"
    if "period_start" not in [c.key for c in report.columns]:
        table = Table(title=report.title, caption=caption, header_style="bold")
        for c in report.columns:
            table.add_column(c.label, justify="right" if c.kind in ("count", "money", "rate", "decimal") else "left")
        for row in report.rows:
            table.add_row(*[_cell(c, row) for c in report.columns])
        return [table]
    keys = [c for c in report.columns if c.kind == "text"]
    figures = [c for c in report.columns if c.kind in ("count", "money", "rate", "decimal")]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in report.rows:
        groups.setdefault(tuple(str(row.get(k.key, "")) for k in keys), []).append(row)
    tables = []
    for group, rows in groups.items():
        title = f"{report.title} · " + " · ".join(group)
        table = Table(title=title, caption=caption, header_style="bold")
        table.add_column("")
        for row in rows:
            table.add_column(period_label(row["period_start"], row["period_end"]), justify="right")
        for c in figures:
            table.add_row(c.label.replace("_", " "), *[_cell(c, row) for row in rows])
        tables.append(table)
    if not tables:
        tables.append(Table(title=f"{report.title}: nothing in this range", caption=caption))
    return tables
