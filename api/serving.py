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
import logging
import pickle
import signal
import socket
import sys
import threading
import time
from collections.abc import Generator
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors.multiprocess import Multiprocess, Process

try:  # httptools: a C parser; without it (no wheel for the platform) uvicorn's pure-Python h11 serves
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol

    HAVE_HTTPTOOLS = True
except ImportError:  # pragma: no cover - httptools is a dependency; tests/ops/test_serving.py hides it
    _HttpToolsProtocol = H11Protocol  # type: ignore[misc,assignment]
    HAVE_HTTPTOOLS = False

logger = logging.getLogger("uvicorn.error")

DEFAULT_READ_TIMEOUT = 30.0  # seconds from a request's first byte to its last body byte
DEFAULT_KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open (uvicorn's default)
DEFAULT_GRACEFUL_TIMEOUT = 30  # seconds in-flight requests may take after SIGTERM
_STOP_SIGNALS = frozenset(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name))


class _ReadDeadline:
    """A deadline on reading each request (headers and body), for uvicorn's h11 and
    httptools protocols (both keep the request being read in ``self.cycle``, with
    ``more_body`` / ``response_complete`` / ``disconnected`` / ``message_event``). Mixed in
    before the protocol class: its hooks call the protocol's, then arm / disarm."""

    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    logger: Any

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)  # type: ignore[call-arg]  # the protocol class after this one
        self._init_deadline(config)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        self._after_data()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

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


class DeadlineHttpToolsProtocol(_ReadDeadline, _HttpToolsProtocol):
    """uvicorn's httptools protocol (a C parser: per request it costs a fraction of the CPU
    h11 spends) with :class:`_ReadDeadline`. The default of ``billing serve`` when httptools
    is installed (:data:`HAVE_HTTPTOOLS`); without it this is the h11 one."""


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
    import gc
    import os

    gc.disable()  # while importing the app (FastAPI, pydantic, ...): no garbage, only a growing heap to re-scan
    try:
        from api.app import create_app
    finally:
        gc.enable()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no prctl: orphans stay possible
            pass
        if os.getppid() == 1:  # pragma: no cover - the supervisor died before prctl
            os.kill(os.getpid(), signal.SIGTERM)
    try:
        app = create_app()
    except Exception as exc:  # noqa: BLE001 - whatever it is, the next worker would fail the same way
        # one line, and uvicorn's STARTUP_FAILURE: the supervisor stops instead of starting a new
        # worker every second, each printing a traceback (`billing serve` then exits 78)
        logger.error("a worker could not start: %s", str(exc) or type(exc).__name__)
        sys.exit(STARTUP_FAILURE)
    return freeze_heap(app)


def freeze_heap(app: Any) -> Any:
    """Move everything allocated so far (the imports and the app: ~200,000 objects) out of
    the garbage collector's reach (``gc.freeze``): they live as long as the process, and a
    full collection scanning them stopped a worker for 70-80 ms every ~1,500 list requests
    (all its in-flight requests waited: a p99 of its own). Returns ``app``."""
    import gc

    gc.collect()
    gc.freeze()
    return app


def config(app: Any, *, read_timeout: float = DEFAULT_READ_TIMEOUT, http: str = "auto", **kwargs: Any) -> uvicorn.Config:
    """A uvicorn config using the httptools protocol with the read deadline (default) or the
    h11 one (``http="h11"``, or when httptools is not installed). The deadline rides on the
    config, so ``--workers`` processes get it too."""
    protocol: type[Any] = DeadlineH11Protocol if http == "h11" or not HAVE_HTTPTOOLS else DeadlineHttpToolsProtocol
    cfg = uvicorn.Config(app, http=protocol, **kwargs)  # configures the logging
    cfg.billing_read_timeout = read_timeout  # type: ignore[attr-defined]
    if not HAVE_HTTPTOOLS and http != "h11":
        logger.warning("httptools is not installed: serving with uvicorn's pure-Python h11 parser "
                       "(same behaviour, more CPU per request)")
    return cfg


