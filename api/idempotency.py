"""``Idempotency-Key`` for admin POSTs: a retried request gets the first answer back.

The first successful response for (key, method, path) is stored in
``idempotency_records`` with the SHA-256 of the request. A retry with the same key and
the same request replays that status and body (header ``Idempotent-Replayed: true``)
without doing anything again; the same key with a different request is a 422 problem.
Where the effect is a single transaction, the record is written in that transaction,
so "done" and "remembered" commit together. Failed requests are not remembered: a retry
runs again (and fails again, or succeeds if the cause was fixed).

Simultaneous retries (the client timed out and sent the same request again while the
first is still running) WAIT for the first to finish and then get its answer: on
PostgreSQL the key is held with an advisory lock (``pg_advisory_xact_lock`` inside the
transaction that does the work, or ``pg_advisory_lock`` on its own connection around an
action that owns its transactions); on SQLite ``BEGIN IMMEDIATE`` already serialises.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
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


def _lock_id(key: str, method: str, path: str) -> int:
    """A signed 64-bit advisory-lock id for (key, method, path)."""
    digest = hashlib.sha256(f"idempotency\0{method}\0{path}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _wait_in_transaction(session: Session, lock_id: int) -> None:
    """PostgreSQL: wait until no other transaction works on this key (released at commit)."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id})


@contextmanager
def _held(engine: Engine, lock_id: int) -> Iterator[None]:
    """PostgreSQL: hold the key across several transactions (a session-level advisory lock
    on a connection of its own); a simultaneous retry waits here until it is released."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_id})
        conn.commit()  # the lock outlives the transaction; don't sit idle in one
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_id})
            conn.commit()


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
    lock_id = _lock_id(key, request.method, request.url.path[:500])
    try:
        with transaction(engine) as s:
            _wait_in_transaction(s, lock_id)
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
    with _held(engine, _lock_id(key, request.method, request.url.path[:500])):
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


def after_effect_answer(
    request: Request, engine: Engine, key: str | None, payload: BaseModel | None,
    action: Callable[[], tuple[int, Any]],
) -> JSONResponse:
    """As :func:`after_effect`, for actions whose answer may be a business refusal (a
    declined first charge: 402) that a retry must get back rather than repeat: the
    (status, body) the action returns is remembered whatever the status."""
    key = check_key(key)
    if key is None:
        status, content = action()
        return JSONResponse(jsonable_encoder(content), status_code=status)
    digest = request_digest(request, payload)
    path = request.url.path[:500]
    with _held(engine, _lock_id(key, request.method, path)):
        with transaction(engine) as s:
            rec = _find(s, key, request.method, path)
            if rec is not None:
                return _replay(rec, digest)
        status, content = action()
        content = jsonable_encoder(content)
        try:
            with transaction(engine) as s:
                s.add(_record(key, request, digest, status, content))
        except IntegrityError:
            with transaction(engine) as s:
                rec = _find(s, key, request.method, path)
                if rec is not None:
                    return _replay(rec, digest)
            raise
    return JSONResponse(content, status_code=status)
