"""The scoring back-test over hand-built logs, every number by hand.

The model: threshold 50; fit `large` (employees >= 200) +30; behaviour `webinar` +25 and `page` +5 (no
decay, no cap) and `unsubscribed` -100. So a large company's lead scores 30 at capture, 35 after a page
view, 60 after a webinar; a small one needs two webinars (50).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.operations.fairness import Window
from lifecycle.operations.operator import Seen
from lifecycle.operations.policy import Scoring, parse_policy
from lifecycle.operations.scoring import PRE_MQL_STAGES, evaluate
from lifecycle.operations.scoring_backtest import (
    Backtest,
    LeadFacts,
    Model,
    auc,
    backtest,
    deciles,
    fold,
    nearest_rank_p50,
    would_be_mql,
)


def _scoring(text: str) -> Scoring:
    scoring = parse_policy(text).scoring
    assert scoring is not None
    return scoring


MODEL_TEXT = """
[scoring]
threshold = 50
[[scoring.fit]]
id = "large"
when = { employees_gte = 200 }
points = 30
[[scoring.behaviour]]
id = "webinar"
when = { touch_kind = "webinar_attended" }
points = 25
[[scoring.behaviour]]
id = "page"
when = { touch_kind = "page_view" }
points = 5
[[scoring.behaviour]]
id = "unsubscribed"
when = { touch_kind = "unsubscribed" }
points = -100
"""
MODEL = Model("candidate", "candidate.toml", _scoring(MODEL_TEXT))
#: the same rules, a threshold of 70 (no lead here reaches it before its webinar pair)
STRICT = Model("published", "policy:v1", _scoring(MODEL_TEXT.replace("threshold = 50", "threshold = 70")))

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
LARGE = {"employees": 500}
SMALL = {"employees": 10}
L = [uuid5(UUID(int=0), f"lead-{n}") for n in range(20)]


class Log:
    """Seen events in store order: positions 1, 2, …; each lead's versions 1, 2, …"""

    def __init__(self) -> None:
        self.events: list[Seen] = []
        self.versions: dict[UUID, int] = {}

    def add(self, lead: UUID, name: str, at: datetime, actor: str = "crm", **data: Any) -> None:
        self.versions[lead] = self.versions.get(lead, 0) + 1
        self.events.append(Seen(len(self.events) + 1, lead, self.versions[lead], name, at, actor,
                                f"e{len(self.events) + 1}", data))

    def capture(self, lead: UUID, at: datetime, attributes: dict[str, Any]) -> None:
        self.add(lead, "LeadCaptured", at, "web-forms", channel="web", attributes=attributes, from_stage=None,
                 to_stage="captured")

    def touch(self, lead: UUID, at: datetime, kind: str) -> None:
        self.add(lead, "LeadTouched", at, "marketing-automation", kind=kind, channel="web", campaign=None)

    def stage(self, lead: UUID, at: datetime, name: str, to_stage: str, actor: str = "crm") -> None:
        self.add(lead, name, at, actor, from_stage=None, to_stage=to_stage)

    def won(self, lead: UUID, at: datetime) -> None:
        """The way to a win: accepted, sql, won (an hour apart, the win at `at`)."""
        self.stage(lead, at - 2 * H, "LeadAcceptedBySales", "sal")
        self.stage(lead, at - H, "LeadQualifiedAsSQL", "sql")
        self.stage(lead, at, "LeadWon", "won")


def _run(log: Log, *models: Model, window: Window | None = None, at_age: timedelta = 7 * D) -> Backtest:
    return backtest(log.events, models or (MODEL,), window or Window(), at_age=at_age, default_threshold=60)


def _facts(log: Log, lead: UUID) -> LeadFacts:
    return next(f for f in fold(log.events, Window()).leads if f.lead == lead)


def _instant(log: Log, lead: UUID, model: Model = MODEL, threshold: int = 50) -> datetime | None:
    at = would_be_mql(model.scoring, threshold, _facts(log, lead))
    return None if at is None else datetime.fromtimestamp(at / 1e6, UTC)


