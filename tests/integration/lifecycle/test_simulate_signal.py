"""The simulated world's rule of who buys (docs/simulate-scoring.md) holds in its traffic: larger
companies, decision makers and business e-mail win more often, so do leads with a high-intent touch
in their first week, and a scoring model that knows it back-tests better than one that does not."""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from lifecycle.operations.policy import Scoring, parse_policy
from lifecycle.operations.scoring import Touch, evaluate, us
from lifecycle.simulate import generate
from lifecycle.simulate.life import LeadLife
from lifecycle.simulate.world import HIGH_INTENT, STEP_WEIGHT
from schemas.codec import parse_time
from schemas.firmographics import FIELDS, email_domain, email_domain_kind

START = datetime(2026, 1, 5, tzinfo=UTC)
MODELS = Path(__file__).parents[3] / "lifecycle" / "simulate" / "scoring"
DAY_US = 86_400_000_000
WEEK_US = 7 * DAY_US


@dataclass
class Simulated:
    """A lead as the scorer sees it (its capture's attributes, its touches), and whether it was won."""

    captured: int  # µs since the epoch
    attributes: dict[str, Any]
    touches: list[Touch] = field(default_factory=list)
    won: bool = False

    def touched_in_first_week(self, kinds: set[str]) -> bool:
        return any(t.kind in kinds and t.occurred <= self.captured + WEEK_US for t in self.touches)


@cache
def simulated(leads: int = 6000, seed: int = 1) -> tuple[Simulated, ...]:
    """The whole lives of `leads` simulated leads (no `until`: every lead lives to its horizon)."""
    found: dict[str, Simulated] = {}
    seen: set[tuple[str, str]] = set()
    for m in generate(leads=leads, seed=seed, start=START, days=90):
        if (m["source"], m["id"]) in seen:
            continue  # a re-delivery
        seen.add((m["source"], m["id"]))
        kind, data, at = m["type"].split(".")[2], m["data"], us(parse_time(m["time"]))
        lead = found.get(data["email"])
        if lead is None:
            attributes = {k: data[k] for k in FIELDS if k in data}
            attributes["email_domain_kind"] = email_domain_kind(email_domain(data["email"]))
            found[data["email"]] = Simulated(at, attributes)
        elif kind == "capture":  # a second form: the ledger records it as a touch
            lead.touches.append(Touch(at, "recapture", data["channel"], data.get("campaign")))
        elif kind == "touch":
            lead.touches.append(Touch(at, data.get("kind"), data["channel"], data.get("campaign")))
        elif kind == "transition" and data["trigger"] == "win":
            lead.won = True
    return tuple(found.values())


def won_rates(test: Callable[[Simulated], bool]) -> tuple[float, float]:
    """The won rate of the leads that pass `test`, and of the others."""
    inside = [lead.won for lead in simulated() if test(lead)]
    outside = [lead.won for lead in simulated() if not test(lead)]
    assert len(inside) > 200 and len(outside) > 200
    return sum(inside) / len(inside), sum(outside) / len(outside)


def auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """The chance that a positive scores higher than a negative (ties count half): Mann-Whitney."""
    negatives = sorted(s for s, p in zip(scores, positive, strict=True) if not p)
    positives = [s for s, p in zip(scores, positive, strict=True) if p]
    wins = sum(bisect_left(negatives, s) + 0.5 * (bisect_right(negatives, s) - bisect_left(negatives, s))
               for s in positives)
    return wins / (len(positives) * len(negatives))


def model(name: str) -> Scoring:
    scoring = parse_policy((MODELS / name).read_text("utf-8")).scoring
    assert scoring is not None
    return scoring


def backtest(scoring: Scoring) -> float:
    """The AUC of the model's score a week after capture against the lead being won."""
    leads = simulated()
    scores = [evaluate(scoring, lead.attributes, lead.touches, lead.captured + WEEK_US).total for lead in leads]
    return auc(scores, [lead.won for lead in leads])


def test_the_auc_helper_counts_ties_half() -> None:
    assert auc([1, 2, 3, 4], [False, False, True, True]) == 1.0
    assert auc([4, 3, 2, 1], [False, False, True, True]) == 0.0
    assert auc([5, 5, 5, 5], [False, True, False, True]) == 0.5


def test_the_journey_keeps_its_overall_rates() -> None:
    leads = simulated()
    won = sum(lead.won for lead in leads) / len(leads)
    assert 0.012 < won < 0.03, won


def test_larger_companies_decision_makers_and_business_mail_win_more_often() -> None:
    large, smaller = won_rates(lambda lead: lead.attributes.get("employees", 0) >= 200)
    assert large > 1.5 * smaller, (large, smaller)
    tiny, bigger = won_rates(lambda lead: lead.attributes.get("employees", 10**9) < 50)
    assert tiny < 0.6 * bigger, (tiny, bigger)
    deciding, others = won_rates(lambda lead: lead.attributes.get("role") in ("executive", "manager"))
    assert deciding > 1.2 * others, (deciding, others)
    buying, other_industries = won_rates(lambda lead: lead.attributes.get("industry") in ("software",
                                                                                         "financial services"))
    assert buying > 1.3 * other_industries, (buying, other_industries)
    free, business = won_rates(lambda lead: lead.attributes["email_domain_kind"] == "free")
    assert free < 0.6 * business, (free, business)


def test_a_high_intent_touch_in_the_first_week_says_more_than_a_low_intent_one() -> None:
    high = set(HIGH_INTENT)
    low = {t.kind for lead in simulated() for t in lead.touches
           if t.kind is not None and t.kind not in high and t.kind != "recapture"}
    assert {"email_open", "page_view", "ad_click"} <= low
    hot, cold = won_rates(lambda lead: lead.touched_in_first_week(high))
    assert hot > 2 * cold, (hot, cold)
    engaged, quiet = won_rates(lambda lead: lead.touched_in_first_week(low))
    assert hot / cold > engaged / quiet + 0.5, (hot, cold, engaged, quiet)


def test_the_model_that_knows_the_rule_backtests_clearly_better() -> None:
    behaviour_only = backtest(model("behaviour-only.toml"))
    fit_and_behaviour = backtest(model("fit-and-behaviour.toml"))
    assert fit_and_behaviour > 0.6, fit_and_behaviour
    assert fit_and_behaviour >= behaviour_only + 0.05, (behaviour_only, fit_and_behaviour)


def test_the_step_factor_of_the_propensity_averages_one_over_the_leads() -> None:
    """So the rule moves conversion from some leads to others, not the funnel's overall rates."""
    rng = random.Random(5)
    factors = [LeadLife(i, 0, START, rng, 2000, 70).propensity ** STEP_WEIGHT for i in range(20_000)]
    assert abs(sum(factors) / len(factors) - 1) < 0.05


def test_a_lead_draws_the_same_propensity_from_the_same_seed() -> None:
    def propensity(seed: str) -> float:
        return LeadLife(3, 0, START, random.Random(seed), 100, 70).propensity

    assert propensity("7:3") == propensity("7:3") != propensity("7:4")
