"""The scripted Stripe (:class:`StripeSim`) behind a real HTTP server on 127.0.0.1, so a
separate ``billing`` process can use it through ``BILLING_STRIPE_API_BASE``.

A simulated network failure (``Fault.CONNECTION_RESET`` / ``TIMEOUT_AFTER_COMMIT``) drops
the connection without an answer, which the SDK reports as ``APIConnectionError``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stripe

from tests.gateway.stripe_sim import StripeSim


def _handler(sim: StripeSim) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}{self.path}"
            try:
                text, status, headers = sim.request(self.command.lower(), url, dict(self.headers.items()),
                                                    body.decode() if self.command == "POST" else None)
            except stripe.APIConnectionError:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            data = text.encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    return Handler


@contextmanager
def serving(sim: StripeSim) -> Iterator[str]:
    """Serve ``sim`` on a free port; yields the API base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(sim))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
