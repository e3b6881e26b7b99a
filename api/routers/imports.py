"""``POST /v1/imports``: import from Stripe (or a CSV body) — or a dry run of it.

Runs to the end before answering (a Stripe import is paced by the account's rate limit:
for a large account prefer ``billing import stripe``, which resumes after a crash)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api import idempotency
from api.auth import ADMIN, actor
from api.deps import EngineDep, NowDep, SettingsDep
from api.idempotency import IdempotencyKey
from api.problems import problem
from api.responses import admin
from api.schemas import Input, UtcDateTime
from api.threads import long_running
from billing_engine.imports import csv_source, service
from billing_engine.imports.records import HOLD

router = APIRouter(tags=["imports"], dependencies=ADMIN)


class ImportRequest(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"source": "stripe", "dry_run": True},
        {"source": "csv", "dry_run": False, "charge_from": "2026-03-01T00:00:00Z",
         "csv": "subscription_id,customer_id,email,payment_token,plan_code,status,billing_anchor,"
                "current_period_start,current_period_end\n"
                "old-sub-17,old-cus-4,ada@example.com,pm_1Nabc,basic-monthly,active,2026-01-15T09:00:00Z,"
                "2026-02-15T09:00:00Z,2026-03-15T09:00:00Z\n"},
    ]})

    source: Literal["stripe", "csv"] = Field(description="stripe: the account of BILLING_STRIPE_API_KEY; "
                                             "csv: the `csv` field (format: docs/migrating-from-stripe.md).")
    dry_run: bool = Field(False, strict=True, description="Say what would be created and what cannot; change nothing.")
    charge_from: UtcDateTime | None = Field(
        None, description="Charge the imported subscriptions from this instant only (Stripe default: not before "
                          "`billing import cutover`; CSV default: at their next charge date).")
    csv: str | None = Field(None, max_length=900_000, description="The CSV text (source csv).")


class ImportOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "source": "stripe", "dry_run": False, "created": {"customers": 2, "payment_methods": 2, "consents": 2, "subscriptions": 2},
        "already_imported": 0, "unsupported": [{"object": "subscription", "id": "sub_1Nxyz", "reason": "unsupported currency 'xau'"}],
        "resumed_from": None, "charge_from": "2026-03-01T00:00:00Z", "would_create": None,
        "subscriptions_created": [{"external_id": "sub_1Nabc", "customer": "ada@example.com", "plan": "basic-monthly",
                                   "status": "active", "amount_minor": 1700, "currency": "USD",
                                   "next_charge_at": "2026-03-15T09:00:00Z", "cancel_at_period_end": False,
                                   "charge_from": "2026-03-01T00:00:00Z"}],
    }]})

    source: str = Field(description="stripe | csv: where the objects came from.")
    dry_run: bool = Field(description="True: nothing was changed; the counts say what would be created.")
    created: dict[str, int] = Field(description="Objects created (dry run: that would be created), by kind.")
    already_imported: int = Field(description="Subscriptions found by their external id: nothing created.")
    unsupported: list[dict[str, str]] = Field(description="Objects that cannot be imported, with the reason.")
    resumed_from: str | None = Field(None, description="stripe: where an interrupted earlier import had stopped and "
                                     "this one continued (\"<status> after <Stripe subscription id>\"); null: "
                                     "started from the beginning.")
    charge_from: datetime | None = Field(None, description="The imported subscriptions are charged from this "
                                         "instant only (UTC, ISO-8601); null: at their next charge date.")
    would_create: list[dict[str, Any]] | None = Field(None, description="Dry run: the subscriptions that would be "
                                                      "created, one object each; null otherwise.")
    subscriptions_created: list[dict[str, Any]] | None = Field(None, description="The subscriptions created, one "
                                                               "object each (external_id, customer, plan, status, "
                                                               "amount_minor, currency, next_charge_at ...); null on "
                                                               "a dry run.")


class _Refused(Exception):
    """A refusal (a problem response) that is not remembered: a retry runs again."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__()
        self.response = response


@router.post("/v1/imports", status_code=201, response_model=ImportOut,
             responses={**admin(409), 200: {"model": ImportOut, "description": "Dry run: nothing was changed."}},
             summary="Import customers, cards and subscriptions (Stripe or CSV)")
@long_running  # seconds on a large database: not in the quick requests' pool (api.threads)
def create_import(request: Request, body: ImportRequest, engine: EngineDep, settings: SettingsDep,
                  now: NowDep, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """A retry with the same Idempotency-Key replays the first answer without importing again
    (an import is safe to repeat anyway: objects already imported are found by their external id)."""
    if body.source == "csv":
        if not body.csv:
            return problem(422, "csv: give the CSV text for source csv", field="csv")
    else:
        if body.csv is not None:
            return problem(422, "csv: only for source csv", field="csv")
        if settings.stripe_api_key is None:
            return problem(409, "source: the server has no BILLING_STRIPE_API_KEY to read the Stripe account with",
                           field="source", code="conflict")

    csv_text = body.csv or ""

    def action() -> tuple[int, Any]:
        if body.source == "csv":
            try:
                report = service.import_csv(engine, csv_text, now=now, default_gateway=settings.gateway_name,
                                            dry_run=body.dry_run, charge_from=body.charge_from, actor=actor(request))
            except csv_source.ImportInvalid as exc:
                errors: list[dict[str, Any]] = [{"field": f"csv.{p.field}", "location": "body", "line": p.line,
                                                 "message": f"line {p.line}: {p.message}"}
                                                for p in exc.problems[:csv_source.MAX_PROBLEMS_SHOWN]]
                raise _Refused(problem(422, str(exc), field="csv", errors=errors)) from exc
        else:
            report = service.import_stripe(engine, settings, now=now, dry_run=body.dry_run,
                                           charge_from=body.charge_from or HOLD, actor=actor(request))
        return (200 if body.dry_run else 201), jsonable_encoder(report.as_dict())

    try:
        return idempotency.after_effect_answer(request, engine, idempotency_key, body, action)
    except _Refused as refused:
        return refused.response