def reuse_port_sockets(cfg: uvicorn.Config, count: int) -> list[socket.socket] | None:
    """``count`` listening sockets on ``cfg.host:cfg.port``, each with ``SO_REUSEPORT``: one
    per worker, so that the kernel spreads new connections over the workers (by a hash of
    the client's address and port). With one shared socket, the worker that wakes first
    accepts every pending connection at once (asyncio accepts up to the backlog per wake-up):
    50 keep-alive clients opened together were split 42/8, 49/1, 44/6 between two workers,
    and the busy one's queue made the p99. None where the kernel does not balance
    ``SO_REUSEPORT`` sockets (not Linux) or for a Unix socket / file descriptor: then the
    caller uses uvicorn's one shared socket. ``SO_REUSEPORT`` lets another process of the
    same user bind the port too, which the shared socket's ``SO_REUSEADDR`` did not."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT") or cfg.uds or cfg.fd is not None:
        return None
    family = socket.AF_INET6 if cfg.host and ":" in cfg.host else socket.AF_INET
    sockets: list[socket.socket] = []
    port = cfg.port
    try:
        for _ in range(count):
            sockets.append(_reuse_port_socket(family, cfg.host, port))
            port = sockets[-1].getsockname()[1]  # --port 0: the others join the port the first one got
    except OSError as exc:
        for sock in sockets:
            sock.close()
        logger.error(exc)
        sys.exit(STARTUP_FAILURE)  # as uvicorn's own bind does
    host = f"[{cfg.host}]" if family == socket.AF_INET6 else cfg.host
    logger.info("Uvicorn running on %s://%s:%d (Press CTRL+C to quit)", "https" if cfg.is_ssl else "http", host, port)
    return sockets


def _reuse_port_socket(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


class SpreadMultiprocess(Multiprocess):
    """uvicorn's supervisor with one listening socket per worker (:func:`reuse_port_sockets`):
    worker ``i`` (and its replacement, if it dies or on SIGHUP) serves ``sockets[i]`` only."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.per_worker = sockets

    def _spawn(self, idx: int) -> Process:
        process = Process(self.config, [self.per_worker[idx]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._spawn(idx) for idx in range(self.processes_num)]

    def restart_all(self) -> None:  # pragma: no cover - SIGHUP; uvicorn's, with each worker's own socket
        for idx, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = self._spawn(idx)
            if not new_process.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new_process.kill()
                new_process.join()
                if not self.should_exit.is_set():
                    logger.error("New child process [%s] was not ready in time; keeping worker [%s] and "
                                 "aborting the restart.", new_process.pid, old_process.pid)
                return
            old_process.terminate()
            old_process.join()
            self.processes[idx] = new_process

    def handle_ttin(self) -> None:  # pragma: no cover - SIGTTIN: one more worker, on a socket of its own
        logger.info("Received SIGTTIN, increasing the number of processes.")
        first = self.per_worker[0]
        try:
            self.per_worker.append(_reuse_port_socket(first.family, *first.getsockname()[:2]))
        except OSError as exc:
            logger.error("cannot add a worker: %s", exc)
            return
        self.processes_num += 1
        self.processes.append(self._spawn(len(self.per_worker) - 1))

    def handle_ttou(self) -> None:  # pragma: no cover - SIGTTOU: one worker less, and its socket closed
        logger.info("Received SIGTTOU, decreasing number of processes.")
        if self.processes_num <= 1:
            logger.info("Already reached one process, cannot decrease the number of processes anymore.")
            return
        self.processes_num -= 1
        process = self.processes.pop()
        process.terminate()
        process.join()
        self.per_worker.pop().close()  # else the kernel would go on sending connections to it

    def _stopping(self) -> bool:
        """SIGTERM / SIGINT received (queued for the main loop) or the exit already decided."""
        return self.should_exit.is_set() or any(sig in self.signal_queue for sig in _STOP_SIGNALS)

    def _answers(self, process: Process) -> bool:
        """uvicorn's health ping, waited for in 1 s steps: a worker that does not answer (busy,
        stopped, stuck starting) is given ``timeout_worker_healthcheck`` as before, but a
        SIGTERM meanwhile is acted on within a second instead of after the whole timeout."""
        if not process.process.is_alive():
            return False
        deadline = time.monotonic() + self.config.timeout_worker_healthcheck
        try:
            process.parent_conn.send(b"ping")
            while not process.parent_conn.poll(max(0.0, min(1.0, deadline - time.monotonic()))):
                if self._stopping():
                    return True  # not judged: every worker is about to be terminated anyway
                if time.monotonic() >= deadline:
                    return False
            process.parent_conn.recv()
            return True
        except (OSError, EOFError, pickle.UnpicklingError):
            return False

    def keep_subprocess_alive(self) -> None:  # uvicorn's, with each worker's own socket
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if self._stopping():
                return
            if self._answers(process):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # would fail the same way on every restart
                logger.error("Child process [%s] failed to start, stopping the parent process.", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():  # pragma: no cover
                return
            logger.info("Child process [%s] died", process.pid)
            self.processes[idx] = self._spawn(idx)