class TestWouldBeMQL:
    def test_the_first_instant_the_score_reaches_the_threshold(self) -> None:
        log = Log()
        log.capture(L[0], T0, LARGE)  # 30
        log.touch(L[0], T0 + H, "page_view")  # 35
        log.touch(L[0], T0 + 2 * H, "webinar_attended")  # 60: here
        log.touch(L[0], T0 + 3 * H, "webinar_attended")  # 85
        log.capture(L[1], T0, SMALL)  # 0
        log.touch(L[1], T0 + H, "webinar_attended")  # 25
        log.touch(L[1], T0 + 3 * H, "webinar_attended")  # 50: here (reaching is enough)
        log.capture(L[2], T0, SMALL)
        log.touch(L[2], T0 + H, "page_view")  # 5: never
        assert _instant(log, L[0]) == T0 + 2 * H
        assert _instant(log, L[1]) == T0 + 3 * H
        assert _instant(log, L[2]) is None
        assert _instant(log, L[0], STRICT, 70) == T0 + 3 * H

    def test_the_capture_is_an_instant(self) -> None:
        log = Log()
        log.capture(L[0], T0, LARGE)
        assert _instant(log, L[0], threshold=30) == T0
        assert _instant(log, L[0], threshold=31) is None

    def test_the_instants_go_by_occurred_at_not_store_order(self) -> None:
        log = Log()
        log.capture(L[0], T0, SMALL)
        log.touch(L[0], T0 + 5 * H, "webinar_attended")  # stored first, occurred last
        log.touch(L[0], T0 + H, "webinar_attended")
        log.touch(L[0], T0 + 2 * H, "webinar_attended")
        assert _instant(log, L[0]) == T0 + 2 * H  # 25 at +1h, 50 at +2h

    def test_the_scorers_own_qualifications_are_ignored(self) -> None:
        log = Log()
        log.capture(L[0], T0, LARGE)
        log.stage(L[0], T0 + H, "LeadQualifiedAsMQL", "mql", actor="scorer")  # the published model's
        log.touch(L[0], T0 + 2 * H, "webinar_attended")
        assert _instant(log, L[0]) == T0 + 2 * H

    def test_a_lead_qualified_by_hand_is_nobodys_would_be_mql(self) -> None:
        log = Log()
        log.capture(L[0], T0, LARGE)
        log.stage(L[0], T0 + H, "LeadQualifiedAsMQL", "mql", actor="sales-ops")
        log.touch(L[0], T0 + 2 * H, "webinar_attended")
        assert _instant(log, L[0]) is None

    def test_a_stage_change_at_the_instant_counts(self) -> None:
        log = Log()
        log.capture(L[0], T0, LARGE)
        log.touch(L[0], T0 + H, "webinar_attended")
        log.stage(L[0], T0 + H, "LeadQualifiedAsMQL", "mql", actor="sales-ops")  # same instant, stored after
        assert _instant(log, L[0]) is None

    def test_nurtured_and_recycled_leads_qualify_again(self) -> None:
        log = Log()
        log.capture(L[0], T0, LARGE)
        log.stage(L[0], T0 + H, "LeadQualifiedAsMQL", "mql", actor="sales-ops")
        log.touch(L[0], T0 + 2 * H, "webinar_attended")  # 60, but in mql
        log.stage(L[0], T0 + 3 * H, "LeadRejectedBySales", "recycled")
        log.touch(L[0], T0 + 4 * H, "page_view")  # 65 in recycled: here
        assert _instant(log, L[0]) == T0 + 4 * H

    def test_a_touch_before_the_capture_is_no_instant_of_its_own(self) -> None:
        log = Log()
        log.capture(L[0], T0, LARGE)
        log.touch(L[0], T0 - H, "webinar_attended")  # occurred before the capture: no stage yet
        assert _instant(log, L[0]) == T0  # counted from the capture on: 30 + 25


