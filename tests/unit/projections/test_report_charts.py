"""The report's number formats and inline SVG charts (pure functions, no IO)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from itertools import pairwise

import pytest

from projections.report import charts
from projections.report.charts import Series


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "–"), (0, "0 s"), (42.4, "42 s"), (150, "2.5 min"), (1800, "30 min"), (3 * 3600 + 720, "3.2 h"),
     (4.1 * 86400, "4.1 d"), (400 * 86400, "400 d")],
)
def test_durations_read_like_a_person_would_say_them(seconds: float | None, text: str) -> None:
    assert charts.fmt_duration(seconds) == text


def test_numbers_have_thousands_separators() -> None:
    assert charts.fmt_int(1234567) == "1,234,567"
    assert charts.fmt_number(12.345) == "12.3"
    assert charts.fmt_number(3000.0) == "3,000"
    assert charts.fmt_money(1_234_567.0) == "1.23 M"
    assert charts.fmt_money(45_210.0) == "45 k"
    assert charts.fmt_money(9_876.0) == "9,876"
    assert charts.fmt_percent(0.4567) == "45.7 %"
    assert charts.fmt_percent(None) == "–"


@pytest.mark.parametrize("maximum", [0.3, 7, 10, 99, 1234, 5e6])
def test_ticks_are_round_and_cover_the_maximum(maximum: float) -> None:
    ticks = charts.nice_ticks(maximum)
    assert ticks[0] == 0 and ticks[-1] >= maximum
    assert 2 <= len(ticks) <= 12
    steps = {round(b - a, 9) for a, b in pairwise(ticks)}
    assert len(steps) == 1


def test_duration_ticks_use_the_largest_fitting_unit() -> None:
    ticks, label = charts.duration_ticks(62 * 86400)
    assert ticks[-1] >= 62 * 86400
    assert label(ticks[1]).endswith(" d")
    ticks, label = charts.duration_ticks(40 * 60)
    assert label(ticks[1]).endswith(" min")


def test_bar_chart_is_well_formed_svg_with_escaped_labels() -> None:
    nasty = "<script>alert('x')</script> & co"
    svg = charts.bar_chart(
        ["webinar", nasty],
        [Series("p50", charts.BLUE, [120.0, None]), Series("p90", charts.VERMILLION, [3600.0, 7200.0])],
        title="Time <in> stage", value_label=charts.fmt_duration, axis_label="time",
        ticks=charts.duration_ticks,
    )
    root = ET.fromstring(svg)  # parses: well-formed, every user string escaped
    assert root.tag == "svg" and root.get("role") == "img"
    assert "<script" not in svg
    texts = ["".join(t.itertext()) for t in root.iter("text")]
    assert any("alert" in t for t in texts)  # the label is shown (cut or whole), as text
    assert "2.0 min" in texts and "–" in texts  # value labels, an empty statistic as a dash
    assert root.find("title") is not None and root.find("desc") is not None


def test_funnel_chart_shows_counts_and_conversions() -> None:
    svg = charts.funnel_chart([("Captured", 3000), ("MQL", 1380), ("Won", 0)], [0.46, None], title="Funnel")
    root = ET.fromstring(svg)
    texts = ["".join(t.itertext()) for t in root.iter("text")]
    assert "3,000" in texts and "1,380" in texts and "0" in texts
    assert any("46.0 %" in t for t in texts) and any("–" in t for t in texts)


def test_long_labels_are_cut_with_the_whole_name_as_a_tooltip() -> None:
    name = "a-very-long-channel-name-from-an-upstream-system-" * 3
    svg = charts.bar_chart([name], [Series("x", charts.GREEN, [1.0])], title="t",
                           value_label=charts.fmt_number, axis_label="n")
    root = ET.fromstring(svg)
    label = next(t for t in root.iter("text") if (t.text or "").endswith("…"))
    tooltip = label.find("title")
    assert tooltip is not None and tooltip.text == name
