"""``billing import csv``: subscriptions whose cards are already gateway tokens.

The column format (header row required, any column order; docs/migrating-from-stripe.md):

required  subscription_id, customer_id (the source's ids), email, payment_token (pm_...),
          plan_code, status (active | trialing | past_due), billing_anchor,
          current_period_start, current_period_end
optional  name, gateway (default: the configured gateway), card_brand, card_last4,
          card_exp_month, card_exp_year, trial_end, cancel_at_period_end (true/false),
          next_retry_at (past_due), created_at (default current_period_start),
          plan_name, amount (major units, e.g. 17.00), currency, interval, interval_count
          (a plan_code that does not exist yet is created from these; one that exists
          must match them when given)

Times are ISO-8601 (UTC when no offset). Every row is validated before anything is
written; each bad row is reported once (``line N: field: problem``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from billing_engine import validation
from billing_engine.errors import BillingError, ValidationError
from billing_engine.imports.records import CardSpec, CustomerSpec, PlanSpec, Record, engine_schedule
from billing_engine.models import Plan
from billing_engine.money import Money, normalize_currency
from billing_engine.payment_methods import validate_token
from billing_engine.periods import parse_datetime, validate_interval

REQUIRED = ("subscription_id", "customer_id", "email", "payment_token", "plan_code", "status", "billing_anchor",
            "current_period_start", "current_period_end")
OPTIONAL = ("name", "gateway", "card_brand", "card_last4", "card_exp_month", "card_exp_year", "trial_end",
            "cancel_at_period_end", "next_retry_at", "created_at", "plan_name", "amount", "currency", "interval",
            "interval_count")
MAX_PROBLEMS_SHOWN = 1000


@dataclass(frozen=True, kw_only=True)
class Problem:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


class ImportInvalid(ValidationError):
    """The input has bad rows; nothing was written."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} bad row(s); nothing was imported", field="file")


def _when(row: dict[str, str], name: str, *, required: bool = True) -> datetime | None:
    raw = (row.get(name) or "").strip()
    if not raw:
        if required:
            raise ValidationError("is required", field=name)
        return None
    return parse_datetime(raw, name)


