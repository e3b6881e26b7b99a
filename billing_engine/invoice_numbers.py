"""Gapless invoice numbers: ``<prefix><6+ digits>``, one series per prefix.

A number is taken in the SAME transaction that marks the invoice paid, from the
series' counter row (``invoice_number_series``): one ``UPDATE ... SET last_value =
last_value + n RETURNING last_value`` locks the row until that transaction commits and
hands out the range ``last_value - n + 1 .. last_value``. If the transaction rolls back,
so does the counter: no number is ever skipped or used twice (``invoices.number`` is
unique). The batched run-cycle takes one range per batch (:func:`take`), never a
number per row; concurrent workers queue on the row only for the rest of their settle
transaction.

The prefix comes from ``BILLING_INVOICE_NUMBER_PREFIX`` (default ``INV-``); changing it
starts a new series at 1 (e.g. one prefix per year: ``2027-``).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlmodel import Session

from billing_engine.settings import get_settings

DIGITS = 6


def format_number(prefix: str, value: int) -> str:
    return f"{prefix}{value:0{DIGITS}d}"


def default_prefix() -> str:
    return get_settings().invoice_number_prefix


def take(session: Session, count: int, *, prefix: str | None = None) -> list[str]:
    """``count`` consecutive numbers of the series, in order (locks its counter row until commit)."""
    if count <= 0:
        return []
    prefix = prefix or default_prefix()
    session.execute(text("INSERT INTO invoice_number_series (prefix, last_value) VALUES (:p, 0) "
                         "ON CONFLICT (prefix) DO NOTHING"), {"p": prefix})
    row = session.execute(
        text("UPDATE invoice_number_series SET last_value = last_value + :n WHERE prefix = :p RETURNING last_value"),
        {"n": count, "p": prefix},
    ).one()
    last = int(row[0])
    return [format_number(prefix, v) for v in range(last - count + 1, last + 1)]


def take_one(session: Session, *, prefix: str | None = None) -> str:
    return take(session, 1, prefix=prefix)[0]
