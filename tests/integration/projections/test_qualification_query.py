"""The qualification figures end to end: MQLs of each source stored (a person's override, a guard
passed on an upstream score, leadledger's scorer), queried through the service and the HTML report,
as of an instant, and the same tables whether projected batch by batch or replayed. Runs on SQLite
and PostgreSQL.

Days from D0 = Monday 2026-03-02 00:00Z; every lead is captured D0 08:00.
  ann  override MQL D0 10:00, won D2
  ben  upstream score 90, MQL D0 10:00 (external), never won
  cat  upstream score 90, the scorer's MQL D1 09:00, won D3 10:00
  dan  override MQL D1 10:00, rejected, upstream score 90, MQL D2 10:00 (external), won D4
  eve  override MQL D0 13:00, won D1, recycled (upsell), upstream score 95, MQL D3 09:00 (external)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import pytest
from click.testing import CliRunner

from leadledger.bootstrap import open_analytics, open_read_models
from leadledger.cli import cli
from lifecycle.application import LeadLedger
from lifecycle.domain import commands as cmd
from lifecycle.settings import Settings
from lifecycle.store.repository import Changes
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource
from projections.qualification import ENTRIES, WINS
from projections.query import Query
from projections.report.charts import fmt_percent
from projections.report.html import render_report
from tests.support.env import TEST_SECRET

D0 = datetime(2026, 3, 2, tzinfo=UTC)
BANT = {"budget": "approved", "authority": "CTO", "need": "audit trail", "timeline": "Q2"}


def at(day: int, hour: int) -> datetime:
    return D0 + timedelta(days=day, hours=hour)


class History:
    def __init__(self, app: LeadLedger) -> None:
        self.app = app

    def capture(self, name: str) -> UUID:
        out = self.app.execute(cmd.Capture(occurred_at=at(0, 8), actor="test", message_key=None,
                                           email=f"{name}@example.com", channel="web"))
        assert out.lead_id is not None
        return out.lead_id

    def fire(self, lead: UUID, trigger: str, when: datetime, **data: Any) -> None:
        out = self.app.execute(cmd.Transition(occurred_at=when, actor="test", message_key=None,
                                              lead=cmd.LeadRef(lead_id=lead), trigger=trigger, **data))
        assert out.event is not None, out

    def score(self, lead: UUID, when: datetime, total: int) -> None:
        self.app.execute(cmd.Score(occurred_at=when, actor="test", message_key=None, lead=cmd.LeadRef(lead_id=lead),
                                   total=total))

    def override(self, lead: UUID, when: datetime) -> None:
        self.fire(lead, "qualify_mql", when, override=True, reason="met them at the fair")

    def by_scorer(self, lead: UUID, when: datetime) -> None:
        """The scorer's MQL: the command layer refuses its actor, so it is recorded on the aggregate."""
        loaded = self.app.store.load(lead)
        assert loaded is not None
        loaded.lead.transition("qualify_mql", occurred_at=when, actor="scorer", mql_threshold=self.app.mql_threshold())
        self.app.store.commit(Changes(leads=[loaded]))

    def win(self, lead: UUID, when: datetime) -> None:
        self.app.execute(cmd.Assign(occurred_at=when - timedelta(hours=3), actor="test", message_key=None,
                                    lead=cmd.LeadRef(lead_id=lead), owner="ana"))
        self.fire(lead, "accept", when - timedelta(hours=2))
        self.fire(lead, "qualify_sql", when - timedelta(hours=1), bant=BANT)
        self.fire(lead, "win", when, amount=1000.0, currency="EUR")


def scenario(app: LeadLedger) -> None:
    h = History(app)
    ann, ben, cat, dan, eve = (h.capture(n) for n in ("ann", "ben", "cat", "dan", "eve"))
    h.override(ann, at(0, 10))
    h.win(ann, at(2, 12))
    h.score(ben, at(0, 9), 90)
    h.fire(ben, "qualify_mql", at(0, 10))
    h.score(cat, at(0, 9), 90)
    h.by_scorer(cat, at(1, 9))
    h.win(cat, at(3, 10))
    h.override(dan, at(1, 10))
    h.fire(dan, "reject", at(1, 11), reason="not yet")
    h.score(dan, at(2, 9), 90)
    h.fire(dan, "qualify_mql", at(2, 10))
    h.win(dan, at(4, 12))
    h.override(eve, at(0, 13))
    h.win(eve, at(1, 12))
    h.fire(eve, "recycle", at(2, 8), reason="upsell")
    h.score(eve, at(2, 9), 95)
    h.fire(eve, "qualify_mql", at(3, 9))


def figures(answer: dict[str, Any]) -> dict[str, tuple[int, int, int, float | None]]:
    return {r["source"]: (r["entries"], r["leads"], r["won"], r["rate"]) for r in [*answer["sources"], answer["total"]]}


@pytest.fixture
def stored(app: LeadLedger, backend_settings: Settings) -> Settings:
    scenario(app)
    return backend_settings


