"""The score arithmetic against hand-computed cases: fit rules, decay by half-life, the daily cap across
a UTC midnight, negative points, the clamp at 0 and 100, rounding half up, a rule on a missing attribute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lifecycle.operations.policy import parse_policy
from lifecycle.operations.scoring import Contribution, Touch, evaluate, round_half_up, us

T0 = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)  # a Monday, two hours before a UTC midnight


def _model(body: str):  # type: ignore[no-untyped-def]
    scoring = parse_policy("[scoring]\nthreshold = 60\n" + body).scoring
    assert scoring is not None
    return scoring


def _touch(at: datetime, kind: str | None = None, channel: str = "web", campaign: str | None = None) -> Touch:
    return Touch(us(at), kind, channel, campaign)


FIT = """
[[scoring.fit]]
id = "large"
when = { employees_gte = 200 }
points = 20
[[scoring.fit]]
id = "dach"
when = { country = ["DE", "AT", "CH"] }
points = 15
[[scoring.fit]]
id = "free-mail"
when = { email_domain_kind = "free" }
points = -30
"""


class TestFit:
    def test_the_matching_rules_points_add_up(self) -> None:
        score = evaluate(_model(FIT), {"employees": 200, "country": "AT", "email_domain_kind": "business"}, [],
                         us(T0))
        assert (score.fit, score.behaviour, score.total) == (35, 0.0, 35)
        assert score.contributions == (Contribution("large", 20), Contribution("dach", 15))

    def test_a_rule_on_a_missing_attribute_never_matches(self) -> None:
        score = evaluate(_model(FIT), {"country": "DE"}, [], us(T0))  # employees unknown: not "large"
        assert (score.fit, score.total) == (15, 15)
        assert [c.rule for c in score.contributions] == ["dach"]

    def test_negative_points_and_the_clamp_at_zero(self) -> None:
        score = evaluate(_model(FIT), {"email_domain_kind": "free", "employees": 10}, [], us(T0))
        assert (score.fit, score.total) == (-30, 0)  # -30 recorded as fit, the total clamped
        assert score.contributions == (Contribution("free-mail", -30),)


DECAY = """
[[scoring.behaviour]]
id = "webinar"
when = { touch_kind = "webinar_attended" }
points = 40
half_life = "1d"
"""


class TestBehaviour:
    def test_a_touch_decays_by_half_each_half_life(self) -> None:
        model = _model(DECAY)
        touches = [_touch(T0, "webinar_attended")]
        assert evaluate(model, {}, touches, us(T0)).behaviour == 40.0
        assert evaluate(model, {}, touches, us(T0 + timedelta(days=1))).behaviour == 20.0
        assert evaluate(model, {}, touches, us(T0 + timedelta(days=3))).behaviour == 5.0
        # 12 hours: 40 × 2^-0.5 = 28.284271…, rounds to 28
        half_day = evaluate(model, {}, touches, us(T0 + timedelta(hours=12)))
        assert half_day.behaviour == pytest.approx(28.2842712)
        assert half_day.total == 28

    def test_only_touches_up_to_the_instant_count(self) -> None:
        model = _model(DECAY)
        touches = [_touch(T0, "webinar_attended"), _touch(T0 + timedelta(days=1), "webinar_attended")]
        assert evaluate(model, {}, touches, us(T0 + timedelta(hours=23))).contributions[0].touches == 1
        at_second = evaluate(model, {}, touches, us(T0 + timedelta(days=1)))
        assert (at_second.behaviour, at_second.total) == (60.0, 60)  # 40 halved + 40

    def test_the_daily_cap_counts_per_utc_day_earliest_first_and_the_part_left(self) -> None:
        model = _model("""
[[scoring.behaviour]]
id = "pages"
when = { channel = "web" }
points = 12
max_per_day = 30
""")
        # Monday 22:00, 22:30, 23:00 (12 + 12 + 6 of the 30 left), 23:30 (nothing left);
        # Tuesday 00:10 after the UTC midnight: a new day, 12 again
        times = [T0, T0 + timedelta(minutes=30), T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=30),
                 T0 + timedelta(hours=2, minutes=10)]
        score = evaluate(model, {}, [_touch(t) for t in reversed(times)], us(T0 + timedelta(hours=3)))
        assert (score.behaviour, score.total) == (42.0, 42)
        assert score.contributions == (Contribution("pages", 42.0, 5),)

    def test_a_cap_bounds_the_magnitude_of_negative_points(self) -> None:
        model = _model("""
[[scoring.fit]]
id = "base"
points = 50
[[scoring.behaviour]]
id = "unsubscribed"
when = { touch_kind = "unsubscribe" }
points = -20
max_per_day = 25
""")
        touches = [_touch(T0, "unsubscribe"), _touch(T0 + timedelta(minutes=1), "unsubscribe")]
        score = evaluate(model, {}, touches, us(T0 + timedelta(minutes=2)))
        assert (score.fit, score.behaviour, score.total) == (50, -25.0, 25)

    def test_the_total_is_clamped_at_100(self) -> None:
        model = _model(FIT + DECAY)
        touches = [_touch(T0 - timedelta(minutes=i), "webinar_attended") for i in range(3)]
        score = evaluate(model, {"employees": 5000, "country": "CH"}, touches, us(T0))
        assert score.fit == 35 and score.behaviour == pytest.approx(120, rel=1e-3)
        assert score.total == 100

    def test_a_behaviour_rule_sees_the_touch_and_the_lead(self) -> None:
        model = _model("""
[[scoring.behaviour]]
id = "dach-webinar"
when = { touch_kind = "webinar_attended", country = "DE", campaign = "q1" }
points = 10
""")
        touches = [_touch(T0, "webinar_attended", campaign="q1"), _touch(T0, "webinar_attended", campaign="q2")]
        assert evaluate(model, {"country": "DE"}, touches, us(T0)).total == 10
        assert evaluate(model, {"country": "FR"}, touches, us(T0)).total == 0


@pytest.mark.parametrize(("value", "rounded"), [(57.5, 58), (57.49999, 57), (-0.5, 0), (0.5, 1), (99.5, 100)])
def test_round_half_up(value: float, rounded: int) -> None:
    assert round_half_up(value) == rounded
