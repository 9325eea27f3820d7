"""The scoring model of a policy, evaluated at an instant (no IO).

At instant t a lead's score is

- `fit`: the sum of the points of the fit rules whose `when` matches the lead's attributes;
- `behaviour`: for each behaviour rule, the sum over the lead's matching touches up to t of
  points × 2^(−(t − touch time) / half_life) (no decay without `half_life`), where at most
  `max_per_day` raw points count per rule and UTC calendar day, earliest touches first (a touch that
  would pass the cap counts only the part left; for a negative rule the cap bounds the magnitude);
- `total`: min(100, max(0, round_half_up(fit + behaviour))).

A behaviour rule's `when` sees the lead's attributes and the touch's `touch_kind`, `channel` and
`campaign`. A capture is not a touch. The live scorer (operator.py), `score explain` and the
back-test all call `evaluate`, so they agree to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lifecycle.operations.policy import Scoring, ScoringRule, matches

PRE_MQL_STAGES = frozenset({"captured", "nurtured", "recycled"})  # where auto_mql qualifies a lead
_DIGITS = 6  # behaviour and contributions are recorded rounded to this many decimals


@dataclass(frozen=True)
class Touch:
    """A touch as the scorer reads it (`occurred` in µs since the epoch, UTC)."""

    occurred: int
    kind: str | None
    channel: str | None
    campaign: str | None

    @classmethod
    def of(cls, occurred: int, data: Mapping[str, Any]) -> Touch:
        """A stored `LeadTouched`'s touch (its data, and its occurred_at in µs)."""
        return cls(occurred, data.get("kind"), data.get("channel"), data.get("campaign"))


@dataclass(frozen=True)
class Contribution:
    rule: str
    points: float  # fit: the rule's points; behaviour: the decayed, capped sum of its touches
    touches: int = 0  # behaviour: the matching touches up to t (fit: 0)


@dataclass(frozen=True)
class Score:
    fit: int
    behaviour: float
    total: int
    contributions: tuple[Contribution, ...]  # every rule that matched, fit rules first, in policy order

    def payload(self) -> dict[str, Any]:
        """`LeadScored`'s fit, behaviour, total and contributions (rounded as recorded)."""
        return {"fit": self.fit, "behaviour": round(self.behaviour, _DIGITS), "total": self.total,
                "contributions": [{"rule": c.rule, "points": _rounded(c.points)} for c in self.contributions]}


_US_PER_DAY = 86_400_000_000


def round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def evaluate(model: Scoring, attributes: Mapping[str, object], touches: Iterable[Touch], at: int) -> Score:
    """The score at `at` (µs) from the lead's attributes and the touches with `occurred <= at`."""
    upto = sorted((t for t in touches if t.occurred <= at), key=lambda t: t.occurred)
    contributions: list[Contribution] = []
    fit = 0
    for rule in model.fit:
        if matches(rule.when, attributes):
            fit += rule.points
            contributions.append(Contribution(rule.id, rule.points))
    behaviour = 0.0
    for rule in model.behaviour:
        hits = [t for t in upto if matches(rule.when, touch_view(attributes, t))]
        if not hits:
            continue
        points = _behaviour_points(rule, hits, at)
        behaviour += points
        contributions.append(Contribution(rule.id, points, len(hits)))
    total = min(100, max(0, round_half_up(fit + behaviour)))
    return Score(fit, behaviour, total, tuple(contributions))


def touch_view(attributes: Mapping[str, object], touch: Touch) -> dict[str, object]:
    view = dict(attributes)
    view["touch_kind"] = touch.kind
    view["channel"] = touch.channel
    view["campaign"] = touch.campaign
    return view


def _capped(rule: ScoringRule, hits: Sequence[Touch]) -> Iterator[tuple[Touch, int]]:
    """Each of the rule's touches (sorted by time) with the raw points (magnitude) that count: at most
    `max_per_day` per UTC day, earliest first; touches past the cap are left out."""
    day = None
    left = 0
    magnitude = abs(rule.points)
    for touch in hits:
        raw = magnitude
        if rule.max_per_day is not None:
            today = touch.occurred // _US_PER_DAY
            if today != day:
                day, left = today, rule.max_per_day
            raw = min(raw, left)
            left -= raw
            if raw == 0:
                continue
        yield touch, raw


