"""Which thread a request's work runs in.

- **Quick requests** (every synchronous endpoint: lists, shows, cancel pages, POSTs) run in
  the worker's default thread pool, ``BILLING_API_THREADS`` threads (default 8; anyio's own
  default is 40): requests beyond it wait in line, first come first served. With 25
  in-flight requests per worker in 25 threads, each held the interpreter lock in turn for
  5 ms slices: every request took ~25 times its own CPU time to finish and the switching
  cost CPU of its own (bench/README.md, "Tenth round").
- **Long work** (:func:`long_running`: report exports, the dashboard, imports, a run-cycle
  started through the API) runs in a separate pool of :data:`LONG_THREADS` threads per
  worker, so that a few exports of a large database never take the threads a customer's
  cancel page is waiting for. More long requests than that wait for each other only.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar

LONG_THREADS = 4  # per worker process

P = ParamSpec("P")
R = TypeVar("R")

_long: RunVar[CapacityLimiter] = RunVar("billing_long_running_limiter")


def lifespan(threads: int) -> Callable[[Any], Any]:
    """The app's lifespan: at start-up, ``threads`` becomes the size of the default thread
    pool of this worker's event loop (where the synchronous endpoints run)."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    return run


def _long_limiter() -> CapacityLimiter:
    try:
        return _long.get()
    except LookupError:
        limiter = CapacityLimiter(LONG_THREADS)
        _long.set(limiter)
        return limiter


def long_running(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """A synchronous endpoint that may take seconds, run in the long-work pool instead of
    the quick requests' one. FastAPI sees the same parameters (``functools.wraps``) and an
    ``async`` endpoint; its dependencies are still solved as before."""

    @functools.wraps(fn)
    async def endpoint(*args: P.args, **kwargs: P.kwargs) -> R:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=_long_limiter())

    return endpoint