class TestFigures:
    @staticmethod
    def story() -> Log:
        """Five leads under MODEL (threshold 50):

        - L0 large, webinar +2h → MQL +2h, won at +3d (recalled)
        - L1 small, webinars +1h, +5h → MQL +5h, reaches sal only
        - L2 small, qualified by hand at +1h, won at +2d: won, not a would-be MQL
        - L3 large, no touch: never (30)
        - L4 large, a (made-up) win at +1d, recycled at +2d, webinar at +3d → MQL +3d, after its win
        """
        log = Log()
        log.capture(L[0], T0, LARGE)
        log.touch(L[0], T0 + 2 * H, "webinar_attended")
        log.won(L[0], T0 + 3 * D)
        log.capture(L[1], T0 + H, SMALL)
        log.touch(L[1], T0 + 2 * H, "webinar_attended")
        log.touch(L[1], T0 + 6 * H, "webinar_attended")
        log.stage(L[1], T0 + D, "LeadAcceptedBySales", "sal")
        log.capture(L[2], T0 + 2 * H, SMALL)
        log.stage(L[2], T0 + 3 * H, "LeadQualifiedAsMQL", "mql", actor="sales-ops")
        log.won(L[2], T0 + 2 * D)
        log.capture(L[3], T0 + 3 * H, LARGE)
        log.capture(L[4], T0 + 4 * H, LARGE)
        log.won(L[4], T0 + D)
        log.stage(L[4], T0 + 2 * D, "LeadRecycled", "recycled")
        log.touch(L[4], T0 + 3 * D, "webinar_attended")
        log.add(L[3], "LeadContacted", T0 + 30 * D, "dialer")  # the latest event: every lead is old enough
        return log

    def test_precision_recall_and_median(self) -> None:
        result = _run(self.story())
        assert (result.leads, result.won, result.too_young) == (5, 3, 0)
        (m,) = result.models
        assert m.threshold == 50
        assert m.would_be_mql == 3  # L0, L1, L4
        assert m.reached == {"sal": 3, "sql": 2, "won": 2}
        assert m.precision == pytest.approx(2 / 3)
        assert m.recalled == 1  # L0; L4's MQL came after its win, L2 was never one
        assert m.recall == pytest.approx(1 / 3)
        # delays: L0 2 h, L1 5 h, L4 3 d - 4 h = 68 h; nearest rank ⌈3/2⌉ = 2nd
        assert m.median_to_mql_s == 5 * 3600

    def test_the_json(self) -> None:
        body = _run(self.story(), MODEL, STRICT, window=Window(T0, T0 + 3 * H)).as_json()
        assert (body["from"], body["to"]) == ("2026-03-02T09:00:00.000000Z", "2026-03-02T12:00:00.000000Z")
        assert body["horizon"] == "2026-04-01T09:00:00.000000Z"
        assert (body["at_age_s"], body["leads"], body["won"], body["too_young"]) == (604800.0, 3, 2, 0)
        assert [m["name"] for m in body["models"]] == ["candidate", "published"]
        strict = body["models"][1]
        assert (strict["source"], strict["threshold"], strict["would_be_mql"]) == ("policy:v1", 70, 0)
        assert (strict["precision"], strict["recall"], strict["median_to_mql_s"]) == (None, 0.0, None)
        assert strict["deciles"][0] == {"decile": 1, "leads": 0, "won": 0, "won_rate": None, "min_score": None,
                                        "max_score": None}
        assert set(body["models"][0]) == {"name", "source", "threshold", "would_be_mql", "reached", "precision",
                                          "recalled", "recall", "median_to_mql_s", "auc", "deciles"}

    def test_the_configured_threshold_stands_in(self) -> None:
        unset = Model("candidate", "x", _scoring(MODEL_TEXT.replace("threshold = 50\n", "")))
        (m,) = backtest(self.story().events, [unset], Window(), at_age=7 * D, default_threshold=55).models
        assert (m.threshold, m.would_be_mql) == (55, 2)  # L0 and L4 (55); L1 stays at 50

    def test_the_window_chooses_the_leads_by_capture(self) -> None:
        result = _run(self.story(), window=Window(T0 + H, T0 + 3 * H))  # L1, L2
        assert (result.leads, result.won) == (2, 1)
        assert result.models[0].would_be_mql == 1

    def test_nothing_captured(self) -> None:
        result = _run(Log())
        assert (result.leads, result.horizon, result.too_young) == (0, None, 0)
        m = result.models[0]
        assert (m.would_be_mql, m.precision, m.recall, m.median_to_mql_s, m.auc) == (0, None, None, None, None)
        assert [d.leads for d in m.deciles] == [0] * 10


