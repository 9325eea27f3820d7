"""The reasons figures end to end: leads lost, disqualified, recycled and rejected by sales with
reasons, queried through the service and the CLI, in a window, as of an instant, known at an
instant (one disqualification recorded late), by owner (the owner at each event), channel and
campaign; the same table whether projected batch by batch or replayed. Runs on SQLite and PostgreSQL.

Days from D0 = Monday 2026-03-02 00:00Z; every lead is captured D0 08:00. The window is [D1, D6).
  ann  web, spring:  owner ana, sql D1 09:00, lost D1 10:00 "price"
  ben  web, -:       owner ana, reassigned to ben D2 09:00, sql, lost D2 10:00 "price"
  cat  event, spring: disqualified D1 12:00 "spam" (no owner)
  dan  event, -:     owner ana, rejected D2 11:00 "not yet" (owner cleared), MQL again, owner ben,
                     lost D4 10:00 "competitor", recycled D4 12:00 "not now" (still ben's)
  eve  web, spring:  owner ana, lost D0 15:00 "price" (before the window), recycled D1 09:00 "upsell"
  fay  web, spring:  owner ben, lost D6 10:00 "budget" (at the window's end: outside)
  gus  event, spring: disqualified D5 23:00 "spam"
  ivy  web, spring:  owner ben, rejected D1 15:00 "not now"
  hal  web, -:       disqualified D2 09:00 "duplicate", recorded after the instant K
"""

from __future__ import annotations

import re
import time
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
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource
from projections.query import Query, QueryError
from projections.reasons import EVENTS
from tests.support.env import TEST_SECRET

D0 = datetime(2026, 3, 2, tzinfo=UTC)
BANT = {"budget": "approved", "authority": "CTO", "need": "audit trail", "timeline": "Q2"}
WINDOW = {"from_": D0 + timedelta(days=1), "to": D0 + timedelta(days=6)}


def at(day: int, hour: int) -> datetime:
    return D0 + timedelta(days=day, hours=hour)


class History:
    def __init__(self, app: LeadLedger) -> None:
        self.app = app

    def capture(self, name: str, channel: str, campaign: str | None) -> UUID:
        out = self.app.execute(cmd.Capture(occurred_at=at(0, 8), actor="test", message_key=None,
                                           email=f"{name}@example.com", channel=channel, campaign=campaign))
        assert out.lead_id is not None
        return out.lead_id

    def fire(self, lead: UUID, trigger: str, when: datetime, **data: Any) -> None:
        out = self.app.execute(cmd.Transition(occurred_at=when, actor="test", message_key=None,
                                              lead=cmd.LeadRef(lead_id=lead), trigger=trigger, **data))
        assert out.event is not None, out

    def assign(self, lead: UUID, owner: str, when: datetime) -> None:
        out = self.app.execute(cmd.Assign(occurred_at=when, actor="test", message_key=None,
                                          lead=cmd.LeadRef(lead_id=lead), owner=owner))
        assert out.event is not None, out

    def to_sal(self, lead: UUID, owner: str, when: datetime) -> None:
        """Assigned to `owner`, qualified by override and accepted by sales, an hour apart from `when`."""
        self.assign(lead, owner, when)
        self.fire(lead, "qualify_mql", when + timedelta(hours=1), override=True, reason="met them at the fair")
        self.fire(lead, "accept", when + timedelta(hours=2))


def scenario(app: LeadLedger) -> datetime:
    """The leads above; returns K, the instant after everything but hal's disqualification was recorded."""
    h = History(app)
    ann, ben, eve, fay, ivy, hal = (h.capture(n, "web", c) for n, c in (
        ("ann", "spring"), ("ben", None), ("eve", "spring"), ("fay", "spring"), ("ivy", "spring"), ("hal", None)))
    cat, dan, gus = (h.capture(n, "event", c) for n, c in (("cat", "spring"), ("dan", None), ("gus", "spring")))
    h.to_sal(ann, "ana", at(0, 9))
    h.fire(ann, "qualify_sql", at(1, 9), bant=BANT)
    h.fire(ann, "lose", at(1, 10), reason="price")
    h.to_sal(ben, "ana", at(0, 9))
    h.assign(ben, "ben", at(2, 9))
    h.fire(ben, "qualify_sql", at(2, 9) + timedelta(minutes=30), bant=BANT)
    h.fire(ben, "lose", at(2, 10), reason="price")
    h.fire(cat, "disqualify", at(1, 12), reason="spam")
    h.to_sal(dan, "ana", at(1, 8))
    h.fire(dan, "reject", at(2, 11), reason="not yet")
    h.fire(dan, "qualify_mql", at(3, 9), override=True, reason="asked again")
    h.assign(dan, "ben", at(3, 12))
    h.fire(dan, "accept", at(3, 13))
    h.fire(dan, "qualify_sql", at(3, 14), bant=BANT)
    h.fire(dan, "lose", at(4, 10), reason="competitor")
    h.fire(dan, "recycle", at(4, 12), reason="not now")
    h.to_sal(eve, "ana", at(0, 9))
    h.fire(eve, "qualify_sql", at(0, 12), bant=BANT)
    h.fire(eve, "lose", at(0, 15), reason="price")
    h.fire(eve, "recycle", at(1, 9), reason="upsell")
    h.to_sal(fay, "ben", at(0, 9))
    h.fire(fay, "qualify_sql", at(5, 9), bant=BANT)
    h.fire(fay, "lose", at(6, 10), reason="budget")
    h.fire(gus, "disqualify", at(5, 23), reason="spam")
    h.to_sal(ivy, "ben", at(0, 9))
    h.fire(ivy, "reject", at(1, 15), reason="not now")
    time.sleep(0.01)
    known = datetime.now(UTC)
    time.sleep(0.01)
    h.fire(hal, "disqualify", at(2, 9), reason="duplicate")
    return known


