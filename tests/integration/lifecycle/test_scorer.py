"""The scorer inside `operate` over a real store (SQLite and PostgreSQL): given captures, touches and a
published `[scoring]` → the `LeadScored` and automatic `LeadQualifiedAsMQL` it appends, and what the router
then does with the new MQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

from lifecycle.application import LeadLedger
from lifecycle.domain import commands as cmd
from lifecycle.operate import OperatorRunner
from lifecycle.policies import PolicyStream

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = MONDAY + timedelta(days=10)
SCORING = """
[scoring]
threshold = 60
auto_mql = true
[[scoring.fit]]
id = "large-company"
when = { employees_gte = 200 }
points = 20
[[scoring.fit]]
id = "free-mail"
when = { email_domain_kind = "free" }
points = -30
[[scoring.behaviour]]
id = "webinar"
when = { touch_kind = "webinar_attended" }
points = 25
half_life = "1d"
[[scoring.behaviour]]
id = "pages"
when = { channel = "web" }
points = 5
max_per_day = 10
"""
ROUTING = """
[calendars.always]
timezone = "UTC"
hours = { mon = "00:00-24:00", tue = "00:00-24:00", wed = "00:00-24:00", thu = "00:00-24:00", fri = "00:00-24:00", sat = "00:00-24:00", sun = "00:00-24:00" }
[reps.maria]
calendar = "always"
[routing]
on = ["mql"]
[[routing.rules]]
id = "all"
pool = { maria = 1 }
"""


def _publish(app: LeadLedger, text: str) -> None:
    PolicyStream(app.store).publish(text, actor="test", now=MONDAY - timedelta(days=1))


def _ref(lead: UUID) -> cmd.LeadRef:
    return cmd.LeadRef(lead_id=lead)


def _capture(app: LeadLedger, email: str, at: datetime = MONDAY, **attributes: Any) -> UUID:
    out = app.execute(cmd.Capture(occurred_at=at, actor="test", message_key=None, email=email, channel="ads",
                                  **attributes))
    assert out.lead_id is not None
    return out.lead_id


def _touch(app: LeadLedger, lead: UUID, at: datetime, kind: str, channel: str = "webinar") -> None:
    app.execute(cmd.Touch(occurred_at=at, actor="test", message_key=None, lead=_ref(lead), channel=channel,
                          kind=kind))


def _operate(app: LeadLedger, now: datetime = NOW) -> dict[str, int]:
    return dict(OperatorRunner(app.store).run_once(now).decisions)


def _events(app: LeadLedger, lead: UUID) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(type, actor, time, data) of the lead's events in stream order."""
    out = []
    for _, stream, _, state in app.store.iter_raw():
        if stream == lead:
            envelope = orjson.loads(state)
            out.append((envelope["type"].split(".")[2], envelope["actor"], envelope["time"], envelope["data"]))
    return out


def _scores(app: LeadLedger, lead: UUID) -> list[tuple[str, int, float, int, list[dict[str, Any]]]]:
    return [(time, d["fit"], d["behaviour"], d["total"], d["contributions"])
            for name, actor, time, d in _events(app, lead) if name == "LeadScored" and actor == "scorer"]


