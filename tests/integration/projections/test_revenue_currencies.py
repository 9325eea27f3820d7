"""Revenue in the reporting currency, by hand: two currencies, a rate change between two wins,
amounts with no rate (unconverted, never added), the same numbers in the JSON of every group, the
CLI table, the HTTP API and the HTML headline; no FX file; a bad FX file. And what the time and
key rules do to a real store: a back-dated stage change is refused naming both times (so
`history --as-of` never shows a stage before the capture), and `Webinar ` is `webinar`.

FX (reporting EUR): USD 0.9 from 2026-01-01, 0.8 from 2026-03-01; no GBP rate.

  lead     captured (channel)          touches               won                         linear credit
  ada      02-01 webinar               -                     02-10 USD 1000 -> 900 EUR   webinar 1
  bob      02-02 "Webinar "            02-05 paid_search     03-05 USD 1000 -> 800 EUR   webinar .5, paid_search .5
  cy       02-03 referral              -                     02-20 EUR 500  -> 500 EUR   referral 1
  dee      02-04 Referral              -                     03-10 GBP 300  (no rate)    referral 1
  eve      2025-12-20 event            -                     2025-12-28 USD 100 (before the first USD rate)
  fay      02-06 organic               -                     02-28 23:59:59 USD 10 -> 9  organic 1
  gus      02-07 Organic               -                     03-01 00:00:00 usd 10 -> 8  organic 1
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from leadledger.bootstrap import bootstrap, open_analytics
from leadledger.cli import cli
from leadledger.http.app import create_app
from lifecycle.application import LeadLedger
from lifecycle.domain import commands as cmd
from lifecycle.settings import Settings
from projections.query import Query
from projections.report.html import render_report
from tests.support.env import TEST_SECRET

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

FX = """[fx]
USD = [{ from = "2026-01-01", rate = 0.9 }, { from = "2026-03-01", rate = 0.8 }]
"""
BANT = {"budget": "approved", "authority": "CFO", "need": "reporting", "timeline": "Q3"}


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def deal(app: LeadLedger, email: str, channel: str, captured: str, won: str, amount: float, currency: str,
         touches: tuple[tuple[str, str], ...] = ()) -> None:
    """Capture, touch, qualify and win one lead: every command applied."""
    at = t(captured)
    lead = cmd.LeadRef(email=email)
    hour = timedelta(hours=1)
    commands: list[cmd.LeadCommand] = [
        cmd.Capture(at, "test", None, email=email, channel=channel, campaign="Spring "),
        *(cmd.Touch(t(when), "test", None, lead=lead, channel=ch) for when, ch in touches),
        cmd.Score(at + hour, "test", None, lead=lead, total=90),
        cmd.Transition(at + 2 * hour, "test", None, lead=lead, trigger="qualify_mql"),
        cmd.Assign(at + 2 * hour, "test", None, lead=lead, owner="ana"),
        cmd.Transition(at + 3 * hour, "test", None, lead=lead, trigger="accept"),
        cmd.Transition(at + 4 * hour, "test", None, lead=lead, trigger="qualify_sql", bant=BANT),
        cmd.Transition(t(won), "test", None, lead=lead, trigger="win", amount=amount, currency=currency),
    ]
    for c in commands:
        outcome = app.execute(c)
        assert outcome.applied, outcome.error


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("revenue")
    app = bootstrap(Settings(home=home, secret=TEST_SECRET))
    try:
        deal(app, "ada@example.com", "webinar", "2026-02-01T09:00", "2026-02-10T09:00", 1000, "USD")
        deal(app, "bob@example.com", "Webinar ", "2026-02-02T09:00", "2026-03-05T09:00", 1000, "USD",
             touches=(("2026-02-05T09:00", "paid_search"),))
        deal(app, "cy@example.com", "referral", "2026-02-03T09:00", "2026-02-20T09:00", 500, "EUR")
        deal(app, "dee@example.com", "Referral", "2026-02-04T09:00", "2026-03-10T09:00", 300, "GBP")
        deal(app, "eve@example.com", "event", "2025-12-20T09:00", "2025-12-28T09:00", 100, "USD")
        deal(app, "fay@example.com", "organic", "2026-02-06T09:00", "2026-02-28T23:59:59", 10, "USD")
        deal(app, "gus@example.com", "Organic", "2026-02-07T09:00", "2026-03-01T00:00:00", 10, "usd")
    finally:
        app.store.close()
    (home / "fx.toml").write_text(FX, encoding="utf-8")
    return home


def settings(home: Path, fx: bool = True) -> Settings:
    return Settings(home=home, secret=TEST_SECRET, fx_file=home / "fx.toml" if fx else None)


def groups(result: dict[str, Any]) -> dict[str | None, tuple[float, float | None, dict[str, float] | None]]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 9)

    return {g["key"]: (r(g["conversions"]), r(g["revenue"]),
                       None if g["unconverted"] is None else {c: r(v) for c, v in g["unconverted"].items()})
            for g in result["groups"]}


def attribution(home: Path, fx: bool = True, **query: Any) -> dict[str, Any]:
    analytics = open_analytics(settings(home, fx))
    try:
        return analytics.attribution(Query(**query))
    finally:
        analytics.close()


WITH_FX = {
    "event": (1.0, 0.0, {"USD": 100.0}),
    "organic": (2.0, 17.0, {}),
    "paid_search": (0.5, 400.0, {}),
    "referral": (2.0, 500.0, {"GBP": 300.0}),
    "webinar": (1.5, 1300.0, {}),
}


def test_revenue_by_channel_is_converted_on_the_won_date(home: Path) -> None:
    result = attribution(home, by="channel")
    assert result["currency"] == "EUR"
    assert groups(result) == WITH_FX
    assert groups(attribution(home)) == {None: (7.0, 2217.0, {"GBP": 300.0, "USD": 100.0})}


def test_without_an_fx_file_only_reporting_currency_amounts_are_added(home: Path) -> None:
    assert groups(attribution(home, fx=False, by="channel")) == {
        "event": (1.0, 0.0, {"USD": 100.0}),
        "organic": (2.0, 0.0, {"USD": 20.0}),
        "paid_search": (0.5, 0.0, {"USD": 500.0}),
        "referral": (2.0, 500.0, {"GBP": 300.0}),
        "webinar": (1.5, 0.0, {"USD": 1500.0}),
    }


def test_as_of_and_known_at_convert_the_same_way(home: Path) -> None:
    before_rate_change = attribution(home, by="channel", as_of=t("2026-02-28T23:59:59"))
    assert groups(before_rate_change) == {"event": (1.0, 0.0, {"USD": 100.0}), "organic": (1.0, 9.0, {}),
                                          "referral": (1.0, 500.0, {}), "webinar": (1.0, 900.0, {})}
    exact = attribution(home, by="channel", known_at=datetime.now(UTC))  # the re-derived path
    assert groups(exact) == WITH_FX


def test_other_conversions_have_no_revenue(home: Path) -> None:
    result = attribution(home, conversion="mql")
    assert groups(result) == {None: (7.0, None, None)} and result["currency"] == "EUR"


def test_a_different_reporting_currency(home: Path, tmp_path: Path) -> None:
    fx = tmp_path / "usd.toml"
    fx.write_text('[fx]\nEUR = [{ from = "2026-01-01", rate = 1.25 }]\n', encoding="utf-8")
    analytics = open_analytics(Settings(home=home, secret=TEST_SECRET, fx_file=fx, reporting_currency="usd"))
    try:
        result = analytics.attribution(Query())
    finally:
        analytics.close()
    assert result["currency"] == "USD"
    assert groups(result) == {None: (7.0, 1000 + 1000 + 10 + 10 + 100 + 500 * 1.25, {"GBP": 300.0})}


# ---------------------------------------------------------------- the CLI, the API, the report


ENV = {"LEADLEDGER_SECRET": TEST_SECRET.decode(), "LEADLEDGER_POSTGRES_DSN": "", "LEADLEDGER_API_TOKEN": "",
       "LEADLEDGER_REPORTING_CURRENCY": ""}


def run(home: Path, *args: str, fx: Path | None = None, code: int = 0) -> str:
    env = {**ENV, "LEADLEDGER_FX_FILE": str(fx) if fx else ""}
    result = CliRunner().invoke(cli, ["--home", str(home), *args], env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_the_cli_json_and_table(home: Path) -> None:
    answer = orjson.loads(run(home, "attribution", "--by", "channel", "--json", fx=home / "fx.toml"))
    assert answer["currency"] == "EUR" and groups(answer) == WITH_FX
    table = run(home, "attribution", "--by", "channel", fx=home / "fx.toml")
    assert "revenue (EUR)" in table and "not converted" in table
    referral = next(line for line in table.splitlines() if "referral" in line)
    assert "500.00" in referral and "GBP 300.00" in referral
    assert "USD 100.00" in next(line for line in table.splitlines() if "event" in line)
    mql = run(home, "attribution", "--conversion", "mql", fx=home / "fx.toml")
    assert "not converted" not in mql
    assert "reporting currency" in run(home, "attribution", "--help")


def test_a_bad_fx_file_is_a_clear_error(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[fx]\nUSD = [{ from = "2026-01-01", rate = 0.9 }, { from = "2026-03-01", rate = -0.8 }]\n',
                   encoding="utf-8")
    for command in (["attribution"], ["funnel"], ["report", "--html", str(tmp_path / "r.html")]):
        out = run(home, *command, fx=bad, code=2)
        assert f"LEADLEDGER_FX_FILE {bad}: fx.USD[1].rate: must be a number > 0" in out, out


def test_the_http_api_sends_the_same_groups(home: Path) -> None:
    with TestClient(create_app(settings(home), None)) as client:
        body = client.get("/attribution", params={"by": "channel"}).json()
        schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert body["currency"] == "EUR" and groups(body) == WITH_FX
    assert "unconverted" in schema["AttributionGroup"]["properties"] and "currency" in schema["AttributionBody"][
        "properties"]


def test_the_report_headline_never_adds_currencies(home: Path) -> None:
    def page(fx: bool) -> str:
        analytics = open_analytics(settings(home, fx))
        try:
            return render_report(analytics, Query())
        finally:
            analytics.close()

    converted = page(True)
    assert '<span class="value">2,217 EUR</span><span class="label">won revenue (EUR); not converted: GBP 300 · ' \
           "USD 100</span>" in converted
    assert "Revenue (EUR)" in converted and "Not converted" in converted
    plain = page(False)
    assert '<span class="value">500 EUR</span><span class="label">won revenue (EUR); not converted: GBP 300 · ' \
           "USD 2,120</span>" in plain
    assert "2,920" not in plain and "3,220" not in plain  # 500 + 300 + 2,120: what adding currencies would give


# ---------------------------------------------------------------- keys and times in the store


def test_channel_keys_differing_only_in_case_are_one_funnel_row(home: Path) -> None:
    analytics = open_analytics(settings(home))
    try:
        by_channel = {g["key"]: g["stages"]["captured"] for g in analytics.funnel(Query(by="channel"))["groups"]}
        by_campaign = [g["key"] for g in analytics.funnel(Query(by="campaign"))["groups"]]
        webinar_leads = analytics.leads(Query(channel=" WEBINAR"))["leads"]
    finally:
        analytics.close()
    assert by_channel == {"event": 1, "organic": 2, "referral": 2, "webinar": 2}
    assert by_campaign == ["spring"]
    assert len(webinar_leads) == 2


def test_a_back_dated_stage_change_is_refused_and_history_never_shows_it(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, secret=TEST_SECRET)
    app = bootstrap(s)
    lead = cmd.LeadRef(email="zed@example.com")
    try:
        captured = app.execute(cmd.Capture(t("2026-03-02T09:00"), "test", None, email="zed@example.com",
                                           channel="webinar"))
        assert captured.applied
        early = app.execute(cmd.Transition(t("2026-03-01T09:00"), "test", None, lead=lead, trigger="qualify_mql",
                                           override=True, reason="demo request"))
        assert early.status == "refused" and early.error is not None
        assert str(captured.lead_id) in early.error
        assert "2026-03-01T09:00:00Z" in early.error and "2026-03-02T09:00:00Z" in early.error
        assert app.execute(cmd.Transition(t("2026-03-03T09:00"), "test", None, lead=lead, trigger="qualify_mql",
                                          override=True, reason="demo request")).applied
        before_mql = app.execute(cmd.Transition(t("2026-03-02T12:00"), "test", None, lead=lead,
                                                trigger="disqualify", reason="spam"))
        assert before_mql.status == "refused" and "latest stage change (into 'mql')" in str(before_mql.error)
        late_touch = app.execute(cmd.Touch(t("2026-03-02T12:00"), "test", None, lead=lead, channel="email"))
        assert late_touch.applied  # touches may arrive late between stage changes
        assert app.load(captured.lead_id) is not None and app.load(captured.lead_id).version == 3  # type: ignore[union-attr]
    finally:
        app.store.close()
    analytics = open_analytics(s)
    try:
        assert captured.lead_id is not None
        then = analytics.history(captured.lead_id, t("2026-03-01T12:00"))
        assert then is not None and then["stage"] is None and then["events"] == []
        assert analytics.velocity(Query())["groups"][0]["time_to_stage"]["mql"]["p50_s"] == 86400.0
    finally:
        analytics.close()