def counted(answer: dict[str, Any]) -> dict[str | None, tuple[int, list[tuple[str, int]]]]:
    """key -> (events, [(reason, count)] in the answer's order); checks each share is count / events."""
    out = {}
    for g in answer["groups"]:
        for r in g["reasons"]:
            assert r["share"] == pytest.approx(r["count"] / g["events"])
        out[g["key"]] = (g["events"], [(r["reason"], r["count"]) for r in g["reasons"]])
    return out


@pytest.fixture
def stored(app: LeadLedger, backend_settings: Settings) -> tuple[Settings, datetime]:
    return backend_settings, scenario(app)


def test_reasons_per_stage_in_the_window(stored: tuple[Settings, datetime]) -> None:
    analytics = open_analytics(stored[0])
    try:
        lost = analytics.reasons(Query(stage="lost", **WINDOW))
        assert (lost["stage"], lost["from"], lost["to"], lost["as_of"], lost["known_at"], lost["by"]) == (
            "lost", "2026-03-03T00:00:00.000000Z", "2026-03-08T00:00:00.000000Z", None, None, None)
        # ann and ben "price", dan "competitor"; eve's loss (D0) and fay's (D6) are outside
        assert lost["events"] == 3
        assert counted(lost) == {None: (3, [("price", 2), ("competitor", 1)])}
        assert lost["groups"][0]["reasons"][0]["share"] == pytest.approx(2 / 3)
        # cat and gus "spam", hal "duplicate"
        assert counted(analytics.reasons(Query(stage="disqualified", **WINDOW))) == {
            None: (3, [("spam", 2), ("duplicate", 1)])}
        # every event entering recycled: dan's and ivy's rejections, dan's and eve's recycles
        assert counted(analytics.reasons(Query(stage="recycled", **WINDOW))) == {
            None: (4, [("not now", 2), ("not yet", 1), ("upsell", 1)])}
        assert counted(analytics.reasons(Query(stage="rejected", **WINDOW))) == {
            None: (2, [("not now", 1), ("not yet", 1)])}
        # unbounded: eve's and fay's losses too
        assert counted(analytics.reasons(Query(stage="lost"))) == {
            None: (5, [("price", 3), ("budget", 1), ("competitor", 1)])}
        empty = analytics.reasons(Query(stage="lost", from_=at(7, 0)))
        assert (empty["events"], empty["groups"]) == (0, [])
    finally:
        analytics.close()


def test_by_owner_channel_and_campaign(stored: tuple[Settings, datetime]) -> None:
    analytics = open_analytics(stored[0])
    try:
        # ben's loss is ben's (reassigned before it); dan's loss is ben's, his rejection ana's
        assert counted(analytics.reasons(Query(stage="lost", by="owner", **WINDOW))) == {
            "ana": (1, [("price", 1)]), "ben": (2, [("competitor", 1), ("price", 1)])}
        # a rejection and a recycle clear the owner: each counts under the owner it cleared
        assert counted(analytics.reasons(Query(stage="recycled", by="owner", **WINDOW))) == {
            "ana": (2, [("not yet", 1), ("upsell", 1)]), "ben": (2, [("not now", 2)])}
        assert counted(analytics.reasons(Query(stage="disqualified", by="owner", **WINDOW))) == {
            None: (3, [("spam", 2), ("duplicate", 1)])}
        assert counted(analytics.reasons(Query(stage="lost", by="channel", **WINDOW))) == {
            "event": (1, [("competitor", 1)]), "web": (2, [("price", 2)])}
        by_campaign = analytics.reasons(Query(stage="disqualified", by="campaign", **WINDOW))
        assert [g["key"] for g in by_campaign["groups"]] == ["(none)", "spring"]
        assert counted(by_campaign) == {"(none)": (1, [("duplicate", 1)]), "spring": (2, [("spam", 2)])}
    finally:
        analytics.close()


