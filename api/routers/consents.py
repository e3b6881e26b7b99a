"""Consent evidence: ``GET /v1/consents/{id}`` (the full record, JSON) and
``GET /v1/consents/{id}/evidence.html`` / ``evidence.json`` (the chargeback dispute
export, as a download). ``{id}`` may also be a subscription or payment method id."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import AfterValidator

from api.auth import ADMIN
from api.deps import EngineDep, NowDep
from api.responses import admin
from api.schemas import clean_text
from billing_engine import evidence
from billing_engine.db import transaction

router = APIRouter(tags=["consents"], dependencies=ADMIN)

ConsentRef = Annotated[str, Path(min_length=1, max_length=40,
                                 description="Consent (cns_...), subscription (sub_...) or payment method (pm_...) id."),
                       AfterValidator(clean_text)]


def _record(engine: Any, ref: str) -> dict[str, Any]:
    with transaction(engine) as s:
        return evidence.record(s, evidence.find(s, ref)[0])


@router.get("/v1/consents/{consent}", responses=admin(404), summary="The full consent record (who, when, IP, "
            "user agent, terms version + hash + text, amount, interval) with the charges and e-mails under it")
def show_consent(consent: ConsentRef, engine: EngineDep) -> dict[str, Any]:
    return _record(engine, consent)


@router.get("/v1/consents/{consent}/evidence.json", responses=admin(404),
            summary="The consent record as a JSON file for a chargeback dispute")
def consent_evidence_json(consent: ConsentRef, engine: EngineDep) -> Response:
    rec = _record(engine, consent)
    return Response(evidence.to_json(rec), media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="{rec["consent_id"]}.json"', "Cache-Control": "no-store"})


@router.get("/v1/consents/{consent}/evidence.html", response_class=HTMLResponse, responses=admin(404),
            summary="The consent record as a printable HTML page (save as PDF) for a chargeback dispute")
def consent_evidence_html(request: Request, consent: ConsentRef, engine: EngineDep, now: NowDep) -> HTMLResponse:
    rec = _record(engine, consent)
    html = evidence.to_html(rec, company_name=request.app.state.settings.company_name, generated_at=now)
    return HTMLResponse(html, headers={"Content-Disposition": f'inline; filename="{rec["consent_id"]}.html"',
                                       "Cache-Control": "no-store"})
