"""The dashboard in a real headless Chromium: log in through the form, render the charts,
save a screenshot to test-artifacts/dashboard.png."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy.engine import Engine

from api.app import create_app
from billing_engine.gateway.fake import FakeGateway
from billing_engine.settings import load_settings
from tests.reports.small import RANGE, build

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-token"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.browser


def _need_chromium() -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(sqlite_engine: Engine) -> Iterator[str]:
    _need_chromium()
    build(sqlite_engine)
    app = create_app(settings=load_settings(admin_tokens=[TOKEN]), engine=sqlite_engine, gateway=FakeGateway(),
                     clock=lambda: datetime(2026, 4, 2, tzinfo=UTC))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        if time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


GEOMETRY = """() => {
  const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const charts = [...document.querySelectorAll('svg[role=img]')].filter(s => s.getBoundingClientRect().width > 0);
  return {
    scrollWidth: document.documentElement.scrollWidth,
    charts: charts.map(svg => {
      const box = svg.getBoundingClientRect();
      const title = svg.querySelector('.chart-title').getBoundingClientRect();
      const plot = svg.querySelector('.plot-area').getBoundingClientRect();
      const legend = [...svg.querySelectorAll('.legend > *')].map(e => e.getBoundingClientRect());
      return {left: box.left, right: box.right, width: box.width, height: box.height,
              fontPx: svg.querySelector('.chart-title').getBoundingClientRect().height,
              legendOverTitle: legend.some(l => overlap(l, title)),
              legendInPlot: legend.some(l => overlap(l, plot)),
              legendOutside: legend.some(l => l.left < box.left - 0.5 || l.right > box.right + 0.5),
              legendItems: legend.length};
    }),
  };
}"""

DESKTOP = {"viewport": {"width": 1500, "height": 1100}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


@pytest.mark.parametrize(("name", "device"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_dashboard_renders_in_chromium(server: str, name: str, device: dict[str, object]) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"dashboard-{name}.png"
    width = device["viewport"]["width"]  # type: ignore[index]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_context(**device).new_page()  # type: ignore[arg-type]
            page.goto(f"{server}/dashboard")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{server}/dashboard")
            page.goto(f"{server}/dashboard?from={RANGE[0]}&to={RANGE[1]}")
            assert page.locator("svg polyline:visible").count() == 3  # the MRR line, GRR and NRR
            assert page.locator("svg rect title").count() > 3  # churn + revenue bars
            geo = page.evaluate(GEOMETRY)
            # the page fits the screen: no sideways scrolling (the wide table scrolls in its own box)
            assert geo["scrollWidth"] <= width, geo["scrollWidth"]
            charts = geo["charts"]
            assert len(charts) == 5  # one rendering of each chart is shown
            for c in charts:
                assert 0 <= c["left"] and c["right"] <= width, c
                assert c["width"] > (300 if width < 600 else 500) and c["height"] > 150, c
                assert c["fontPx"] >= 10, c  # the title stays readable after scaling
                assert not c["legendOverTitle"] and not c["legendInPlot"] and not c["legendOutside"], c
            assert sum(c["legendItems"] for c in charts) >= 4  # churn (2 entries x 2) + revenue legend
            assert "Sign out" in page.content()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
