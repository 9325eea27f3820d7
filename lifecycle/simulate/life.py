"""One simulated lead's whole life, decided when it is captured: its messages in time order.

Its propensity (world.py's module docstring) is drawn with the person, before anything else of the
life, and scales the chance of each step of the journey (`_chance`); its own high-intent touches are
placed with the extras, from the extras' generator, so a routed life lived again repeats them.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from datetime import UTC, datetime, time, timedelta
from itertools import accumulate
from typing import Any
from zoneinfo import ZoneInfo

from lifecycle.domain.stages import RULES, GuardContext, Stage
from lifecycle.simulate.world import (
    ASSIGN_SOURCE,
    BANT,
    BY_TERRITORY,
    CHANNEL_WEIGHTS,
    CHANNELS,
    CONSENT_PURPOSES,
    CURRENCIES,
    DAY,
    EMAIL,
    FIRST,
    FREE_MAIL,
    FREE_MAIL_SMALL,
    HIGH_INTENT,
    HORIZON,
    HOUR,
    HOUR_WEIGHT,
    INTENT_LATER_DAYS,
    INTENT_SIGMA,
    INTENT_TOUCHES_FIRST_WEEK,
    INTENT_TOUCHES_LATER,
    LAST,
    LATE_DQ_REASONS,
    LOSE_REASONS,
    MAX_CYCLES,
    OVERRIDE_REASONS,
    OWNER_BY_NAME,
    OWNER_HOURS,
    OWNERS,
    REDELIVERY_RATE,
    REJECT_REASONS,
    ROLE_WEIGHTS,
    ROLE_WEIGHTS_SMALL,
    ROLES,
    SAL_REJECT_REASONS,
    SECOND,
    SPAM_REASONS,
    STEP_ODDS,
    STEP_WEIGHT,
    UPSELL_RATE,
    WEEKEND_WEIGHT,
    Channel,
    Event,
    Owner,
    company,
    fit_odds,
    propensity_scale,
)


class HorizonReached(Exception):
    """Internal: the lead's next event would fall after its horizon; its life ends here."""


class AwaitRouting(Exception):
    """Internal (routed lives): the life needs an owner leadledger's router has not given yet."""


class Preempted(Exception):
    """Internal (routed lives): the router reassigned the lead before the owner's next step."""


#: Routed lives: the sales rep a policy names that the simulated world does not know behaves so.
UNKNOWN_REP = Owner("unknown", "emea", 2 * 3600, 0.10)
CHANNEL_BY_NAME: dict[str, Channel] = {c.name: c for c in CHANNELS}
HIGH_INTENT_KINDS = tuple(HIGH_INTENT)
HIGH_INTENT_WEIGHTS = tuple(accumulate(share for _, share in HIGH_INTENT.values()))
#: what a hand-raiser does before its MQL: a demo request or a look at the prices
HAND_RAISER_KINDS = ("demo_requested", "pricing_page")


class CaptureClock:
    """Capture times spread over `days` with office-hour and weekday peaks, in lead order."""

    def __init__(self, origin: datetime, days: int, leads: int) -> None:
        weights = []
        for hour in range(days * 24):
            at = origin + timedelta(hours=hour)
            weights.append(HOUR_WEIGHT[at.hour] * (WEEKEND_WEIGHT if at.weekday() >= 5 else 1.0))
        self._weights = weights
        self._cumulative = list(accumulate(weights))
        self._leads = leads

    def at(self, index: int, rng: random.Random) -> int:
        """Capture time of lead `index` (non-decreasing in `index`)."""
        total = self._cumulative[-1]
        target = (index + rng.random()) / self._leads * total
        hour = min(bisect_right(self._cumulative, target), len(self._cumulative) - 1)
        before = self._cumulative[hour - 1] if hour else 0.0
        within = min(max((target - before) / self._weights[hour], 0.0), 0.999999)
        return hour * HOUR + int(within * HOUR)


#: The share of SQLs whose transition states the deal's expected amount.
EXPECTED_DEAL_SHARE = 0.8


