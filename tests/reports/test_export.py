"""CSV / JSON / XLSX exports: exact decimals, currency exponents, typed spreadsheet cells."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import UTC, datetime
from decimal import Decimal

from openpyxl import load_workbook

from billing_engine.reports.export import period_label, to_csv, to_json, to_xlsx
from billing_engine.reports.model import Column, Report, rate
from billing_engine.reports.params import build_query

START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)


def sample() -> Report:
    q = build_query(start=START, end=END, now=END)
    cols = (Column("period_start", "period_start", "time"), Column("period_end", "period_end", "time"),
            Column("currency", "currency", "text"), Column("subscribers", "subscribers", "count"),
            Column("net_minor", "net", "money"), Column("churn_rate", "churn_rate", "rate"))
    rows = [
        {"period_start": START, "period_end": END, "currency": "USD", "subscribers": 3,
         "net_minor": 1234567890123456, "churn_rate": rate(1, 3)},
        {"period_start": START, "period_end": END, "currency": "JPY", "subscribers": 0, "net_minor": -1500,
         "churn_rate": None},
        {"period_start": START, "period_end": END, "currency": "KWD", "subscribers": 1, "net_minor": 1005,
         "churn_rate": rate(0, 1)},
    ]
    return Report("sample", "Sample", q, cols, rows)


def test_csv_has_a_header_and_major_unit_decimal_strings() -> None:
    rows = list(csv.reader(io.StringIO(to_csv(sample()))))
    assert rows[0] == ["period_start", "period_end", "currency", "subscribers", "net", "churn_rate"]
    assert rows[1] == ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "USD", "3", "12345678901234.56", "0.3333"]
    assert rows[2][3:] == ["0", "-1500", ""]
    assert rows[3][4:] == ["1.005", "0.0000"]


def test_json_keeps_minor_units_next_to_the_currency() -> None:
    data = json.loads(to_json(sample()))
    assert data["query"]["from"] == "2026-01-01T00:00:00Z"
    assert data["rows"][0]["net_minor"] == 1234567890123456
    assert data["rows"][0]["churn_rate"] == "0.3333"
    assert data["rows"][1] == {"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-02-01T00:00:00Z",
                               "currency": "JPY", "subscribers": 0, "net_minor": -1500, "churn_rate": None}


def test_xlsx_cells_are_typed_with_the_currency_decimals() -> None:
    data = to_xlsx(sample())
    ws = load_workbook(io.BytesIO(data))["sample"]
    assert [c.value for c in ws[1]] == ["period_start (UTC)", "period_end (UTC)", "currency", "subscribers", "net",
                                        "churn_rate"]
    assert ws["A2"].value == datetime(2026, 1, 1) and ws["A2"].is_date
    assert ws["D2"].value == 3 and ws["D2"].data_type == "n"
    assert ws["E2"].number_format == "#,##0.00"
    assert ws["E3"].number_format == "#,##0" and ws["E3"].value == -1500
    assert ws["E4"].number_format == "#,##0.000"
    assert ws["F2"].number_format == "0.00%"
    # the file holds the exact decimal text, not a binary float rendering
    sheet = zipfile.ZipFile(io.BytesIO(data)).read("xl/worksheets/sheet1.xml").decode()
    assert "<v>12345678901234.56</v>" in sheet and "<v>1.005</v>" in sheet and "<v>0.3333</v>" in sheet


def test_rates_round_half_even_to_four_places() -> None:
    assert rate(1, 8) == Decimal("0.1250")
    assert rate(1, 16) == Decimal("0.0625")
    assert rate(1, 32) == Decimal("0.0312")  # 0.03125 -> even
    assert rate(5, 0) is None


def test_period_labels() -> None:
    assert period_label(START, END) == "2026-01"
    assert period_label(START, datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-01"
    assert period_label(datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 12, tzinfo=UTC)) == "2026-01-05..2026-01-11"
