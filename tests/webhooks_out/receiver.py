"""A real HTTP receiver on 127.0.0.1 that verifies Standard Webhooks signatures with the
``standardwebhooks`` package, the way a merchant's app would."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver:
    def __init__(self, secrets: list[str] | None = None) -> None:
        self.secrets = list(secrets or [])
        self.received: list[dict[str, Any]] = []  # verified payloads, in arrival order
        self.headers: list[dict[str, str]] = []
        self.rejected = 0  # bad signatures
        self.status = 200  # what to answer to a verified delivery
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k: v for k, v in self.headers.items()}
                payload = None
                for sec in owner.secrets:
                    try:
                        payload = Webhook(sec).verify(body, headers)
                        break
                    except WebhookVerificationError:
                        continue
                if payload is None:
                    owner.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if owner.status < 300:
                    owner.received.append(payload)
                    owner.headers.append({k.lower(): v for k, v in headers.items()})
                self.send_response(owner.status)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"ok": owner.status < 300}).encode())

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: connections are refused until :meth:`start` again (same port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def types(self) -> list[str]:
        return [p["type"] for p in self.received]