def _behaviour_points(rule: ScoringRule, hits: Sequence[Touch], at: int) -> float:
    """Σ raw × decay over the rule's touches (sorted by time), the raw points capped per UTC day."""
    total = 0.0
    sign = 1 if rule.points >= 0 else -1
    for touch, raw in _capped(rule, hits):
        weight = 1.0
        if rule.half_life is not None:
            age_us = at - touch.occurred
            weight = 2.0 ** (-age_us / (rule.half_life.total_seconds() * 1_000_000))
        total += sign * raw * weight
    return total


def _rounded(points: float) -> float | int:
    return points if isinstance(points, int) else round(points, _DIGITS)


def model_name(version: int) -> str:
    """`LeadScored.model` of the scorer's scores under policy version `version`."""
    return f"policy:v{version}"


def threshold_of(model: Scoring | None, default: int) -> int:
    """The MQL threshold: the scoring model's, else the configured one."""
    return model.threshold if model is not None and model.threshold is not None else default


def us(value: datetime) -> int:
    """µs since the epoch of an aware datetime."""
    return (value - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------- explaining


@dataclass(frozen=True)
class RuleLine:
    """One rule of the model at an instant, for `score explain`: what it contributed, or why nothing."""

    rule: str
    section: str  # fit | behaviour
    points: float
    matched: bool
    touches: int  # behaviour: the matching touches up to the instant
    note: str | None  # why it did not match, or how the cap cut it


def explain(model: Scoring, attributes: Mapping[str, object], touches: Iterable[Touch], at: int,
            ) -> tuple[Score, list[RuleLine]]:
    """The score at `at` and every rule of the model: its points, or why it gave none."""
    upto = sorted((t for t in touches if t.occurred <= at), key=lambda t: t.occurred)
    score = evaluate(model, attributes, upto, at)
    got = {c.rule: c for c in score.contributions}
    lines: list[RuleLine] = []
    for rule in model.fit:
        hit = got.get(rule.id)
        lines.append(RuleLine(rule.id, "fit", hit.points if hit else 0, hit is not None, 0,
                              None if hit else why_not(rule.when, attributes)))
    for rule in model.behaviour:
        hit = got.get(rule.id)
        if hit is None:
            lines.append(RuleLine(rule.id, "behaviour", 0, False, 0, "no matching touch up to this instant"))
            continue
        raw = abs(rule.points) * hit.touches
        hits = [t for t in upto if matches(rule.when, touch_view(attributes, t))]
        counted = sum(points for _, points in _capped(rule, hits))
        notes = []
        if counted < raw:
            notes.append(f"daily cap: {counted} of {raw} raw points count")
        if rule.half_life is not None:
            notes.append(f"decayed, half-life {_duration(rule.half_life.total_seconds())}")
        lines.append(RuleLine(rule.id, "behaviour", hit.points, True, hit.touches, "; ".join(notes) or None))
    return score, lines


def why_not(when: tuple[Any, ...], attributes: Mapping[str, object]) -> str | None:
    """The first condition of `when` the attributes fail (None: they match)."""
    for cond in when:
        value = attributes.get(cond.attribute)
        shown = ", ".join(str(v) for v in cond.values)
        if value is None:
            return f"{cond.attribute} is not known"
        if not matches((cond,), attributes):
            wanted = {"in": f"one of {shown}" if len(cond.values) > 1 else shown, "gte": f">= {shown}",
                      "lte": f"<= {shown}"}[cond.op]
            return f"{cond.attribute} is {value}, not {wanted}"
    return None


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def lead_inputs(events: Iterable[tuple[str, datetime, Mapping[str, Any]]],
                ) -> tuple[dict[str, Any], list[Touch]]:
    """A lead's attributes (its capture's) and touches, from its events as (name, occurred_at, data)."""
    attributes: dict[str, Any] = {}
    touches: list[Touch] = []
    for name, occurred, data in events:
        if name == "LeadCaptured":
            attributes = dict(data.get("attributes") or {})
        elif name == "LeadTouched":
            touches.append(Touch.of(us(occurred), data))
    return attributes, touches
