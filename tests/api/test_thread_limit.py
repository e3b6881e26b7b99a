"""BILLING_API_THREADS: how many requests one API worker runs at once; the rest wait in
line and are answered after, none is refused."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.app import create_app
from billing_engine.gateway.fake import FakeGateway
from billing_engine.settings import load_settings
from tests.api.conftest import TOKEN, Clock


def _most_at_once(engine: Engine, clock: Clock, requests: int, **settings: object) -> tuple[int, list[int]]:
    """Send ``requests`` requests at once to a (synchronous) endpoint that takes 0.3 s; return
    how many ran at the same time at most, and the status codes."""
    app = create_app(settings=load_settings(admin_tokens=[TOKEN], database_url=engine.url.render_as_string(
        hide_password=False), **settings), engine=engine, gateway=FakeGateway(), clock=clock)
    lock = threading.Lock()
    running = [0, 0]  # now, most

    @app.get("/_slow")
    def slow() -> dict[str, bool]:
        with lock:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return {"ok": True}

    with TestClient(app) as c, ThreadPoolExecutor(requests) as pool:
        codes = list(pool.map(lambda _: c.get("/_slow").status_code, range(requests)))
    return running[1], codes


@pytest.mark.parametrize(("threads", "expected"), [({}, 8), ({"api_threads": 2}, 2)])
def test_a_worker_runs_at_most_its_threads_at_once_and_answers_the_rest_after(
        engine: Engine, clock: Clock, threads: dict[str, int], expected: int) -> None:
    most, codes = _most_at_once(engine, clock, 12, **threads)
    assert most == expected  # the server library's own pool would have run all 12 at once
    assert codes == [200] * 12


def test_the_thread_count_is_checked() -> None:
    from billing_engine.errors import ConfigurationError

    with pytest.raises((ConfigurationError, ValueError), match="api_threads|API_THREADS"):
        load_settings(api_threads=0)
