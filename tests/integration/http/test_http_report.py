"""The HTML report (`leadledger report --html FILE` and GET /report) on a real simulated store
with hostile names from upstream: four sections, the parameters, valid self-contained HTML,
every user string escaped."""

from __future__ import annotations

import re
import warnings
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from leadledger.bootstrap import open_analytics
from leadledger.cli import cli
from leadledger.http.app import create_app
from lifecycle.settings import Settings
from projections.query import Query
from projections.report.html import render_report
from schemas.times import parse_user_time

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SECRET = "http-report-test-secret"
ENV = {"LEADLEDGER_SECRET": SECRET, "LEADLEDGER_POSTGRES_DSN": "", "LEADLEDGER_API_TOKEN": ""}
EVIL_CHANNEL = "<script>alert('channel')</script>"
EVIL_CAMPAIGN = '<img src=x onerror="alert(1)">'
EVIL_OWNER = '<b>Bo & "Co"</b>'
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def run_cli(home: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], env=ENV, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("report")
    run_cli(home, "simulate", "--leads", "300", "--seed", "5")
    email = "mallory@example.com"
    steps = [
        ["capture", "--email", email, "--channel", EVIL_CHANNEL, "--campaign", EVIL_CAMPAIGN],
        ["score", email, "--total", "95"],
        ["transition", email, "qualify_mql"],
        ["assign", email, "--owner", EVIL_OWNER],
        ["contact", email],
        ["transition", email, "accept"],
        ["transition", email, "qualify_sql", "--budget", "b", "--authority", "a", "--need", "n", "--timeline", "t"],
        ["transition", email, "win", "--amount", "12345.5", "--currency", "EUR"],
    ]
    for minute, step in enumerate(steps):
        run_cli(home, *step, "--at", f"2026-03-02T09:{minute:02d}:00Z")
    return home


@pytest.fixture(scope="module")
def settings(home: Path) -> Settings:
    return Settings(home=home, secret=SECRET.encode())


@pytest.fixture(scope="module")
def page(home: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("out") / "report.html"
    out = run_cli(home, "report", "--html", str(path), "--as-of", "2026-12-01", "--model", "u_shaped")
    assert str(path.resolve()) in out  # says where it went
    return path.read_text(encoding="utf-8")


class StrictParser(HTMLParser):
    """Fails on a closing tag that does not match the open one; collects text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, Any]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"</{tag}> closes nothing"
        opened = self.stack.pop()
        assert opened == tag, f"</{tag}> closes <{opened}>"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed: {parser.stack}"
    return parser


def test_the_report_has_the_four_sections_and_its_parameters(page: str, home: Path) -> None:
    parsed = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    ids = {attrs.get("id") for tag, attrs in parsed.tags if tag == "section"}
    assert {"funnel", "velocity", "attribution", "speed"} <= ids
    text = " ".join(parsed.text)
    for heading in ("Funnel", "Time in stage", "Attribution", "Speed to lead by owner"):
        assert heading in text
    assert "As of" in text and "2026-12-01" in text
    assert "U-shaped" in text and "Generated" in text
    assert sum(1 for tag, _ in parsed.tags if tag == "svg") >= 4  # a chart per section

    funnel = orjson.loads(run_cli(home, "funnel", "--as-of", "2026-12-01", "--json"))
    captured = funnel["groups"][0]["stages"]["captured"]
    assert f"{captured:,}" in text


def test_the_report_is_self_contained(page: str) -> None:
    lowered = page.lower()
    for banned in ("<script", "http://", "https://", "<link", "@import", "url(", "<iframe", "<object"):
        assert banned not in lowered, banned
    parsed = parse(page)
    assert all(not name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    csp = next(a["content"] for tag, a in parsed.tags if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "script-src" not in csp


def test_user_strings_are_escaped(page: str) -> None:
    for raw in (EVIL_CHANNEL, EVIL_CAMPAIGN, EVIL_OWNER, "<b>", "<img"):
        assert raw not in page
    assert "&lt;script&gt;alert(&#x27;channel&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;Bo &amp; &quot;Co&quot;&lt;/b&gt;" in page
    parsed = parse(page)
    text = " ".join(parsed.text)
    assert EVIL_CHANNEL in text and EVIL_OWNER in text  # shown as text, exactly


def test_get_report_serves_the_same_page(settings: Settings, page: str) -> None:
    with TestClient(create_app(settings, None)) as client:
        response = client.get("/report", params={"as_of": "2026-12-01", "model": "u_shaped"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]  # no script could run
    assert response.headers["x-content-type-options"] == "nosniff"

    def without_generated(html: str) -> str:
        return re.sub(r"<dt>Generated</dt><dd>[^<]*</dd>", "", html)

    assert without_generated(response.text) == without_generated(page)


def test_other_conversions_and_periods(settings: Settings) -> None:
    analytics = open_analytics(settings)
    try:
        analytics.refresh()
        mql = render_report(analytics, Query(conversion="mql", mode="period", from_=_t("2026-02-01"),
                                             to=_t("2026-03-01")))
        empty = render_report(analytics, Query(as_of=_t("2020-01-01")))
    finally:
        analytics.close()
    parse(mql)
    assert "2026-02-01 to 2026-03-01" in mql and "period mode" in mql
    assert "won revenue" not in mql and "Attributed MQL by channel" in mql
    parse(empty)
    assert "No leads in this period." in empty and "2020-01-01" in empty


def _t(day: str) -> Any:
    return parse_user_time(day)


def section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}">')
    return page[start:page.index("</section>", start)]


def cells(html: str) -> list[list[str]]:
    """The table rows of a section, each cell's text."""
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", html):
        rows.append([unescape(re.sub(r"<[^>]+>", "", c)).strip()
                     for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)])
    return rows


