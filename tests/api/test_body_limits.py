"""Request bodies are capped while they stream (413), and admin requests are authenticated
before their body is read (401): a 5 MB body never has to fit in server memory."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.limits import MAX_BODY_BYTES
from billing_engine.gateway.fake import FakeGateway
from tests.api.conftest import AUTH, Clock, make_client

BIG = b"x" * (5 * 1024 * 1024)
CHUNK = 64 * 1024


@pytest.fixture
def app_client(sqlite_engine: Engine, now: Any) -> TestClient:
    return make_client(sqlite_engine, FakeGateway(), Clock(now))


@pytest.mark.parametrize("path", ["/v1/customers", "/v1/plans", "/webhooks/stripe", "/cancel/sometoken",
                                  "/dashboard/login"])
def test_a_5mb_body_is_a_413_problem(app_client: TestClient, path: str) -> None:
    r = app_client.post(path, content=BIG, headers=AUTH | {"Content-Type": "application/json",
                                                          "Stripe-Signature": "t=1,v1=x"})
    assert r.status_code == 413, r.text[:300]
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"] == "body" and r.json()["code"] == "too_large"


def test_a_5mb_admin_body_without_a_token_is_a_401(app_client: TestClient) -> None:
    r = app_client.post("/v1/customers", content=BIG, headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_a_body_under_the_cap_still_works(app_client: TestClient) -> None:
    body = json.dumps({"email": "ada@example.com", "name": "A" * 100})
    r = app_client.post("/v1/customers", content=body, headers=AUTH | {"Content-Type": "application/json"})
    assert r.status_code == 201, r.text


def _stream(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """Send BIG to ``app`` in 64 KiB chunks without a Content-Length (chunked upload);
    returns (status, bytes the app pulled from the client)."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled >= len(BIG):
            await asyncio.sleep(3600)  # the client has nothing more to say
        chunk = BIG[pulled:pulled + CHUNK]
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": pulled < len(BIG)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"test"), (b"transfer-encoding", b"chunked"),
                         (b"content-type", b"application/json"), *headers],
             "client": ("127.0.0.1", 1), "server": ("test", 80), "state": {}}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], pulled


def test_a_streamed_5mb_body_is_refused_after_the_cap_not_read_to_the_end(app_client: TestClient) -> None:
    status, pulled = _stream(app_client.app, "/v1/customers", [(b"authorization", AUTH["Authorization"].encode())])
    assert status == 413
    assert pulled <= MAX_BODY_BYTES + CHUNK


def test_a_streamed_admin_body_without_a_token_is_not_read_at_all(app_client: TestClient) -> None:
    status, pulled = _stream(app_client.app, "/v1/customers", [])
    assert status == 401
    assert pulled == 0


def test_a_streamed_webhook_body_is_refused_after_the_cap(app_client: TestClient) -> None:
    status, pulled = _stream(app_client.app, "/webhooks/stripe", [(b"stripe-signature", b"t=1,v1=x")])
    assert status == 413
    assert pulled <= MAX_BODY_BYTES + CHUNK