class TestScoreAtAge:
    def test_auc_with_ties_by_hand(self) -> None:
        # won 60, 30; not won 30, 10, 60: (1 + 1 + ½) + (½ + 1 + 0) = 4 of 6 pairs
        assert auc([(60, True), (30, True), (30, False), (10, False), (60, False)]) == pytest.approx(4 / 6)
        assert auc([(10, False), (20, True)]) == 1.0
        assert auc([(20, False), (20, True)]) == 0.5
        assert auc([(10, True), (20, True)]) is None
        assert auc([]) is None

    def test_auc_of_the_score_at_age(self) -> None:
        log = Log()
        log.capture(L[0], T0, LARGE)  # won; at +7d: 30 + 25 = 55
        log.touch(L[0], T0 + D, "webinar_attended")
        log.won(L[0], T0 + 20 * D)
        log.capture(L[1], T0, SMALL)  # won; 0
        log.won(L[1], T0 + 20 * D)
        log.capture(L[2], T0, LARGE)  # 30
        log.capture(L[3], T0, SMALL)  # 0
        log.touch(L[3], T0 + 8 * D, "webinar_attended")  # after the age: not in the score
        log.add(L[2], "LeadContacted", T0 + 30 * D, "dialer")
        (m,) = _run(log).models
        # won 55 vs 30, 0 → 2; won 0 vs 30 → 0, vs 0 → ½: 2.5 of 4
        assert m.auc == pytest.approx(2.5 / 4)

    def test_deciles_with_fewer_than_ten_leads_and_ties(self) -> None:
        log = Log()
        log.capture(L[5], T0 + 2 * H, SMALL)  # 0, captured last among the zeros
        log.capture(L[6], T0, SMALL)  # 0, captured first
        log.won(L[6], T0 + 20 * D)
        log.capture(L[7], T0 + H, LARGE)  # 30
        log.add(L[7], "LeadContacted", T0 + 30 * D, "dialer")
        (m,) = _run(log).models
        # ranks 0..2 → deciles ⌊10·(r+1)/3⌋ boundaries: 4 holds rank 0, 7 rank 1, 10 rank 2
        assert [d.leads for d in m.deciles] == [0, 0, 0, 1, 0, 0, 1, 0, 0, 1]
        d4, d7, d10 = m.deciles[3], m.deciles[6], m.deciles[9]
        assert (d4.won, d4.won_rate, d4.min_score) == (1, 1.0, 0)  # L6 (the earlier capture) ranks first
        assert (d7.won, d7.won_rate, d7.max_score) == (0, 0.0, 0)
        assert (d10.min_score, d10.max_score) == (30, 30)
        assert m.deciles[0].won_rate is None

    def test_deciles_as_equal_as_possible(self) -> None:
        ranked = [(score, score % 3 == 0) for score in range(12)]
        split = deciles(ranked)
        assert [d.leads for d in split] == [1, 1, 1, 1, 2, 1, 1, 1, 1, 2]
        assert (split[4].min_score, split[4].max_score, split[4].won) == (4, 5, 0)
        assert (split[9].min_score, split[9].max_score, split[9].won) == (10, 11, 0)
        assert sum(d.won for d in split) == 4  # 0, 3, 6, 9
        assert [d.leads for d in deciles([(s, False) for s in range(25)])] == [2, 3, 2, 3, 2, 3, 2, 3, 2, 3]

    def test_too_young_leads_are_left_out_of_the_score_at_age(self) -> None:
        log = Log()
        log.capture(L[0], T0, LARGE)
        log.touch(L[0], T0 + H, "webinar_attended")  # a would-be MQL all the same
        log.capture(L[1], T0 + 5 * D, SMALL)
        log.add(L[0], "LeadContacted", T0 + 10 * D, "dialer")  # the horizon: L1 is 5 days old
        result = _run(log)
        assert (result.leads, result.too_young) == (2, 1)
        m = result.models[0]
        assert m.would_be_mql == 1
        assert sum(d.leads for d in m.deciles) == 1
        assert _run(log, at_age=5 * D).too_young == 0  # capture + age = the horizon: old enough

    def test_the_score_is_the_total_at_capture_plus_age(self) -> None:
        log = Log()
        log.capture(L[0], T0, SMALL)
        log.touch(L[0], T0 + D, "webinar_attended")
        log.touch(L[0], T0 + 3 * D, "page_view")
        log.add(L[0], "LeadContacted", T0 + 30 * D, "dialer")
        assert [d.max_score for d in _run(log, at_age=2 * D).models[0].deciles][-1] == 25
        assert [d.max_score for d in _run(log, at_age=3 * D).models[0].deciles][-1] == 30


