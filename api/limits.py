"""Request bodies are capped while they stream in, and admin requests are authenticated
before their body is read.

:class:`BodyLimit` is an ASGI middleware around the whole app (admin API, Stripe
webhook, cancel forms, dashboard login):

1. an admin request (``/v1/...``) that carries a body and no valid Bearer token is
   answered 401/503 at once -- its body is never read;
2. a ``Content-Length`` above :data:`MAX_BODY_BYTES` is answered 413 at once;
3. otherwise the body is read chunk by chunk, counting bytes, and answered 413 as soon
   as the count passes the cap; a body within the cap is handed to the app unchanged.

So the server never holds more than the cap (plus one chunk) of a request body.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import check
from api.problems import problem

MAX_BODY_BYTES = 1_000_000  # 1 MB: admin JSON, Stripe events (a few KB) and forms are far smaller
ADMIN_PREFIX = "/v1/"


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        if scope.get("path", "").startswith(ADMIN_PREFIX):
            denied = check(Request(scope))
            if denied is not None:
                await denied(scope, receive, send)
                return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, f"the request body is larger than {self.max_bytes} bytes", code="too_large",
                           field="body", headers={"Connection": "close"})
        await response(scope, receive, send)
