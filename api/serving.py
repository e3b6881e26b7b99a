"""How ``billing serve`` runs uvicorn: a read deadline per request and a clean SIGTERM.

- **Slow clients.** uvicorn has a keep-alive timeout for idle connections but none for a
  request that is still arriving: a client trickling its headers or body one byte at a
  time holds a connection (and, for a body, a worker thread's request) forever.
  :class:`DeadlineHttpToolsProtocol` (httptools' C parser; :class:`DeadlineH11Protocol` is
  the same on h11) gives every request ``read_timeout`` seconds from its first
  byte (or from the connection being opened) to its last body byte; a request still
  incomplete then is cut off (the connection is closed). Idle keep-alive connections are
  closed after ``keep_alive`` seconds (uvicorn's own timer).
- **SIGTERM / SIGINT** drain: stop accepting, let in-flight requests finish (at most
  ``graceful_timeout`` seconds), run the shutdown, and exit 0 -- uvicorn re-raises the
  signal after a graceful shutdown, so a supervisor saw "killed by signal 15" for a clean
  stop; :class:`DrainingServer` does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Generator
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_READ_TIMEOUT = 30.0  # seconds from a request's first byte to its last body byte
DEFAULT_KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open (uvicorn's default)
DEFAULT_GRACEFUL_TIMEOUT = 30  # seconds in-flight requests may take after SIGTERM


class _ReadDeadline:
    """A deadline on reading each request (headers and body), for uvicorn's h11 and
    httptools protocols (both keep the request being read in ``self.cycle``, with
    ``more_body`` / ``response_complete`` / ``disconnected`` / ``message_event``)."""

    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    logger: Any

    def _init_deadline(self, config: uvicorn.Config) -> None:
        self.read_timeout = float(getattr(config, "billing_read_timeout", DEFAULT_READ_TIMEOUT))
        self._deadline: asyncio.TimerHandle | None = None
        self._reading: object = None  # the cycle being read when the deadline was armed

    def _after_data(self) -> None:
        if self._incomplete():
            if self._deadline is None or self._reading is not self.cycle:
                self._arm()
        else:
            self._disarm()

    def _incomplete(self) -> bool:
        """A request head not yet parsed, or a body still arriving."""
        cycle = self.cycle
        return cycle is None or cycle.response_complete or cycle.more_body

    def _arm(self) -> None:
        self._disarm()
        self._reading = self.cycle
        self._deadline = self.loop.call_later(self.read_timeout, self._expired, self.cycle)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, armed_for: Any) -> None:
        self._deadline = None
        cycle = self.cycle
        waiting_for_head = cycle is armed_for and (cycle is None or cycle.response_complete)
        body_unfinished = cycle is not None and not cycle.response_complete and cycle.more_body
        if waiting_for_head or body_unfinished:
            self.logger.info("closing a connection: request not received within %.0f s", self.read_timeout)
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()


class DeadlineH11Protocol(_ReadDeadline, H11Protocol):
    """uvicorn's h11 protocol (pure Python) with :class:`_ReadDeadline`."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._init_deadline(config)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._after_data()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class DeadlineHttpToolsProtocol(_ReadDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol (a C parser: per request it costs a fraction of the CPU
    h11 spends) with :class:`_ReadDeadline`. The default of ``billing serve``."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._init_deadline(config)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._after_data()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class DrainingServer(uvicorn.Server):
    """SIGTERM/SIGINT: graceful shutdown, then return (exit 0) instead of re-raising."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def worker_app() -> Any:
    """The app of one ``billing serve --workers N`` process (uvicorn's factory). On Linux
    the process also asks to be sent SIGTERM when its supervisor dies: killed with SIGKILL
    (``kill -9``), the supervisor cannot stop its workers, which would go on holding the
    port (and the supervisor's stdout/stderr) as orphans."""
    import os

    from api.app import create_app

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no prctl: orphans stay possible
            pass
        if os.getppid() == 1:  # pragma: no cover - the supervisor died before prctl
            os.kill(os.getpid(), signal.SIGTERM)
    return create_app()


def config(app: Any, *, read_timeout: float = DEFAULT_READ_TIMEOUT, http: str = "auto", **kwargs: Any) -> uvicorn.Config:
    """A uvicorn config using the httptools protocol with the read deadline (default) or the
    h11 one (``http="h11"``). The deadline rides on the
    config, so ``--workers`` processes get it too."""
    protocol: type[Any] = DeadlineH11Protocol if http == "h11" else DeadlineHttpToolsProtocol
    cfg = uvicorn.Config(app, http=protocol, **kwargs)
    cfg.billing_read_timeout = read_timeout  # type: ignore[attr-defined]
    return cfg