class TestLeakFree:
    @staticmethod
    def base() -> Log:
        log = Log()
        log.capture(L[0], T0, LARGE)  # MQL at +2h (60); at +7d: 85
        log.touch(L[0], T0 + H, "page_view")
        log.touch(L[0], T0 + 2 * H, "webinar_attended")
        log.touch(L[0], T0 + D, "webinar_attended")
        log.won(L[0], T0 + 10 * D)
        log.capture(L[1], T0, LARGE)  # MQL at +1h (60); at +7d: 60; in sal from +3d
        log.touch(L[1], T0 + H, "page_view")
        log.touch(L[1], T0 + H, "webinar_attended")
        log.stage(L[1], T0 + 2 * D, "LeadQualifiedAsMQL", "mql", actor="sales-ops")
        log.stage(L[1], T0 + 3 * D, "LeadAcceptedBySales", "sal")
        log.capture(L[2], T0, SMALL)  # never; at +7d: 0
        log.stage(L[2], T0 + D, "LeadDisqualified", "disqualified", actor="sales-ops")
        log.add(L[2], "LeadContacted", T0 + 30 * D, "dialer")
        return log

    def test_later_events_change_nothing(self) -> None:
        before = _run(self.base(), MODEL, STRICT).as_json()
        log = self.base()
        # would lower L0's score at its MQL instant below the threshold, and at +7d to 0, were it counted
        log.touch(L[0], T0 + 7 * D + H, "unsubscribed")
        # would lift L1's and L2's scores at +7d (to 100 and 75, above L0), were they counted; neither is in a
        # stage the scorer qualifies from by then (sal, disqualified), so they are no instants either
        for _ in range(3):
            log.touch(L[1], T0 + 7 * D + H, "webinar_attended")
            log.touch(L[2], T0 + 7 * D + H, "webinar_attended")
        after = _run(log, MODEL, STRICT).as_json()
        assert after == before
        candidate = after["models"][0]
        assert candidate["would_be_mql"] == 2 and candidate["median_to_mql_s"] == 3600  # L1 +1h, L0 +2h
        assert candidate["auc"] == 1.0  # won L0 (85) above L1 (60) and L2 (0)
        strict = after["models"][1]
        assert (strict["would_be_mql"], strict["median_to_mql_s"]) == (1, 86400)  # L0 at +1d (85)

    def test_a_touch_after_the_mql_instant_leaves_it_and_counts_at_age(self) -> None:
        before = _run(self.base()).models[0]
        log = self.base()
        log.touch(L[0], T0 + 3 * H, "unsubscribed")  # an hour after L0's MQL instant, before its age
        after = _run(log).models[0]
        assert (after.would_be_mql, after.median_to_mql_s, after.recalled) == (2, 3600, 1)
        assert (before.would_be_mql, before.median_to_mql_s, before.recalled) == (2, 3600, 1)
        assert (before.auc, after.auc) == (1.0, 0.25)  # L0 now 0 at +7d (-15 clamped): ties L2 (½), below L1

    def test_touches_before_the_age_count(self) -> None:
        log = self.base()
        for _ in range(4):
            log.touch(L[2], T0 + 7 * D - H, "webinar_attended")
        moved = _run(log).as_json()["models"][0]
        assert moved["auc"] == 0.5  # L2 now 100, above L0 (85): 1 of 2 pairs
        assert moved["would_be_mql"] == 2  # L2 is disqualified: still no MQL


