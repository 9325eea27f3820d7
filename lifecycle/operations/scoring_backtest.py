"""Back-test scoring models over the stored leads (no IO): who each model would have made an MQL, and
when, what became of those leads, and how well its score at a fixed age ranks the leads that were won.

The leads are those whose `LeadCaptured` occurred in the window [start, end). For each lead and model:

- evaluation instants: the capture and each `LeadTouched`, at their occurred_at (ties: stream version);
  the score at t is `scoring.evaluate` at t, which counts only the touches that occurred at or before t,
  so nothing after t can change a decision at t (leak-free);
- stage at t: the `to_stage` of the lead's last stage change (capture included) that occurred at or
  before t, by occurred_at then version, ignoring the changes made by leadledger's scorer (actor
  `scorer`): the published model's own automatic qualifications must not hide a lead from another model;
- would-be MQL instant: the first evaluation instant whose total reaches the model's threshold while the
  stage is captured, nurtured or recycled (a lead already qualified by hand is not the model's MQL);
- reached sal / sql / won: some stored event of the lead enters that stage (any actor, any time);
- precision: won among the would-be MQLs / would-be MQLs; recall: won leads whose would-be MQL instant
  is at or before their first win / won leads; median capture → would-be MQL: nearest rank (⌈n/2⌉-th);
- score at age: the total at capture + `at_age`, for the leads old enough that this instant is at or
  before the horizon (the latest stored event's occurred_at, which the window's end does not move: the
  leads' later events are stored and count); the others are `too_young`. Its AUC against "won" is the
  Mann–Whitney statistic (ties count 1/2), and the leads sorted by (score, capture, lead id) are split
  into ten groups as equal as possible, decile 1 the lowest scores.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from lifecycle.operations.fairness import Window
from lifecycle.operations.operator import Seen
from lifecycle.operations.policy import Scoring, matches
from lifecycle.operations.scoring import (
    PRE_MQL_STAGES,
    Touch,
    evaluate,
    round_half_up,
    threshold_of,
    touch_view,
    us,
)
from schemas.codec import format_time

SCORER = "scorer"  # the actor of leadledger's own automatic qualifications
OUTCOMES = ("sal", "sql", "won")
DECILES = 10
_US_PER_S = 1_000_000


@dataclass(frozen=True)
class Model:
    """A scoring model under test: what the report calls it, where it comes from, its rules."""

    name: str
    source: str  # a policy file's path, or `policy:vN`
    scoring: Scoring


@dataclass
class LeadFacts:
    """What the back-test keeps of one lead captured in the window (times in µs since the epoch)."""

    lead: UUID
    captured: int
    version: int  # the capture's
    attributes: dict[str, Any]
    touches: list[tuple[int, int, Touch]] = field(default_factory=list)  # (occurred, version, touch)
    stages: list[tuple[int, int, str]] = field(default_factory=list)  # not the scorer's: (occurred, version, to)
    reached: set[str] = field(default_factory=set)
    won_at: int | None = None  # the first win's occurred_at

    @property
    def won(self) -> bool:
        return "won" in self.reached


@dataclass(frozen=True)
class Folded:
    """The leads captured in the window, and the latest occurred_at of the whole store."""

    leads: list[LeadFacts]
    horizon: datetime | None


def fold(events: Iterable[Seen], window: Window) -> Folded:
    """One pass over the stored events (store order): per lead captured in the window, its attributes,
    touches, stage changes and outcomes; the rest is dropped as it is read."""
    leads: dict[UUID, LeadFacts] = {}
    horizon: datetime | None = None
    for seen in events:
        if horizon is None or seen.occurred > horizon:
            horizon = seen.occurred
        if seen.name == "LeadCaptured":
            if window.holds(seen.occurred):
                facts = LeadFacts(seen.lead, us(seen.occurred), seen.version,
                                  dict(seen.data.get("attributes") or {}))
                leads[seen.lead] = facts
                _stage(facts, seen, str(seen.data.get("to_stage") or "captured"))
            continue
        known = leads.get(seen.lead)  # a lead's capture is its first event in store order
        if known is None:
            continue
        if seen.name == "LeadTouched":
            at = us(seen.occurred)
            known.touches.append((at, seen.version, Touch.of(at, seen.data)))
        elif seen.data.get("to_stage"):
            _stage(known, seen, str(seen.data["to_stage"]))
    ordered = sorted(leads.values(), key=lambda f: (f.captured, f.lead))
    for facts in ordered:
        facts.touches.sort(key=lambda t: (t[0], t[1]))
        facts.stages.sort()
    return Folded(ordered, horizon)


def _stage(facts: LeadFacts, seen: Seen, to_stage: str) -> None:
    at = us(seen.occurred)
    facts.reached.add(to_stage)
    if to_stage == "won" and (facts.won_at is None or at < facts.won_at):
        facts.won_at = at
    if seen.actor != SCORER:
        facts.stages.append((at, seen.version, to_stage))


def would_be_mql(model: Scoring, threshold: int, facts: LeadFacts) -> int | None:
    """The first evaluation instant (µs) where the score reaches `threshold` and the lead's stage, as
    its non-scorer stage changes up to then left it, is one the scorer may qualify from; else None.

    `evaluate` decides; it is skipped at instants where even every positive behaviour rule at full,
    undecayed, uncapped points could not lift the total to the threshold (decay and caps only lower a
    positive rule's points, a negative rule never adds), which is most instants of most leads."""
    touches = [touch for _, _, touch in facts.touches]
    ceiling = _ceilings(model, facts.attributes, touches)
    if not _can_reach(ceiling[-1], threshold):
        return None
    instants = sorted([(facts.captured, facts.version)] + [(at, v) for at, v, _ in facts.touches])
    stages = facts.stages
    i, j, stage = 0, 0, None
    for at, _ in instants:
        while i < len(stages) and stages[i][0] <= at:
            stage = stages[i][2]
            i += 1
        while j < len(touches) and touches[j].occurred <= at:
            j += 1
        if (stage in PRE_MQL_STAGES and _can_reach(ceiling[j], threshold)
                and evaluate(model, facts.attributes, touches, at).total >= threshold):
            return at
    return None


def _ceilings(model: Scoring, attributes: dict[str, Any], touches: Sequence[Touch]) -> list[float]:
    """[k]: an upper bound of fit + behaviour with the first k touches (in time order)."""
    fit = sum(rule.points for rule in model.fit if matches(rule.when, attributes))
    positive = [rule for rule in model.behaviour if rule.points > 0]
    out = [float(fit)]
    for touch in touches:
        view = touch_view(attributes, touch)
        out.append(out[-1] + sum(rule.points for rule in positive if matches(rule.when, view)))
    return out


def _can_reach(upper: float, threshold: int) -> bool:
    return min(100, max(0, round_half_up(upper))) >= threshold


def nearest_rank_p50(values: Sequence[float]) -> float | None:
    """The ⌈n/2⌉-th smallest value (nearest rank), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(len(ordered) / 2) - 1]


def auc(scored: Sequence[tuple[int, bool]]) -> float | None:
    """P(a won lead's score > a not-won lead's), ties counting 1/2 (Mann–Whitney U / (P·N)); None when
    every label is the same."""
    won = Counter(score for score, label in scored if label)
    lost = Counter(score for score, label in scored if not label)
    positives, negatives = sum(won.values()), sum(lost.values())
    if positives == 0 or negatives == 0:
        return None
    below = 0  # not-won leads with a lower score than the current one
    pairs = 0.0
    for score in sorted(won.keys() | lost.keys()):
        pairs += won[score] * (below + lost[score] / 2)
        below += lost[score]
    return pairs / (positives * negatives)


@dataclass(frozen=True)
class Decile:
    decile: int  # 1 = the lowest scores
    leads: int
    won: int
    min_score: int | None
    max_score: int | None

    @property
    def won_rate(self) -> float | None:
        return self.won / self.leads if self.leads else None

    def as_json(self) -> dict[str, Any]:
        return {"decile": self.decile, "leads": self.leads, "won": self.won, "won_rate": self.won_rate,
                "min_score": self.min_score, "max_score": self.max_score}


def deciles(ranked: Sequence[tuple[int, bool]]) -> list[Decile]:
    """Ten groups of the (score, won) pairs, already in rank order, as equal as possible: group k holds
    ranks [k·n/10, (k+1)·n/10) (floored), so with fewer than ten leads some deciles are empty."""
    n = len(ranked)
    out = []
    for k in range(DECILES):
        group = ranked[k * n // DECILES:(k + 1) * n // DECILES]
        scores = [score for score, _ in group]
        out.append(Decile(k + 1, len(group), sum(1 for _, won in group if won),
                          min(scores) if scores else None, max(scores) if scores else None))
    return out


@dataclass(frozen=True)
class ModelResult:
    model: Model
    threshold: int
    would_be_mql: int
    reached: dict[str, int]  # of the would-be MQLs, how many entered sal, sql, won
    recalled: int  # won leads that were would-be MQLs at or before their first win
    won: int  # won leads of the window
    median_to_mql_s: float | None
    auc: float | None
    deciles: tuple[Decile, ...]

    @property
    def precision(self) -> float | None:
        return self.reached["won"] / self.would_be_mql if self.would_be_mql else None

    @property
    def recall(self) -> float | None:
        return self.recalled / self.won if self.won else None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.model.name, "source": self.model.source, "threshold": self.threshold,
                "would_be_mql": self.would_be_mql, "reached": dict(self.reached), "precision": self.precision,
                "recalled": self.recalled, "recall": self.recall, "median_to_mql_s": self.median_to_mql_s,
                "auc": self.auc, "deciles": [d.as_json() for d in self.deciles]}


def judge(model: Model, threshold: int, leads: Sequence[LeadFacts], aged: Sequence[LeadFacts],
          at_age: timedelta) -> ModelResult:
    """One model's figures over the window's leads (`aged`: those old enough for the score at age)."""
    would_be = 0
    reached = dict.fromkeys(OUTCOMES, 0)
    recalled = 0
    delays: list[float] = []
    for facts in leads:
        at = would_be_mql(model.scoring, threshold, facts)
        if at is None:
            continue
        would_be += 1
        delays.append((at - facts.captured) / _US_PER_S)
        for stage in OUTCOMES:
            reached[stage] += stage in facts.reached
        if facts.won_at is not None and at <= facts.won_at:
            recalled += 1
    pairs = [(score, won) for score, _, _, won in sorted(_aged_scores(model.scoring, aged, at_age))]
    return ModelResult(model, threshold, would_be, reached, recalled, sum(1 for f in leads if f.won),
                       nearest_rank_p50(delays), auc(pairs), tuple(deciles(pairs)))


def _aged_scores(model: Scoring, aged: Sequence[LeadFacts], at_age: timedelta,
                 ) -> Iterable[tuple[int, int, UUID, bool]]:
    """(score at capture + at_age, capture, lead, won) per lead: sorted, the rank order of the deciles."""
    age_us = at_age // timedelta(microseconds=1)
    for f in aged:
        touches = [touch for _, _, touch in f.touches]
        yield evaluate(model, f.attributes, touches, f.captured + age_us).total, f.captured, f.lead, f.won


@dataclass(frozen=True)
class Backtest:
    window: Window
    at_age: timedelta
    horizon: datetime | None  # the latest stored event's occurred_at
    leads: int
    won: int
    too_young: int
    models: tuple[ModelResult, ...]

    def as_json(self) -> dict[str, Any]:
        return {"from": _time(self.window.start), "to": _time(self.window.end),
                "at_age_s": self.at_age.total_seconds(), "horizon": _time(self.horizon), "leads": self.leads,
                "won": self.won, "scored_at_age": self.leads - self.too_young, "too_young": self.too_young,
                "models": [m.as_json() for m in self.models]}


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def backtest(events: Iterable[Seen], models: Sequence[Model], window: Window, *, at_age: timedelta,
             default_threshold: int) -> Backtest:
    """Every model over the leads captured in `window` (events: the store's, in store order);
    `default_threshold` stands for a model without a threshold of its own (the configured one)."""
    folded = fold(events, window)
    leads = folded.leads
    horizon = us(folded.horizon) if folded.horizon is not None else None
    age_us = at_age // timedelta(microseconds=1)
    aged = [f for f in leads if horizon is not None and f.captured + age_us <= horizon]
    results = tuple(judge(m, threshold_of(m.scoring, default_threshold), leads, aged, at_age) for m in models)
    return Backtest(window, at_age, folded.horizon, len(leads), sum(1 for f in leads if f.won),
                    len(leads) - len(aged), results)
