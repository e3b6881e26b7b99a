"""The inline SVG charts: valid XML, escaped text, sensible axes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from billing_engine.money import format_minor
from billing_engine.reports.charts import Series, bar_chart, line_chart, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    assert nice_ticks(0, 23840) == [0, 5000, 10000, 15000, 20000, 25000]
    assert nice_ticks(-4900, 20000)[0] <= -4900
    assert nice_ticks(0, 0) == [0, 1]
    assert nice_ticks(0, 3) == [0, 1, 2, 3]


def test_line_chart_is_valid_svg_with_one_point_per_period() -> None:
    svg = line_chart(["2026-01", "2026-02", "2026-03"], [Series("MRR", [1700, 3400, 0])], title="MRR <USD>",
                     fmt=lambda v: format_minor(v, "USD"))
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert len(root.findall(f"{SVG}circle")) == 3
    assert root.find(f"{SVG}title").text == "MRR <USD>"  # escaped in the markup, intact once parsed
    assert "34.00" in svg and "<USD>" not in svg


def test_stacked_bars_stack_and_skip_zeros() -> None:
    svg = bar_chart(["a", "b"], [Series("voluntary", [2, 0]), Series("involuntary", [1, 3])], title="Churn")
    rects = [r for r in ET.fromstring(svg).iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(rects) == 3  # the zero bar is not drawn
    a_vol, a_inv = rects[0], rects[1]
    assert float(a_inv.get("y")) + float(a_inv.get("height")) == float(a_vol.get("y"))  # stacked on top


def test_negative_values_draw_below_the_axis() -> None:
    svg = bar_chart(["x"], [Series("net", [-500])], title="Net & refunds", fmt=str)
    ET.fromstring(svg)
    assert "Net &amp; refunds" in svg


def test_charts_scale_with_a_viewbox_and_keep_the_legend_between_title_and_plot() -> None:
    many = [Series(f"plan-{i:02d}", [i, 2 * i]) for i in range(12)]  # a legend wider than a phone
    for width in (720, 360):
        root = ET.fromstring(bar_chart(["a", "b"], many, title="Net revenue by plan", width=width))
        assert root.get("viewBox", "").startswith(f"0 0 {width} ") and root.get("width") is None
        plot = next(r for r in root.iter(f"{SVG}rect") if r.get("class") == "plot-area")
        legend = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "legend")
        texts = legend.findall(f"{SVG}text")
        assert len(texts) == 12
        for t in texts:
            assert 18 < float(t.get("y")) < float(plot.get("y"))  # below the title, above the plot
            assert float(t.get("x")) + 7 * len(t.text or "") <= width  # wraps instead of running off
        assert float(plot.get("y")) + float(plot.get("height")) < float(root.get("viewBox").split()[3])