# ---------------------------------------------------------------- the shortcut in would_be_mql

PROPERTY_MODEL = _scoring("""
[scoring]
[[scoring.fit]]
id = "large"
when = { employees_gte = 200 }
points = 20
[[scoring.fit]]
id = "free"
when = { email_domain_kind = "free" }
points = -15
[[scoring.behaviour]]
id = "webinar"
when = { touch_kind = "webinar_attended" }
points = 20
half_life = "2d"
max_per_day = 30
[[scoring.behaviour]]
id = "page"
when = { touch_kind = "page_view" }
points = 4
half_life = "7d"
[[scoring.behaviour]]
id = "unsubscribed"
when = { touch_kind = "unsubscribed" }
points = -40
""")


def _every_instant(model: Scoring, threshold: int, facts: LeadFacts) -> int | None:
    """The definition, evaluated at every instant: what the pruned search must agree with."""
    touches = [t for _, _, t in facts.touches]
    for at, _ in sorted([(facts.captured, facts.version)] + [(at, v) for at, v, _ in facts.touches]):
        upto = [s for s in facts.stages if s[0] <= at]
        stage = max(upto)[2] if upto else None
        if stage in PRE_MQL_STAGES and evaluate(model, facts.attributes, touches, at).total >= threshold:
            return at
    return None


@settings(max_examples=300, deadline=None)
@given(attributes=st.fixed_dictionaries({}, optional={"employees": st.sampled_from([10, 500]),
                                                      "email_domain_kind": st.just("free")}),
       touches=st.lists(st.tuples(st.integers(0, 96), st.sampled_from(["webinar_attended", "page_view",
                                                                       "unsubscribed", "other"])),
                        max_size=12),
       stages=st.lists(st.tuples(st.integers(0, 96), st.sampled_from(["mql", "recycled", "nurtured", "sal"]),
                                 st.sampled_from(["crm", "scorer"])), max_size=4),
       threshold=st.integers(0, 100))
def test_the_shortcut_finds_what_every_instant_finds(attributes: dict[str, Any], touches: list[tuple[int, str]],
                                                     stages: list[tuple[int, str, str]], threshold: int) -> None:
    log = Log()
    log.capture(L[0], T0, attributes)
    for hours, kind in touches:
        log.touch(L[0], T0 + hours * H, kind)
    for hours, to_stage, actor in stages:
        log.stage(L[0], T0 + hours * H, "LeadStageChanged", to_stage, actor=actor)
    facts = _facts(log, L[0])
    assert would_be_mql(PROPERTY_MODEL, threshold, facts) == _every_instant(PROPERTY_MODEL, threshold, facts)


def test_nearest_rank() -> None:
    assert nearest_rank_p50([]) is None
    assert nearest_rank_p50([7.0]) == 7.0
    assert nearest_rank_p50([4.0, 1.0, 3.0, 2.0]) == 2.0  # ⌈4/2⌉ = 2nd
    assert nearest_rank_p50([5.0, 1.0, 3.0]) == 3.0
