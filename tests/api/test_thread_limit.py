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


def test_report_exports_in_flight_do_not_hold_up_quick_requests(engine: Engine, clock: Clock,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Long work (reports, the dashboard, imports, a run-cycle through the API) has a pool of
    its own: with BILLING_API_THREADS=1 and two slow exports running, a list still answers at
    once (in the one quick thread the exports would otherwise hold)."""
    import api.routers.reports as reports_router
    from tests.api.conftest import AUTH

    real = reports_router.run_report

    def slow_report(*args: object, **kwargs: object) -> object:
        time.sleep(1.5)  # a large database
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reports_router, "run_report", slow_report)
    app = create_app(settings=load_settings(admin_tokens=[TOKEN], api_threads=1, database_url=engine.url.render_as_string(
        hide_password=False)), engine=engine, gateway=FakeGateway(), clock=clock)
    with TestClient(app, headers=AUTH) as c, ThreadPoolExecutor(2) as pool:
        exports = [pool.submit(c.get, "/v1/reports/revenue", params={"format": "csv"}) for _ in range(2)]
        time.sleep(0.4)  # both exports are in their 1.5 s
        t = time.perf_counter()
        quick = c.get("/v1/plans")
        waited = time.perf_counter() - t
        assert not all(e.done() for e in exports)
        assert [e.result().status_code for e in exports] == [200, 200]
    assert quick.status_code == 200
    assert waited < 0.8, f"the list waited {waited:.2f} s behind the exports"