class ExpectedDeal:
    """The expected amount an SQL message states (in place, in the message's data), if it states one."""

    def __init__(self, data: dict[str, Any], rng: random.Random, *, stated: bool) -> None:
        self.data, self.rng, self.stated = data, rng, stated

    def set(self, amount: float, currency: str) -> None:
        if self.stated:
            self.data["amount"], self.data["currency"] = amount, currency

    def near(self, won: float, currency: str) -> None:
        """The deal is won at `won` in `currency`: the SQL expected within 20 % of it."""
        self.set(float(max(500, round(won * self.rng.uniform(0.8, 1.2) / 50) * 50)), currency)


class LeadLife:
    """One simulated lead: its stage, score and owner as the system will see them."""

    def __init__(self, index: int, captured: int, origin: datetime, rng: random.Random,
                 companies: int, mql_threshold: int, *, routed: list[tuple[int, str]] | None = None,
                 extras_rng: random.Random | None = None) -> None:
        """`routed`: leadledger's router assigns this lead (no upstream `assign` messages): the
        router's assignments of it so far, (µs after origin, rep), in time order. The life waits
        where it needs one more (`awaiting`), and an assignment earlier than the owner's next step
        (an SLA breach reassignment) hands the lead to the new owner. Lived again with more
        assignments and the same seeds, it repeats itself up to the first new one."""
        self.rng = rng
        self.routed = routed
        self._taken = 0  # routed assignments used so far
        self._contact_phase = False
        self.awaiting: int | None = None  # routed: when the life stopped to wait for the router
        self.extras_rng = extras_rng or rng
        self.origin = origin
        self.threshold = mql_threshold
        self.t = captured
        self.captured = captured
        self.end = captured + HORIZON // timedelta(microseconds=1)
        self.events: list[Event] = []
        self.stage: Stage | None = None
        self.score: int | None = None
        self.owner: str | None = None
        self.account_owner: Owner | None = None
        self.channel = rng.choices(CHANNELS, cum_weights=CHANNEL_WEIGHTS)[0]
        self.company = company(rng.randrange(companies))
        country = self.company.country
        self.territory = country.territory
        first, last = rng.choice(FIRST), rng.choice(LAST)
        self.name = f"{first.title()} {last.title()}"
        self.fit = clamp(round(rng.gauss(self.channel.fit, 16)), 3, 98)
        self.behaviour = rng.randint(5, 30)
        # the person: their role, language, and whether they sign up with a free-mail address
        small = self.company.small
        self.role = rng.choices(ROLES, weights=ROLE_WEIGHTS_SMALL if small else ROLE_WEIGHTS)[0]
        self.language = rng.choices([code for code, _ in country.languages],
                                    weights=[w for _, w in country.languages])[0]
        free_mail = rng.random() < (FREE_MAIL_SMALL if small else FREE_MAIL)
        if free_mail:
            self.email = f"{first}.{last}.{index + 1}@{rng.choice(country.free_mail)}"
        else:
            self.email = f"{first}.{last}.{index + 1}@{self.company.domain}"
        # how likely the lead is to buy: its fit times its intent (one draw, always here)
        self.intent = math.exp(rng.gauss(0, INTENT_SIGMA))
        self.propensity = fit_odds(self.company, self.role, free_mail) * self.intent / propensity_scale()
        self._step_odds = self.propensity**STEP_WEIGHT
        self.spam = False  # disqualified right after capture: no touches of its own

    # ---- the life -------------------------------------------------------------

    def live(self) -> list[Event]:
        try:
            self._capture()
            self._journey()
        except HorizonReached:
            pass
        except AwaitRouting:
            self.awaiting = self.t
        self._extras()
        return self.events

    def _capture(self) -> None:
        rng, ch = self.rng, self.channel
        data: dict[str, Any] = {"channel": ch.name}
        campaign = self._campaign(ch)
        if campaign is not None:
            data["campaign"] = campaign
        data["name"] = self.name
        data["company"] = self.company.name
        if rng.random() < 0.6:
            data["phone"] = f"{rng.choice(self.company.country.phone)} {rng.randint(1_000_000, 9_999_999)}"
        r = rng.random()
        if r < 0.86:
            data["consent"] = True
        elif r < 0.95:
            data["consent"] = False
        data.update(self._firmographics())
        self._emit(0, "capture", ch.capture_source, data, exact=True)
        self.stage = Stage.CAPTURED

    def _firmographics(self) -> dict[str, Any]:
        """What a capture form says of the company and the person (a form leaves some fields out)."""
        rng, found = self.rng, self.company
        data: dict[str, Any] = {}
        if rng.random() < 0.97:
            data["country"] = found.country.code
        if rng.random() < 0.9:
            data["industry"] = found.industry
        if rng.random() < 0.85:
            data["employees"] = found.employees
        if rng.random() < 0.8:
            data["role"] = self.role
        data["language"] = self.language
        return data

    def _journey(self) -> None:
        rng, ch = self.rng, self.channel
        if rng.random() < ch.spam:
            self.spam = True
            if rng.random() < 0.5:
                self._score(rng.uniform(30, 600), below=True)
            self._fire("disqualify", rng.uniform(600, 2 * 86400), "marketing-automation",
                       reason=rng.choice(SPAM_REASONS))
            return
        self._score(rng.uniform(20, 900), below=True)
        p_mql = ch.mql
        for cycle in range(MAX_CYCLES):
            if not self._marketing(p_mql, first=cycle == 0):
                return
            outcome = self._sales(upsell=False)
            upsells = 0
            while outcome == "won" and upsells < 2 and rng.random() < UPSELL_RATE:
                upsells += 1
                self._fire("recycle", rng.uniform(14, 60) * 86400, "crm", work=True, reason="upsell")
                self._score(rng.uniform(3600, 5 * 86400), target=rng.randint(self.threshold, 100))
                self._fire("qualify_mql", rng.uniform(60, 3 * 3600), "marketing-automation")
                outcome = self._sales(upsell=True)
            if outcome == "lost" and rng.random() < 0.3:
                self._fire("recycle", rng.uniform(30, 90) * 86400, "crm", work=True, reason="not now")
                p_mql = ch.mql * 0.6
            elif outcome == "recycled" and rng.random() < 0.55:
                p_mql = ch.mql * 0.4
            else:
                return

    def _marketing(self, p_mql: float, *, first: bool) -> bool:
        """From captured or recycled: nurture, touch, score. True when the lead became an MQL."""
        rng = self.rng
        if not first:
            self.t += int(rng.uniform(7, 45) * DAY)
        will = rng.random() < self._chance(p_mql, "mql")
        override = will and rng.random() < 0.05
        if will and not override and rng.random() < (0.4 if first else 0.25):
            # a hand-raiser (demo request, pricing page): scored hot, MQL within minutes
            if not first or rng.random() < 0.4:
                self._touch(rng.uniform(600, 3 * 86400), hand_raiser=True)
            self._score(rng.uniform(30, 1800), target=rng.randint(self.threshold, max(self.threshold, 96)))
            self._fire("qualify_mql", rng.uniform(30, 900), "marketing-automation")
            return True
        if not will and rng.random() < 0.3:
            # never engages: a stray touch at most, the lead stays where it is
            if rng.random() < 0.4:
                self._touch(rng.uniform(3600, 20 * 86400))
            if rng.random() < 0.1:
                self._fire("disqualify", rng.uniform(5, 60) * 86400, "marketing-automation",
                           reason=rng.choice(LATE_DQ_REASONS))
            return False
        self._fire("nurture", rng.uniform(600, 3 * 86400), "marketing-automation")
        steps = rng.randint(2, 6) if will else rng.randint(1, 5)
        for _ in range(steps):
            self._touch(rng.uniform(1, 12) * 86400, email_share=0.65)
            if rng.random() < 0.6:
                self.behaviour = min(100, self.behaviour + rng.randint(2, 14))
                self._score(rng.uniform(60, 6 * 3600), below=True)
        if not will:
            if rng.random() < 0.08:
                self._fire("disqualify", rng.uniform(5, 60) * 86400, "marketing-automation",
                           reason=rng.choice(LATE_DQ_REASONS))
            return False
        if override and (self.score is None or self.score < self.threshold):
            self._fire("qualify_mql", rng.uniform(1, 10) * 86400, "crm", work=True,
                       override=True, reason=rng.choice(OVERRIDE_REASONS))
            return True
        # the activity that tips the score over the threshold
        self._touch(rng.uniform(1, 10) * 86400, email_share=0.4)
        self._score(rng.uniform(30, 1800), target=rng.randint(self.threshold, max(self.threshold, 92)))
        self._fire("qualify_mql", rng.uniform(30, 900), "marketing-automation")
        return True

    def _sales(self, *, upsell: bool) -> str:
        """From mql: route, contact, accept, qualify, close. Returns how the attempt ended."""
        rng, ch = self.rng, self.channel
        first = self._routed_contact(upsell) if self.routed is not None else self._upstream_contact(upsell)
        if isinstance(first, str):
            return first
        owner = first
        if rng.random() >= self._chance(min(0.95, ch.sal * (1.2 if upsell else 1.0)), "sal"):
            if rng.random() < 0.85:
                self._fire("reject", rng.uniform(0.5, 72) * 3600, "crm", work=True,
                           reason=rng.choice(REJECT_REASONS))
                return "recycled"
            self._fire("disqualify", rng.uniform(0.5, 72) * 3600, "crm", work=True, reason="not a fit")
            return "disqualified"
        self._fire("accept", rng.uniform(0.5, 72) * 3600, "crm", work=True)
        if not upsell:
            self.account_owner = owner

        for _ in range(rng.randint(0, 2)):
            self._touch(rng.uniform(0.5, 7) * 86400, email_share=0.3)
        if rng.random() < 0.3:
            self.behaviour = min(100, self.behaviour + rng.randint(3, 15))
            self._score(rng.uniform(3600, 3 * 86400))
        if rng.random() >= self._chance(min(0.95, ch.sql * (1.4 if upsell else 1.0)), "sql"):
            r = rng.random()
            if r < 0.5:
                self._fire("reject", rng.uniform(2, 21) * 86400, "crm", work=True,
                           reason=rng.choice(SAL_REJECT_REASONS))
                return "recycled"
            if r < 0.85:
                self._fire("recycle", rng.uniform(2, 21) * 86400, "crm", work=True, reason="not now")
                return "recycled"
            self._fire("disqualify", rng.uniform(2, 21) * 86400, "crm", work=True, reason="not a fit")
            return "disqualified"
        bant = {field: rng.choice(values) for field, values in BANT.items()}
        self._fire("qualify_sql", rng.uniform(2, 21 if not upsell else 7) * 86400, "crm", work=True,
                   bant=bant)
        sql = self._expect_deal(self.events[-1], ch.deal * (0.35 if upsell else 1.0))

        for _ in range(rng.randint(0, 3)):
            self._touch(rng.uniform(1, 10) * 86400, email_share=0.25)
        close_days = rng.uniform(10, 60) if not upsell else rng.uniform(5, 25)
        if rng.random() < self._chance(min(0.9, ch.win * (1.6 if upsell else 1.0)), "win"):
            base = ch.deal * (0.35 if upsell else 1.0)
            amount = float(max(500, round(base * rng.lognormvariate(0, 0.6) / 50) * 50))
            currency = rng.choice(CURRENCIES[self.territory])
            sql.near(amount, currency)
            self._fire("win", close_days * 86400, "crm", work=True, amount=amount, currency=currency)
            return "won"
        if rng.random() < 0.75:
            self._fire("lose", close_days * 86400, "crm", work=True, reason=rng.choice(LOSE_REASONS))
            return "lost"
        self._fire("recycle", close_days * 86400, "crm", work=True, reason="not now")
        return "recycled"

    def _expect_deal(self, sql: Event, base: float) -> ExpectedDeal:
        """Most SQLs state the deal's expected amount: an estimate around `base` until the deal is won,
        then one near the won amount (`ExpectedDeal.near`). Drawn from a generator of the SQL's own
        (its lead's e-mail and time), so the rest of the traffic stays what it was without them."""
        side = random.Random(f"{self.email}:{sql[0]}:expected-deal")
        deal = ExpectedDeal(sql[3], side, stated=side.random() < EXPECTED_DEAL_SHARE)
        deal.set(float(max(500, round(base * side.lognormvariate(0, 0.6) / 50) * 50)),
                 side.choice(CURRENCIES[self.territory]))
        return deal

    def _routed_contact(self, upsell: bool) -> Owner | str:
        """The router's owner and their first contact: the owner the contact came from, or how the
        attempt ended without one. An owner who does not call back waits for the router to hand the
        lead on (the policy's SLA breach) or, now and then, gives it back after weeks."""
        rng = self.rng
        owner = self._next_owner()
        while True:
            self._contact_phase = True
            try:
                if rng.random() >= owner.ignores * (0.3 if upsell else 1.0):
                    delay = owner.median_response_s * rng.lognormvariate(0, 0.9)
                    self._emit(max(delay, 15.0), "contact", "dialer", {"owner": owner.name}, work=True)
                    return owner
                if rng.random() < 0.7:
                    owner = self._next_owner()  # the reassignment, when the router makes one
                    continue
                self._fire("reject", rng.uniform(10, 30) * 86400, "crm", work=True,
                           reason="not worked within SLA")
                return "recycled"
            except Preempted:
                owner = self._next_owner()
            finally:
                self._contact_phase = False

    def _next_owner(self) -> Owner:
        """The router's next assignment of the lead (AwaitRouting until it has made one)."""
        assert self.routed is not None
        if self._taken >= len(self.routed):
            raise AwaitRouting
        at, name = self.routed[self._taken]
        self._taken += 1
        self.t = max(self.t, at)
        self.owner = name
        return OWNER_BY_NAME.get(name, UNKNOWN_REP)

    def _upstream_contact(self, upsell: bool) -> Owner | str:
        """Upstream routing (the CRM's rules) and the first contact: the owner the contact came from,
        or how the attempt ended without one."""
        rng = self.rng
        if upsell and self.account_owner is not None:
            owner, rule = self.account_owner, "upsell:account-owner"
        else:
            owner, rule = self._route()
        self._assign(rng.uniform(5, 600), owner, rule)
        contacted = False
        for attempt in range(3):
            ignores = owner.ignores * (0.3 if upsell else 1.0)
            delay = None if rng.random() < ignores else owner.median_response_s * rng.lognormvariate(0, 0.9)
            sla = rng.uniform(2, 24) * 3600
            late = delay is None or delay > sla
            if attempt < 2 and late and rng.random() < (0.5 if delay is None else 0.3):
                owner = rng.choice([o for o in OWNERS if o is not owner])
                self._assign(sla, owner, "reassign:sla-breach")
                continue
            if delay is not None:
                self._emit(max(delay, 15.0), "contact", "dialer", {"owner": owner.name}, work=True)
                contacted = True
            break
        if not contacted:
            r = rng.random()
            if r < 0.5:
                return "stale"  # sits in mql: nobody works it
            if r < 0.85:
                self._fire("reject", rng.uniform(10, 30) * 86400, "crm", work=True,
                           reason="not worked within SLA")
                return "recycled"
            self._fire("disqualify", rng.uniform(10, 30) * 86400, "crm", work=True, reason="duplicate")
            return "disqualified"
        return owner

    def _extras(self) -> None:
        """Second forms and consent changes, placed anywhere in the lead's first weeks (a routed life
        draws them from its own generator: they come out the same however the journey went)."""
        rng = self.extras_rng
        recaptures = 1 if rng.random() < 0.07 else 0
        recaptures += 1 if rng.random() < 0.01 else 0
        for _ in range(recaptures):
            ch = rng.choices(CHANNELS, cum_weights=CHANNEL_WEIGHTS)[0]
            if ch is self.channel:
                ch = CHANNELS[(CHANNELS.index(ch) + 1) % len(CHANNELS)]
            data: dict[str, Any] = {"channel": ch.name}
            campaign = self._campaign(ch, rng)
            if campaign is not None:
                data["campaign"] = campaign
            data["name"] = self.name
            data["consent"] = True
            self._insert(rng.uniform(3600, 75 * 86400), "capture", ch.capture_source, data)
        consent = self.events[0][3].get("consent") if self.events else None
        if consent is True:
            change = False if rng.random() < 0.03 else None
        else:
            change = True if rng.random() < (0.3 if consent is False else 0.2) else None
        if change is not None:
            self._insert(rng.uniform(3600, 90 * 86400), "consent", "preference-center",
                         {"given": change, "purpose": rng.choice(CONSENT_PURPOSES)})
        if self.spam:
            return
        for first_day, days, mean in ((0, 7, INTENT_TOUCHES_FIRST_WEEK),
                                      (7, INTENT_LATER_DAYS, INTENT_TOUCHES_LATER)):
            for _ in range(poisson(rng, mean * self.intent)):
                kind = rng.choices(HIGH_INTENT_KINDS, cum_weights=HIGH_INTENT_WEIGHTS)[0]
                ch = CHANNEL_BY_NAME[HIGH_INTENT[kind][0]]
                data = {"channel": ch.name}
                campaign = self._campaign(ch, rng)
                if campaign is not None:
                    data["campaign"] = campaign
                data["kind"] = kind
                self._insert(rng.uniform(first_day * 86400 + 600, (first_day + days) * 86400), "touch",
                             ch.touch_source, data)

    # ---- steps ----------------------------------------------------------------

    def _route(self) -> tuple[Owner, str]:
        rng = self.rng
        r = rng.random()
        if self.channel.name == "referral" and r < 0.6:
            return rng.choice(OWNERS), "named-account"
        if r < 0.8:
            return rng.choice(BY_TERRITORY[self.territory]), f"territory:{self.territory}"
        return rng.choice(OWNERS), "round-robin"

    def _assign(self, after_s: float, owner: Owner, rule: str) -> None:
        # upstream assignment rules (the CRM's): `router` is leadledger's own router, no inbound source
        self._emit(after_s, "assign", ASSIGN_SOURCE, {"owner": owner.name, "rule": rule})
        self.owner = owner.name

    def _touch(self, after_s: float, email_share: float = 0.0, *, hand_raiser: bool = False) -> None:
        """A touch of the journey: a low-intent kind (a hand-raiser's: a demo request or the prices)."""
        rng = self.rng
        if hand_raiser:
            kind = rng.choice(HAND_RAISER_KINDS)
            ch = CHANNEL_BY_NAME[HIGH_INTENT[kind][0]]
        else:
            if rng.random() < email_share:
                ch = EMAIL
            else:
                # engagement on any channel, not only the one that captured the lead
                ch = self.channel if rng.random() < 0.35 else rng.choices(CHANNELS, cum_weights=CHANNEL_WEIGHTS)[0]
            kind = rng.choice(ch.low_intent_kinds)
        data: dict[str, Any] = {"channel": ch.name}
        campaign = self._campaign(ch)
        if campaign is not None:
            data["campaign"] = campaign
        data["kind"] = kind
        self._emit(after_s, "touch", ch.touch_source, data, work=rng.random() < 0.8)

    def _score(self, after_s: float, *, target: int | None = None, below: bool = False) -> None:
        """Emit a score; total is the mean of fit and behaviour, steered to `target` or below the threshold."""
        rng = self.rng
        fit = clamp(self.fit + rng.randint(-3, 3), 0, 100)
        total = (fit + self.behaviour) // 2 if target is None else target
        if below and self.threshold > 0:
            total = min(total, self.threshold - 1 - rng.randint(0, 8))
        total = clamp(total, 0, 100)
        behaviour = clamp(2 * total - fit, max(0, 2 * total - 100), min(100, 2 * total))
        fit = 2 * total - behaviour
        self._emit(after_s, "score", "scoring-engine", {"fit": fit, "behaviour": behaviour, "total": total})
        self.behaviour = behaviour
        self.score = total

    def _fire(self, trigger: str, after_s: float, source: str, *, work: bool = False, **fields: Any) -> None:
        """Emit a transition the stage table and its guard allow (else it is a bug here)."""
        rule = RULES[trigger]
        if self.stage not in rule.sources:
            raise RuntimeError(f"simulate: {trigger} is not allowed from {self.stage}")
        if rule.guard is not None:
            missing = rule.guard(GuardContext(
                score=self.score, owner=self.owner, mql_threshold=self.threshold,
                reason=fields.get("reason"), override=bool(fields.get("override")),
                amount=fields.get("amount"), currency=fields.get("currency"), bant=fields.get("bant"),
            ))
            if missing is not None:
                raise RuntimeError(f"simulate: {trigger} from {self.stage} would be refused: {missing}")
        self._emit(after_s, "transition", source, {"trigger": trigger, **fields}, work=work)
        self.stage = rule.dest
        if trigger in ("reject", "recycle"):
            self.owner = None  # the lead goes back to marketing

    # ---- time -----------------------------------------------------------------

    def _emit(self, after_s: float, kind: str, source: str, data: dict[str, Any], *,
              work: bool = False, exact: bool = False) -> None:
        t = self.t if exact else self.t + max(1000, int(after_s * SECOND))
        if work:  # people act in office hours
            t = self._office_hours(t)
        if self.routed is not None:
            self._reassigned_before(t)
        if t > self.end:
            raise HorizonReached
        self.events.append((t, kind, source, {"email": self.email, **data},
                            self.rng.random() < REDELIVERY_RATE))
        self.t = t

    def _insert(self, after_capture_s: float, kind: str, source: str, data: dict[str, Any]) -> None:
        """Place an event at a given time in the finished timeline (times stay strictly increasing)."""
        t = self.captured + int(after_capture_s * SECOND)
        times = [e[0] for e in self.events]
        i = bisect_left(times, t)
        while i < len(times) and times[i] == t:
            t += 1
            i += 1
        if t > self.end:
            return
        self.events.insert(i, (t, kind, source, {"email": self.email, **data},
                               self.extras_rng.random() < REDELIVERY_RATE))

    def _reassigned_before(self, t: int) -> None:
        """A routed life's step at `t`: the router reassigned the lead before it? Before the first
        contact that ends the owner's attempt (Preempted); later the new owner takes over."""
        assert self.routed is not None
        while self._taken < len(self.routed) and self.routed[self._taken][0] < t and self.owner is not None:
            if self._contact_phase:
                raise Preempted
            self.owner = self.routed[self._taken][1]
            self._taken += 1

    def _office_hours(self, t: int) -> int:
        """People in sales act on weekdays 08:00-18:00 UTC (a routed lead's owner: in their own time
        zone and hours): move `t` to the next such moment."""
        if self.routed is not None and self.owner is not None:
            return self._owner_hours(t, OWNER_BY_NAME.get(self.owner, UNKNOWN_REP))
        at = self.origin + timedelta(microseconds=t)
        if at.weekday() < 5 and 8 <= at.hour < 18:
            return t
        day = at.date() if at.hour < 8 else at.date() + timedelta(days=1)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        opens = datetime.combine(day, time(8), tzinfo=UTC) + timedelta(minutes=self.rng.uniform(0, 90))
        return max(t, (opens - self.origin) // timedelta(microseconds=1))

    def _owner_hours(self, t: int, owner: Owner) -> int:
        zone_name, opens_at, closes_at = OWNER_HOURS[owner.territory]
        zone = ZoneInfo(zone_name)
        at = (self.origin + timedelta(microseconds=t)).astimezone(zone)
        if at.weekday() < 5 and opens_at <= at.hour < closes_at:
            return t
        day = at.date() if at.hour < opens_at else at.date() + timedelta(days=1)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        opens = datetime.combine(day, time(opens_at), tzinfo=zone) + timedelta(minutes=self.rng.uniform(0, 90))
        return max(t, (opens - self.origin) // timedelta(microseconds=1))

    def _campaign(self, ch: Channel, rng: random.Random | None = None) -> str | None:
        rng = rng or self.rng
        if rng.random() < ch.no_campaign:
            return None
        return rng.choice(ch.campaigns)

    def _chance(self, p: float, step: str) -> float:
        """The chance of a step that an average lead takes with chance `p`, for this lead: its odds
        multiplied by propensity ** STEP_WEIGHT and the step's constant (STEP_ODDS)."""
        if p >= 1:
            return 1.0
        odds = p / (1 - p) * self._step_odds * STEP_ODDS[step]
        return odds / (1 + odds)


def clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson count with this mean (Knuth's method: the means here are small)."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