def _int(row: dict[str, str], name: str, lo: int, hi: int) -> int | None:
    raw = (row.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ValidationError(f"must be a whole number, got {raw!r}", field=name)
    return validation.int_range(int(raw), name, lo=lo, hi=hi)


def _bool(row: dict[str, str], name: str) -> bool:
    raw = (row.get(name) or "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise ValidationError(f"must be true or false, got {raw!r}", field=name)


class _Plans:
    """The plan of each row: an existing plan (terms must match when given) or one the
    file defines (every row naming it must agree)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.known: dict[str, PlanSpec | None] = {}
        self.money: dict[tuple[str, str], int] = {}
        self.seen: dict[tuple[str | None, ...], PlanSpec] = {}  # the same plan cells, checked once

    def spec(self, row: dict[str, str]) -> PlanSpec:
        raw = tuple(row.get(k) for k in ("plan_code", "amount", "currency", "interval", "interval_count", "plan_name"))
        hit = self.seen.get(raw)
        if hit is None:
            hit = self.seen[raw] = self._spec(row)
        return hit

    def _spec(self, row: dict[str, str]) -> PlanSpec:
        code = validation.code((row.get("plan_code") or "").strip().lower(), "plan_code")
        if code not in self.known:
            p = self.session.exec(select(Plan).where(Plan.code == code)).first()
            self.known[code] = None if p is None else PlanSpec(
                code=p.code, name=p.name, amount_minor=p.amount_minor, currency=p.currency, interval=p.interval,
                interval_count=p.interval_count, external_id=p.external_id)
        given = self._given(row, code)
        have = self.known[code]
        if have is None:
            if given is None:
                raise ValidationError(f"no plan {code!r}: give amount, currency and interval to create it",
                                      field="plan_code")
            self.known[code] = given
            return given
        if given is not None and (given.amount_minor, given.currency, given.interval, given.interval_count) != (
                have.amount_minor, have.currency, have.interval, have.interval_count):
            raise ValidationError(f"plan {code!r} is {have.amount_minor} {have.currency} every "
                                  f"{have.interval_count} {have.interval}; this row says otherwise", field="amount")
        return have

    def _given(self, row: dict[str, str], code: str) -> PlanSpec | None:
        amount, currency, interval = ((row.get(k) or "").strip() for k in ("amount", "currency", "interval"))
        if not (amount or currency or interval):
            return None
        for k, v in (("amount", amount), ("currency", currency), ("interval", interval)):
            if not v:
                raise ValidationError("is required with amount, currency and interval", field=k)
        cur = normalize_currency(currency)
        key = (amount, cur)
        if key not in self.money:
            self.money[key] = Money.parse(amount, cur, field="amount").amount
        iv, count = validate_interval(interval, _int(row, "interval_count", 1, 365) or 1)
        name = validation.text(row.get("plan_name") or code, "plan_name", max_length=200, required=True)
        return PlanSpec(code=code, name=name, amount_minor=self.money[key], currency=cur, interval=iv.value,
                        interval_count=count, external_id=f"csv:plan:{code}")


def parse(session: Session, text: str | Iterable[str], *, default_gateway: str,
          charge_from: datetime | None = None) -> list[Record]:
    """Every row as a :class:`Record`, or :class:`ImportInvalid` listing every bad row."""
    try:
        return _parse(session, text, default_gateway=default_gateway, charge_from=charge_from)
    except csv.Error as exc:  # NUL bytes, an unclosed quote at the end, a cell over the size limit
        raise ImportInvalid([Problem(line=0, field="file", message=f"not readable as CSV: {exc}")]) from None


def _parse(session: Session, text: str | Iterable[str], *, default_gateway: str,
           charge_from: datetime | None) -> list[Record]:
    reader = csv.DictReader(io.StringIO(text) if isinstance(text, str) else text)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ImportInvalid([Problem(line=1, field=c, message="missing column") for c in missing])
    unknown = [h for h in header if h not in REQUIRED and h not in OPTIONAL]
    if unknown:
        raise ImportInvalid([Problem(line=1, field=h, message="unknown column") for h in unknown])
    reader.fieldnames = header
    plans = _Plans(session)
    records: list[Record] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    customers: dict[str, tuple[str, int]] = {}
    for row in reader:
        line = reader.line_num
        try:
            rec = _record(row, plans, default_gateway, charge_from)
            if rec.external_id in seen:
                raise ValidationError(f"duplicate of line {seen[rec.external_id]}", field="subscription_id")
            prev = customers.get(rec.customer.external_id)
            if prev is not None and prev[0] != rec.customer.email:
                raise ValidationError(f"customer {rec.customer.external_id!r} has e-mail {prev[0]!r} on line "
                                      f"{prev[1]}", field="email")
        except BillingError as exc:
            problems.append(Problem(line=line, field=exc.field or "row", message=exc.message or str(exc)))
            continue
        except (KeyError, ValueError, TypeError) as exc:  # a malformed row (too few / many cells)
            problems.append(Problem(line=line, field="row", message=f"malformed row ({exc})"))
            continue
        seen[rec.external_id] = line
        customers.setdefault(rec.customer.external_id, (rec.customer.email, line))
        records.append(rec)
    if problems:
        raise ImportInvalid(problems)
    return records


def _record(row: dict[str, Any], plans: _Plans, default_gateway: str, charge_from: datetime | None) -> Record:
    if None in row:
        raise ValidationError("more cells than columns in the header", field="row")
    sub_ext = validation.text(row.get("subscription_id"), "subscription_id", max_length=150, required=True)
    cus_ext = validation.text(row.get("customer_id"), "customer_id", max_length=150, required=True)
    email = validation.email(row.get("email") or "", "email")
    name = validation.text(row.get("name"), "name", max_length=200)
    token = validate_token(row.get("payment_token") or "")
    gateway = (row.get("gateway") or "").strip() or default_gateway
    if gateway not in ("fake", "stripe"):
        raise ValidationError(f"must be fake or stripe, got {gateway!r}", field="gateway")
    last4 = (row.get("card_last4") or "").strip()
    if last4 and (len(last4) != 4 or not last4.isdigit()):
        raise ValidationError("must be 4 digits", field="card_last4")
    plan = plans.spec(row)
    status = (row.get("status") or "").strip().lower()
    anchor = _when(row, "billing_anchor")
    cps = _when(row, "current_period_start")
    cpe = _when(row, "current_period_end")
    assert anchor is not None and cps is not None and cpe is not None
    trial_end = _when(row, "trial_end", required=False)
    retry = _when(row, "next_retry_at", required=False)
    created = _when(row, "created_at", required=False) or cps
    schedule = engine_schedule(status=status, billing_anchor=anchor, current_period_start=cps, current_period_end=cpe,
                    trial_end=trial_end, next_retry_at=retry, interval=plan.interval,
                    interval_count=plan.interval_count)
    return Record(
        external_id=f"csv:{sub_ext}", source="csv",
        customer=CustomerSpec(external_id=f"csv:{cus_ext}", email=email, name=name),
        card=CardSpec(external_id=f"csv:{cus_ext}:{gateway}:{token}", gateway=gateway, token=token,
                      brand=validation.text(row.get("card_brand") or "unknown", "card_brand", max_length=30),
                      last4=last4, exp_month=_int(row, "card_exp_month", 1, 12),
                      exp_year=_int(row, "card_exp_year", 2000, 2200)),
        plan=plan, status=status, billing_anchor=anchor, current_period_start=cps, current_period_end=cpe,
        trial_end=trial_end, cancel_at_period_end=_bool(row, "cancel_at_period_end"), next_retry_at=retry,
        created_at=created, charge_from=charge_from, schedule=schedule,
        source_ids={"subscription": sub_ext, "customer": cus_ext, "payment_method": token},
    )