def test_as_of_and_known_at(stored: tuple[Settings, datetime]) -> None:
    settings, known = stored
    analytics = open_analytics(settings)
    try:
        # as of D4 11:00: dan's recycle (D4 12:00) and gus's disqualification (D5 23:00) had not occurred
        as_of = at(4, 11)
        assert counted(analytics.reasons(Query(stage="disqualified", as_of=as_of, **WINDOW))) == {
            None: (2, [("duplicate", 1), ("spam", 1)])}
        assert counted(analytics.reasons(Query(stage="recycled", as_of=as_of, **WINDOW))) == {
            None: (3, [("not now", 1), ("not yet", 1), ("upsell", 1)])}
        assert counted(analytics.reasons(Query(stage="lost", as_of=as_of, **WINDOW))) == {
            None: (3, [("price", 2), ("competitor", 1)])}
        # known at K: hal's disqualification was recorded later
        late = analytics.reasons(Query(stage="disqualified", known_at=known, **WINDOW))
        assert late["known_at"] is not None
        assert counted(late) == {None: (2, [("spam", 2)])}
        assert counted(analytics.reasons(Query(stage="disqualified", as_of=as_of, known_at=known, **WINDOW))) == {
            None: (1, [("spam", 1)])}
        # the exact path re-derives the owners too
        assert counted(analytics.reasons(Query(stage="recycled", by="owner", known_at=known, **WINDOW))) == {
            "ana": (2, [("not yet", 1), ("upsell", 1)]), "ben": (2, [("not now", 2)])}
        assert analytics.reasons(Query(stage="lost", known_at=D0))["groups"] == []
    finally:
        analytics.close()


@pytest.mark.parametrize(("q", "message"), [
    (Query(), "reasons needs --stage: one of lost, disqualified, recycled, rejected"),
    (Query(stage="won"), "--stage must be one of lost, disqualified, recycled, rejected, got 'won'"),
    (Query(stage="lost", by="stage"), "--by must be one of channel, campaign, owner"),
    (Query(stage="lost", mode="period"), "reasons takes no --mode"),
    (Query(stage="lost", from_=at(2, 0), to=at(1, 0)), "must be before --to"),
])
def test_bad_parameters_say_what_is_allowed(stored: tuple[Settings, datetime], q: Query, message: str) -> None:
    analytics = open_analytics(stored[0])
    try:
        with pytest.raises(QueryError, match=re.escape(message)):
            analytics.reasons(q)
    finally:
        analytics.close()


def test_replay_builds_the_table_projecting_builds(stored: tuple[Settings, datetime], app: LeadLedger) -> None:
    def table(replay: bool) -> list[tuple[Any, ...]]:
        runner = Runner(open_read_models(stored[0]))
        try:
            runner.setup()
            runner.reset()
            if replay:
                runner.replay(EmbeddedSource(app.store), workers=1)
            else:
                runner.catch_up(EmbeddedSource(app.store), 7)
            return sorted(runner.dump()[EVENTS.name])
        finally:
            runner.db.close()

    projected = table(replay=False)
    assert sorted((r[2], r[3], r[4]) for r in projected) == sorted([
        ("lost", 0, "price"), ("lost", 0, "price"), ("lost", 0, "price"), ("lost", 0, "competitor"),
        ("lost", 0, "budget"), ("disqualified", 0, "spam"), ("disqualified", 0, "spam"),
        ("disqualified", 0, "duplicate"), ("recycled", 1, "not yet"), ("recycled", 1, "not now"),
        ("recycled", 0, "not now"), ("recycled", 0, "upsell")])
    assert table(replay=True) == projected


def test_the_cli_answers_the_same_figures(stored: tuple[Settings, datetime]) -> None:
    settings = stored[0]
    env = {"LEADLEDGER_SECRET": TEST_SECRET.decode(), "LEADLEDGER_POSTGRES_DSN": settings.postgres_dsn or "",
           "LEADLEDGER_POSTGRES_SCHEMA": settings.postgres_schema, "LEADLEDGER_API_TOKEN": ""}

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--home", str(settings.home), "reasons", *args], env=env,
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    answer = orjson.loads(run("--stage", "Lost", "--by", "owner", "--from", "2026-03-03", "--to", "2026-03-08",
                              "--json"))
    assert list(answer) == ["stage", "from", "to", "as_of", "known_at", "by", "events", "groups"]
    assert answer["groups"] == [
        {"key": "ana", "events": 1, "reasons": [{"reason": "price", "count": 1, "share": 1.0}]},
        {"key": "ben", "events": 2, "reasons": [{"reason": "competitor", "count": 1, "share": 0.5},
                                                {"reason": "price", "count": 1, "share": 0.5}]}]
    assert answer["events"] == 3
    table = run("--stage", "recycled", "--from", "2026-03-03", "--to", "2026-03-08")
    assert "recycled" in table and "not now" in table and "upsell" in table and "50.0" in table
    missing = CliRunner().invoke(cli, ["--home", str(settings.home), "reasons"], env=env)
    assert missing.exit_code == 2 and "--stage" in missing.output