class TestScorer:
    def test_scores_at_capture_and_at_each_touch_that_changes_the_total(self, app: LeadLedger) -> None:
        _publish(app, SCORING)
        lead = _capture(app, "ada@example.com", employees=500)
        _touch(app, lead, MONDAY + timedelta(hours=1), "webinar_attended")
        _touch(app, lead, MONDAY + timedelta(hours=1), "newsletter_open", channel="email")  # no rule: same total
        _touch(app, lead, MONDAY + timedelta(days=1, hours=1), "webinar_attended")
        assert _operate(app) == {"score": 3}
        assert _scores(app, lead) == [
            ("2026-03-02T09:00:00.000000Z", 20, 0.0, 20, [{"rule": "large-company", "points": 20}]),
            ("2026-03-02T10:00:00.000000Z", 20, 25.0, 45,
             [{"rule": "large-company", "points": 20}, {"rule": "webinar", "points": 25.0}]),
            # a day later the first webinar counts half: 20 + 12.5 + 25 = 57.5, rounded half up
            ("2026-03-03T10:00:00.000000Z", 20, 37.5, 58,
             [{"rule": "large-company", "points": 20}, {"rule": "webinar", "points": 37.5}]),
        ]
        scored = [d for name, actor, _, d in _events(app, lead) if name == "LeadScored"]
        assert {(d["model"], d["policy_version"]) for d in scored} == {("policy:v1", 1)}
        assert app.load(lead).score == 58  # type: ignore[union-attr]
        assert _operate(app) == {}  # a second run decides nothing again

    def test_reaching_the_threshold_qualifies_the_lead_and_the_router_assigns_it(self, app: LeadLedger) -> None:
        _publish(app, ROUTING + SCORING)
        lead = _capture(app, "ada@example.com", employees=500)
        _touch(app, lead, MONDAY + timedelta(hours=1), "webinar_attended")
        _touch(app, lead, MONDAY + timedelta(hours=2), "webinar_attended")
        # 20 + 25 × 2^(-1/24) + 25 = 69.28…: 69 >= 60
        assert _operate(app) == {"score": 3, "qualify": 1, "assign": 1}
        tail = [(name, actor, time) for name, actor, time, _ in _events(app, lead)][-3:]
        assert tail == [("LeadScored", "scorer", "2026-03-02T11:00:00.000000Z"),
                        ("LeadQualifiedAsMQL", "scorer", "2026-03-02T11:00:00.000000Z"),
                        ("LeadAssigned", "router", "2026-03-02T11:00:00.000000Z")]
        mql = next(d for name, _, _, d in _events(app, lead) if name == "LeadQualifiedAsMQL")
        assert mql == {"from_stage": "captured", "to_stage": "mql", "score": 69, "override": False,
                       "reason": "score 69 >= threshold 60 (policy v1)"}
        loaded = app.load(lead)
        assert loaded is not None and loaded.stage.value == "mql" and loaded.owner == "maria"

    def test_a_lead_already_past_marketing_is_scored_but_not_qualified(self, app: LeadLedger) -> None:
        _publish(app, SCORING)
        lead = _capture(app, "ada@example.com", employees=500)
        app.execute(cmd.Transition(occurred_at=MONDAY + timedelta(minutes=5), actor="test", message_key=None,
                                   lead=_ref(lead), trigger="qualify_mql", override=True, reason="event"))
        for hours in (1, 2, 3):
            _touch(app, lead, MONDAY + timedelta(hours=hours), "webinar_attended")
        decided = _operate(app)
        assert "qualify" not in decided and decided["score"] == 4  # scoring goes on in every stage

    def test_a_catch_up_does_not_qualify_where_the_stored_history_moved_on(self, app: LeadLedger) -> None:
        """The operator runs after the lead was nurtured: qualifying it at the earlier touches would put a
        stage change before a stored one, so it is scored there but not qualified."""
        _publish(app, SCORING)
        lead = _capture(app, "ada@example.com", employees=500)
        _touch(app, lead, MONDAY + timedelta(hours=1), "webinar_attended")
        _touch(app, lead, MONDAY + timedelta(hours=2), "webinar_attended")
        app.execute(cmd.Transition(occurred_at=MONDAY + timedelta(hours=5), actor="test", message_key=None,
                                   lead=_ref(lead), trigger="nurture"))
        assert _operate(app) == {"score": 3}
        _touch(app, lead, MONDAY + timedelta(hours=6), "webinar_attended")  # after the stored stage change
        assert _operate(app) == {"score": 1, "qualify": 1}
        assert app.load(lead).stage.value == "mql"  # type: ignore[union-attr]

    def test_negative_points_clamp_and_the_threshold_is_the_policys(self, app: LeadLedger) -> None:
        _publish(app, SCORING)
        lead = _capture(app, "bob@gmail.com", employees=10)
        _touch(app, lead, MONDAY + timedelta(hours=1), "page_view", channel="web")
        assert _operate(app) == {"score": 1}  # -30 → 0 at capture, -25 → 0 at the touch: no change
        assert _scores(app, lead) == [("2026-03-02T09:00:00.000000Z", -30, 0.0, 0,
                                       [{"rule": "free-mail", "points": -30}])]
        # the guard of a transition uses the policy's threshold (60), not the configured default
        app.execute(cmd.Score(occurred_at=MONDAY + timedelta(hours=2), actor="test", message_key=None,
                              lead=_ref(lead), total=65))
        app.execute(cmd.Transition(occurred_at=MONDAY + timedelta(hours=3), actor="test", message_key=None,
                                   lead=_ref(lead), trigger="qualify_mql"))
        assert app.load(lead).stage.value == "mql"  # type: ignore[union-attr]

    def test_an_upstream_score_counts_for_the_guard_but_does_not_hide_the_scorers(self, app: LeadLedger) -> None:
        _publish(app, SCORING.replace("auto_mql = true", "auto_mql = false"))
        lead = _capture(app, "ada@example.com", employees=500)
        _operate(app)
        app.execute(cmd.Score(occurred_at=MONDAY + timedelta(minutes=30), actor="test", message_key=None,
                              lead=_ref(lead), total=30))
        _touch(app, lead, MONDAY + timedelta(hours=1), "newsletter_open", channel="email")  # the scorer: still 20
        assert _operate(app) == {}
        assert app.load(lead).score == 30  # type: ignore[union-attr]
        refused = app.execute(cmd.Transition(occurred_at=MONDAY + timedelta(hours=2), actor="test", message_key=None,
                                             lead=_ref(lead), trigger="qualify_mql"))
        assert refused.status == "refused" and refused.error is not None
        assert "latest score total is 30, below the MQL threshold 60" in refused.error

    def test_no_scoring_section_no_scorer(self, app: LeadLedger) -> None:
        _publish(app, ROUTING)
        lead = _capture(app, "ada@example.com", employees=500)
        _touch(app, lead, MONDAY + timedelta(hours=1), "webinar_attended")
        assert _operate(app) == {}

    def test_one_run_or_many_small_ones_decide_the_same(self, app: LeadLedger) -> None:
        _publish(app, ROUTING + SCORING)
        leads = [_capture(app, f"p{i}@firm{i}.example", MONDAY + timedelta(minutes=i), employees=100 * i)
                 for i in range(6)]
        for i, lead in enumerate(leads):
            for k in range(i):
                _touch(app, lead, MONDAY + timedelta(hours=1 + k, minutes=i), "webinar_attended")
        whole = OperatorRunner(app.store, batch=100_000)
        whole.run_once(NOW)
        expected = {lead: _events(app, lead) for lead in leads}
        # a restart from nothing rebuilds the same state: nothing more to decide
        again = OperatorRunner(app.store, batch=1)
        assert again.run_once(NOW).decisions == {}
        assert whole.operator is not None and again.operator is not None
        assert {k: v.scored for k, v in again.operator.leads.items()} == {
            k: v.scored for k, v in whole.operator.leads.items()}
        assert {lead: _events(app, lead) for lead in leads} == expected