def test_the_trend_section_is_the_funnel_per_month(page: str, home: Path) -> None:
    trend = orjson.loads(run_cli(home, "funnel", "--as-of", "2026-12-01", "--interval", "month", "--json"))
    rows = cells(section(page, "trend"))[1:]
    assert [r[0] for r in rows] == [iv["label"] for iv in trend["intervals"]] and len(rows) >= 2
    for row, iv in zip(rows, trend["intervals"], strict=True):
        stages = iv["groups"][0]["stages"]
        assert row[1:5] == [f"{stages[s]:,}" for s in ("captured", "mql", "sal", "won")]
    assert "<polyline" in section(page, "trend")


def test_the_plan_section_shows_what_plan_answers_next_to_the_period_before(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "plan.html"
    run_cli(home, "report", "--html", str(path), "--as-of", "2026-07-01", "--plan-revenue", "400000",
            "--plan-period", "2026-07-01..2026-10-01")
    html = section(path.read_text(encoding="utf-8"), "plan")
    plan = orjson.loads(run_cli(home, "plan", "--revenue", "400000", "--period", "2026-07-01..2026-10-01",
                                "--by", "channel", "--as-of", "2026-07-01", "--json"))
    before = orjson.loads(run_cli(home, "funnel", "--by", "channel", "--mode", "period", "--from", "2026-04-01",
                                  "--to", "2026-07-01", "--as-of", "2026-07-01", "--json"))
    had = {g["key"]: g["stages"] for g in before["groups"]}
    rows = {r[0]: r for r in cells(html)[1:]}
    assert set(rows) == {g["key"] for g in plan["groups"]}
    planned = [g for g in plan["groups"] if g["leads_needed"] is not None]
    assert planned
    for g in planned:
        assert rows[g["key"]][3].startswith(f"{g['leads_needed']:,} vs {had.get(g['key'], {}).get('captured', 0):,}")
        assert rows[g["key"]][5].startswith(f"{g['sal_needed']:,} vs {had.get(g['key'], {}).get('sal', 0):,}")
    assert "[2026-04-01, 2026-07-01)" in html
    refused = CliRunner().invoke(cli, ["--home", str(home), "report", "--html", str(path), "--plan-revenue", "5"],
                                 env=ENV)
    assert refused.exit_code == 2 and "go together" in refused.output


@pytest.mark.parametrize("params", [{"as_of": "2026-12-01"},
                                    {"mode": "period", "from": "2026-01-20", "to": "2026-02-20"},
                                    {"from": "2026-01-10", "to": "2026-02-01", "known_at": "2099-01-01"}])
def test_each_funnel_count_links_to_exactly_its_leads(settings: Settings, params: dict[str, str]) -> None:
    """Every count of the funnel section links to the API's drill-down: paged through, it lists as many
    leads as the count says (and as the funnel answers for the same window)."""
    with TestClient(create_app(settings, None)) as client:
        page = client.get("/report", params=params).text
        section = page[page.index('<section id="funnel">'):]
        section = section[:section.index("</section>")]
        links = re.findall(r'<a href="(/leads\?[^"]+)">([0-9,]+)</a>', section)
        funnel = client.get("/funnel", params=params).json()["groups"][0]["stages"]
        assert len(links) == 9  # the five main-path stages and the four detours
        stages = set()
        for href, shown in links:
            url = href.replace("&amp;", "&")
            stage = re.search(r"reached=(\w+)", url)[1]  # type: ignore[index]
            stages.add(stage)
            seen: list[str] = []
            after = ""
            while True:
                body = client.get(url + "&limit=40" + after).json()
                assert body["mode"] == params.get("mode", "cohort") and body["reached"] == stage
                seen += [lead["lead_id"] for lead in body["leads"]]
                if body["next"] is None:
                    break
                after = f"&after={body['next']}"
            assert len(seen) == len(set(seen)) == int(shown.replace(",", "")) == funnel[stage], (params, stage)
        assert stages == set(funnel)