def test_mqls_by_source_and_their_rate_to_won(stored: Settings) -> None:
    analytics = open_analytics(stored)
    try:
        assert figures(analytics.qualification(Query())) == {
            "scorer": (1, 1, 1, 1.0), "external": (3, 3, 1, pytest.approx(1 / 3)), "override": (3, 3, 3, 1.0),
            "all": (7, 5, 4, 0.8)}
        window = analytics.qualification(Query(from_=at(1, 0), to=at(3, 0)))
        assert (window["from"], window["to"]) == ("2026-03-03T00:00:00.000000Z", "2026-03-05T00:00:00.000000Z")
        assert figures(window) == {"scorer": (1, 1, 1, 1.0), "external": (1, 1, 1, 1.0),
                                   "override": (1, 1, 1, 1.0), "all": (3, 2, 2, 1.0)}
        # as of D3 11:00: cat's win (D3 10:00) is in, dan's (D4) not yet
        assert figures(analytics.qualification(Query(as_of=at(3, 11)))) == {
            "scorer": (1, 1, 1, 1.0), "external": (3, 3, 0, 0.0), "override": (3, 3, 2, pytest.approx(2 / 3)),
            "all": (7, 5, 3, 0.6)}
        # known at now: the exact path re-derives the same rows; known before anything was stored: none
        assert figures(analytics.qualification(Query(known_at=datetime.now(UTC)))) == figures(
            analytics.qualification(Query()))
        assert figures(analytics.qualification(Query(known_at=D0)))["all"] == (0, 0, 0, None)
    finally:
        analytics.close()


def test_replay_builds_the_tables_projecting_builds(stored: Settings, app: LeadLedger) -> None:
    def tables(replay: bool) -> dict[str, list[tuple[Any, ...]]]:
        runner = Runner(open_read_models(stored))
        try:
            runner.setup()
            runner.reset()
            if replay:
                runner.replay(EmbeddedSource(app.store), workers=1)
            else:
                runner.catch_up(EmbeddedSource(app.store), 7)
            dump = runner.dump()
            return {t: sorted(dump[t]) for t in (ENTRIES.name, WINS.name)}
        finally:
            runner.db.close()

    projected = tables(replay=False)
    assert sorted(r[2] for r in projected[ENTRIES.name]) == ["external"] * 3 + ["override"] * 3 + ["scorer"]
    assert tables(replay=True) == projected


def test_the_report_shows_the_qualification_section(stored: Settings) -> None:
    analytics = open_analytics(stored)
    try:
        page = render_report(analytics, Query(as_of=at(5, 0)))
    finally:
        analytics.close()
    section = page[page.index('<section id="qualification">'):]
    section = section[:section.index("</section>")]
    assert "Qualification: where MQLs come from" in section
    assert (f"7 MQL entries qualified 5 leads ({fmt_percent(1 / 7, 0)} by the scorer, {fmt_percent(3 / 7, 0)} on an "
            f"upstream score, {fmt_percent(3 / 7, 0)} by override); {fmt_percent(0.8)} of those leads were won after"
            ) in section
    for name, cells in (("Scorer (automatic)", "<td class=num>1</td><td class=num>1</td><td class=num>1</td>"),
                        ("Upstream score", "<td class=num>3</td><td class=num>3</td><td class=num>1</td>"),
                        ("Override", "<td class=num>3</td><td class=num>3</td><td class=num>3</td>"),
                        ("All sources", "<td class=num>7</td><td class=num>5</td><td class=num>4</td>")):
        assert f'<th scope="row">{name}</th>{cells}' in section
    assert "<svg" in section


def test_the_cli_answers_the_same_figures(stored: Settings) -> None:
    env = {"LEADLEDGER_SECRET": TEST_SECRET.decode(), "LEADLEDGER_POSTGRES_DSN": stored.postgres_dsn or "",
           "LEADLEDGER_POSTGRES_SCHEMA": stored.postgres_schema, "LEADLEDGER_API_TOKEN": ""}
    result = CliRunner().invoke(cli, ["--home", str(stored.home), "qualification", "--from", "2026-03-03",
                                      "--as-of", "2026-03-05T11:00:00Z", "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    answer = orjson.loads(result.stdout)
    assert (answer["from"], answer["to"], answer["as_of"]) == (
        "2026-03-03T00:00:00.000000Z", None, "2026-03-05T11:00:00.000000Z")
    # from D1, as of D3 11:00: cat (scorer, won D3 10:00); dan's and eve's upstream-score MQLs, neither won
    # after them yet; dan's override (won only on D4)
    assert figures(answer) == {"scorer": (1, 1, 1, 1.0), "external": (2, 2, 0, 0.0), "override": (1, 1, 0, 0.0),
                               "all": (4, 3, 1, 0.333333333)}
    table = CliRunner().invoke(cli, ["--home", str(stored.home), "qualification"], env=env, catch_exceptions=False)
    assert table.exit_code == 0, table.output
    assert "scorer" in table.stdout and "mql -> won" in table.stdout
