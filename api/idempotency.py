"""``Idempotency-Key`` for admin POSTs: a retried request gets the first answer back.

The first successful response for (key, method, path) is stored in
``idempotency_records`` with the SHA-256 of the request. A retry with the same key and
the same request replays that status and body (header ``Idempotent-Replayed: true``)
without doing anything again; the same key with a different request is a 422 problem.
Where the effect is a single transaction, the record is written in that transaction,
so "done" and "remembered" commit together. Failed requests are not remembered: a retry
runs again (and fails again, or succeeds if the cause was fixed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from billing_engine.db import transaction
from billing_engine.errors import ValidationError
from billing_engine.models import IdempotencyRecord

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Any unique string (e.g. a UUID). Retrying with the same key returns the first "
        "result instead of doing it twice; reusing it for a different request is rejected (422).",
    ),
]

HEADER = "Idempotency-Key"


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    k = key.strip()
    if not 1 <= len(k) <= 255 or any(not (0x21 <= ord(c) <= 0x7E) for c in k):
        raise ValidationError("must be 1-255 visible ASCII characters (e.g. a UUID)", field=HEADER)
    return k


def request_digest(request: Request, payload: BaseModel | None) -> str:
    doc = {
        "query": sorted(request.query_params.multi_items()),
        "body": payload.model_dump(mode="json") if payload is not None else None,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _find(session: Session, key: str, method: str, path: str) -> IdempotencyRecord | None:
    return session.exec(select(IdempotencyRecord).where(
        IdempotencyRecord.key == key, IdempotencyRecord.method == method, IdempotencyRecord.path == path,
    )).first()


def _replay(rec: IdempotencyRecord, digest: str) -> JSONResponse:
    if rec.request_sha256 != digest:
        raise ValidationError(
            "this Idempotency-Key was already used for a different request; use a new key", field=HEADER
        )
    return JSONResponse(json.loads(rec.response_body), status_code=rec.response_status,
                        headers={"Idempotent-Replayed": "true"})


def _record(key: str, request: Request, digest: str, status: int, content: Any) -> IdempotencyRecord:
    return IdempotencyRecord(key=key, method=request.method, path=request.url.path[:500], request_sha256=digest,
                             response_status=status, response_body=json.dumps(content, sort_keys=True))


def in_transaction(
    request: Request, engine: Engine, key: str | None, payload: BaseModel | None, status_code: int,
    action: Callable[[Session], BaseModel],
) -> JSONResponse:
    """Run ``action`` in one transaction; with a key, remember its answer in the same one."""
    key = check_key(key)
    if key is None:
        with transaction(engine) as s:
            content = jsonable_encoder(action(s))
        return JSONResponse(content, status_code=status_code)
    digest = request_digest(request, payload)
    try:
        with transaction(engine) as s:
            rec = _find(s, key, request.method, request.url.path[:500])
            if rec is not None:
                return _replay(rec, digest)
            content = jsonable_encoder(action(s))
            s.add(_record(key, request, digest, status_code, content))
            s.flush()
    except IntegrityError:
        # a concurrent request with the same key won the race (and its effect committed)
        with transaction(engine) as s:
            rec = _find(s, key, request.method, request.url.path[:500])
            if rec is None:
                raise
            return _replay(rec, digest)
    return JSONResponse(content, status_code=status_code)


def after_effect(
    request: Request, engine: Engine, key: str | None, payload: BaseModel | None, status_code: int,
    action: Callable[[], BaseModel],
) -> JSONResponse:
    """For actions that own their transactions (a refund, the run-cycle): the answer is
    remembered right after the effect. Those actions are idempotent by themselves
    (deterministic gateway keys, exactly-once charging), so a crash in between is safe."""
    key = check_key(key)
    if key is None:
        return JSONResponse(jsonable_encoder(action()), status_code=status_code)
    digest = request_digest(request, payload)
    with transaction(engine) as s:
        rec = _find(s, key, request.method, request.url.path[:500])
        if rec is not None:
            return _replay(rec, digest)
    content = jsonable_encoder(action())
    try:
        with transaction(engine) as s:
            s.add(_record(key, request, digest, status_code, content))
    except IntegrityError:
        with transaction(engine) as s:
            rec = _find(s, key, request.method, request.url.path[:500])
            if rec is not None:
                return _replay(rec, digest)
        raise
    return JSONResponse(content, status_code=status_code)
