"""Deterministic, realistic inbound traffic for `leadledger simulate` (SPEC §7 messages).

Each lead's whole life is simulated when it is captured (leads in capture order,
one seeded `random.Random`), tracking its stage, score and owner so that every
message is one the stage table accepts; the per-lead timelines are then merged
by time with a heap that only holds the leads still active.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from itertools import accumulate
from typing import Any

from lifecycle.settings import DEFAULT_MQL_THRESHOLD
from lifecycle.stages import RULES, GuardContext, Stage
from schemas.codec import format_time

#: A lead's simulated life ends this long after its capture (events later are not generated).
HORIZON = timedelta(days=180)
#: Share of messages delivered twice (same id and source), as Kafka at-least-once does.
REDELIVERY_RATE = 0.005
#: Share of won customers who come back for another product (recycle "upsell").
UPSELL_RATE = 0.3

_SECOND = 1_000_000  # times inside the generator are integer microseconds after `start`
_HOUR = 3600 * _SECOND
_DAY = 24 * _HOUR
_MAX_CYCLES = 4  # marketing -> sales round trips per lead (bounded anyway by the horizon)


@dataclass(frozen=True)
class Channel:
    """An acquisition channel: its volume, its campaigns and how good its leads are."""

    name: str
    share: float  # share of first captures
    campaigns: tuple[str, ...]
    no_campaign: float  # share of its captures and touches without a campaign
    capture_source: str  # the upstream system that sends its captures
    touch_source: str
    touch_kinds: tuple[str, ...]
    spam: float  # disqualified right after capture (spam, duplicate, not a fit)
    fit: float  # mean fit score of its leads
    mql: float  # chance a fresh lead becomes an MQL
    sal: float  # chance a contacted MQL is accepted by sales
    sql: float  # chance a SAL becomes an SQL
    win: float  # chance an SQL is won
    deal: float  # median first deal (in the deal's currency)


CHANNELS: tuple[Channel, ...] = (
    Channel("referral", 0.06, ("partner-program", "customer-referral", "advocate-rewards"), 0.25,
            "web-forms", "crm", ("intro_call", "introduction"),
            spam=0.01, fit=66, mql=0.55, sal=0.82, sql=0.62, win=0.40, deal=24_000),
    Channel("webinar", 0.10, ("q1-cloud", "security-masterclass", "roi-deep-dive"), 0.05,
            "webinar-platform", "webinar-platform", ("webinar_registered", "webinar_attended"),
            spam=0.02, fit=60, mql=0.42, sal=0.72, sql=0.52, win=0.34, deal=16_000),
    Channel("event", 0.07, ("saas-expo-booth", "regional-roadshow", "customer-summit"), 0.10,
            "events-app", "events-app", ("booth_visit", "session_attended"),
            spam=0.03, fit=57, mql=0.35, sal=0.66, sql=0.46, win=0.30, deal=18_000),
    Channel("paid_search", 0.24, ("brand-search", "generic-crm-terms", "competitor-terms", "retargeting"),
            0.05, "web-forms", "ads-platform", ("ad_click",),
            spam=0.05, fit=48, mql=0.22, sal=0.56, sql=0.40, win=0.26, deal=11_000),
    Channel("organic", 0.18, ("blog", "seo-guides"), 0.55,
            "web-forms", "web-analytics", ("page_view", "content_download"),
            spam=0.04, fit=47, mql=0.20, sal=0.56, sql=0.40, win=0.27, deal=10_000),
    Channel("social", 0.21, ("linkedin-lead-gen", "twitter-promo", "facebook-awareness"), 0.10,
            "ads-platform", "ads-platform", ("ad_click", "post_engagement"),
            spam=0.10, fit=38, mql=0.08, sal=0.45, sql=0.30, win=0.18, deal=8_000),
    Channel("display", 0.14, ("banner-retargeting", "programmatic-awareness"), 0.15,
            "web-forms", "ads-platform", ("ad_click", "view_through"),
            spam=0.14, fit=34, mql=0.05, sal=0.40, sql=0.28, win=0.15, deal=7_000),
)
_CHANNEL_WEIGHTS = tuple(accumulate(c.share for c in CHANNELS))

#: Nurture e-mail is a touch channel only (nobody is captured by an e-mail).
EMAIL = Channel("email", 0.0, ("nurture-welcome", "nurture-product-tour", "monthly-newsletter",
                               "re-engagement"), 0.0, "marketing-automation", "marketing-automation",
                ("email_open", "email_click"), 0, 0, 0, 0, 0, 0, 0)


@dataclass(frozen=True)
class Owner:
    """A sales rep: where they sell and how fast (and how reliably) they answer a new lead."""

    name: str
    territory: str
    median_response_s: float
    ignores: float  # share of their assignments they never contact


OWNERS: tuple[Owner, ...] = (
    Owner("ana.silva", "emea", 4 * 60, 0.03),
    Owner("dana.kowalski", "emea", 3 * 3600, 0.10),
    Owner("emil.novak", "emea", 9 * 3600, 0.16),
    Owner("hana.sato", "apac", 90 * 60, 0.06),
    Owner("farah.haddad", "apac", 26 * 3600, 0.20),
    Owner("ben.okafor", "na", 15 * 60, 0.05),
    Owner("gus.lindqvist", "na", 2 * 60, 0.02),
    Owner("chen.wei", "na", 50 * 60, 0.08),
)
_BY_TERRITORY: dict[str, tuple[Owner, ...]] = {
    t: tuple(o for o in OWNERS if o.territory == t) for t in ("emea", "na", "apac")
}

_FIRST = ("ada", "alan", "grace", "linus", "margaret", "dennis", "barbara", "ken", "frances", "tim",
          "radia", "guido", "sophie", "niklaus", "katherine", "edsger", "hedy", "john", "joan", "bjarne",
          "anita", "yukihiro", "lena", "omar", "priya", "mateo", "ingrid", "kwame", "mei", "lars",
          "fatima", "diego", "aiko", "noah", "elena", "ravi", "zoe", "jonas", "amara", "felix")
_LAST = ("lovelace", "turing", "hopper", "torvalds", "hamilton", "ritchie", "liskov", "thompson", "allen",
         "berners", "perlman", "rossum", "wilson", "wirth", "johnson", "dijkstra", "lamarr", "backus",
         "clarke", "stroustrup", "borg", "matsumoto", "nilsson", "haddad", "sharma", "garcia", "berg",
         "mensah", "chen", "larsen", "okafor", "rossi", "tanaka", "weber", "petrov", "kumar", "dubois",
         "novak", "silva", "fischer")
_COMPANY_A = ("North", "Blue", "Bright", "Iron", "Silver", "Green", "Red", "Swift", "Clear", "Deep",
              "High", "True", "Open", "Star", "Stone", "Cloud", "River", "Sun", "Oak", "Polar")
_COMPANY_B = ("wind", "peak", "forge", "field", "wave", "line", "gate", "works", "bridge", "point",
              "labs", "stack", "grid", "path", "port", "core", "leaf", "mark", "shore", "bay")
_COMPANY_C = ("GmbH", "Ltd", "Inc", "AG", "BV", "SAS", "Oy", "AB", "LLC", "Pte Ltd")

_PHONE_PREFIX = {"emea": ("+49 30", "+44 20", "+33 1", "+31 20"), "na": ("+1 415", "+1 212", "+1 512"),
                 "apac": ("+65", "+81 3", "+61 2")}
_CURRENCIES = {"emea": ("EUR", "EUR", "EUR", "GBP"), "na": ("USD",), "apac": ("USD", "USD", "SGD")}

_SPAM_REASONS = ("spam", "spam", "duplicate", "not a fit")
_LATE_DQ_REASONS = ("not a fit", "duplicate", "competitor research")
_REJECT_REASONS = ("not ready to buy", "no budget", "wrong contact person", "student or job seeker",
                   "no response to outreach")
_SAL_REJECT_REASONS = ("no budget this year", "no active project", "too small for our offering")
_LOSE_REASONS = ("lost to competitor", "price too high", "no decision", "project cancelled",
                 "chose to build in-house")
_OVERRIDE_REASONS = ("requested a demo via chat", "strategic target account", "met at the booth",
                     "referred by an executive")
_CONSENT_PURPOSES = ("marketing e-mail", "newsletter", "sales calls")
_BANT = {
    "budget": ("approved", "approved: 25-50k", "pending CFO sign-off", "allocated in next budget",
               "approved: under 10k"),
    "authority": ("decision maker", "VP sponsor", "procurement involved", "economic buyer identified",
                  "champion with CFO access"),
    "need": ("replace spreadsheets", "consolidate tools", "compliance requirement", "scale the sales team",
             "better pipeline reporting"),
    "timeline": ("this quarter", "within 30 days", "next quarter", "before the June renewal",
                 "within 90 days"),
}

# Capture intensity by hour of day (UTC) and weekday: forms are filled in office hours.
_HOUR_WEIGHT = (0.2, 0.15, 0.1, 0.1, 0.15, 0.3, 0.6, 1.0, 1.6, 2.0, 2.2, 2.1,
                1.8, 2.0, 2.2, 2.1, 1.8, 1.4, 1.0, 0.8, 0.7, 0.6, 0.4, 0.3)
_WEEKEND_WEIGHT = 0.3

_Event = tuple[int, str, str, dict[str, Any], bool]  # (time, kind, source, data, redelivered)


class _HorizonReached(Exception):
    """Internal: the lead's next event would fall after its horizon; its life ends here."""


class _CaptureClock:
    """Capture times spread over `days` with office-hour and weekday peaks, in lead order."""

    def __init__(self, origin: datetime, days: int, leads: int) -> None:
        weights = []
        for hour in range(days * 24):
            at = origin + timedelta(hours=hour)
            weights.append(_HOUR_WEIGHT[at.hour] * (_WEEKEND_WEIGHT if at.weekday() >= 5 else 1.0))
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
        return hour * _HOUR + int(within * _HOUR)


class _LeadLife:
    """One simulated lead: its stage, score and owner as the system will see them."""

    def __init__(self, index: int, captured: int, origin: datetime, rng: random.Random,
                 companies: int, mql_threshold: int) -> None:
        self.rng = rng
        self.origin = origin
        self.threshold = mql_threshold
        self.t = captured
        self.captured = captured
        self.end = captured + HORIZON // timedelta(microseconds=1)
        self.events: list[_Event] = []
        self.stage: Stage | None = None
        self.score: int | None = None
        self.owner: str | None = None
        self.account_owner: Owner | None = None
        self.channel = rng.choices(CHANNELS, cum_weights=_CHANNEL_WEIGHTS)[0]
        company = rng.randrange(companies)
        self.company_no = company
        self.territory = ("emea", "emea", "emea", "emea", "emea", "na", "na", "na", "na", "apac")[company % 10]
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        self.name = f"{first.title()} {last.title()}"
        self.email = f"{first}.{last}.{index + 1}@example-{company}.com"
        self.fit = _clamp(round(rng.gauss(self.channel.fit, 16)), 3, 98)
        self.behaviour = rng.randint(5, 30)

    # ---- the life -------------------------------------------------------------

    def live(self) -> list[_Event]:
        try:
            self._capture()
            self._journey()
        except _HorizonReached:
            pass
        self._extras()
        return self.events

    def _capture(self) -> None:
        rng, ch = self.rng, self.channel
        data: dict[str, Any] = {"channel": ch.name}
        campaign = self._campaign(ch)
        if campaign is not None:
            data["campaign"] = campaign
        c = self.company_no
        data["name"] = self.name
        data["company"] = (f"{_COMPANY_A[c % 20]}{_COMPANY_B[(c // 20) % 20]} "
                           f"{_COMPANY_C[(c // 400) % len(_COMPANY_C)]}")
        if rng.random() < 0.6:
            data["phone"] = f"{rng.choice(_PHONE_PREFIX[self.territory])} {rng.randint(1_000_000, 9_999_999)}"
        r = rng.random()
        if r < 0.86:
            data["consent"] = True
        elif r < 0.95:
            data["consent"] = False
        self._emit(0, "capture", ch.capture_source, data, exact=True)
        self.stage = Stage.CAPTURED

    def _journey(self) -> None:
        rng, ch = self.rng, self.channel
        if rng.random() < ch.spam:
            if rng.random() < 0.5:
                self._score(rng.uniform(30, 600), below=True)
            self._fire("disqualify", rng.uniform(600, 2 * 86400), "marketing-automation",
                       reason=rng.choice(_SPAM_REASONS))
            return
        self._score(rng.uniform(20, 900), below=True)
        p_mql = ch.mql
        for cycle in range(_MAX_CYCLES):
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
            self.t += int(rng.uniform(7, 45) * _DAY)
        will = rng.random() < p_mql
        override = will and rng.random() < 0.05
        if will and not override and rng.random() < (0.4 if first else 0.25):
            # a hand-raiser (demo request, pricing page): scored hot, MQL within minutes
            if not first or rng.random() < 0.4:
                self._touch(rng.uniform(600, 3 * 86400))
            self._score(rng.uniform(30, 1800), target=rng.randint(self.threshold, max(self.threshold, 96)))
            self._fire("qualify_mql", rng.uniform(30, 900), "marketing-automation")
            return True
        if not will and rng.random() < 0.3:
            # never engages: a stray touch at most, the lead stays where it is
            if rng.random() < 0.4:
                self._touch(rng.uniform(3600, 20 * 86400))
            if rng.random() < 0.1:
                self._fire("disqualify", rng.uniform(5, 60) * 86400, "marketing-automation",
                           reason=rng.choice(_LATE_DQ_REASONS))
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
                           reason=rng.choice(_LATE_DQ_REASONS))
            return False
        if override and (self.score is None or self.score < self.threshold):
            self._fire("qualify_mql", rng.uniform(1, 10) * 86400, "crm", work=True,
                       override=True, reason=rng.choice(_OVERRIDE_REASONS))
            return True
        # the activity that tips the score over the threshold
        self._touch(rng.uniform(1, 10) * 86400, email_share=0.4)
        self._score(rng.uniform(30, 1800), target=rng.randint(self.threshold, max(self.threshold, 92)))
        self._fire("qualify_mql", rng.uniform(30, 900), "marketing-automation")
        return True

    def _sales(self, *, upsell: bool) -> str:
        """From mql: route, contact, accept, qualify, close. Returns how the attempt ended."""
        rng, ch = self.rng, self.channel
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

        if rng.random() >= min(0.95, ch.sal * (1.2 if upsell else 1.0)):
            if rng.random() < 0.85:
                self._fire("reject", rng.uniform(0.5, 72) * 3600, "crm", work=True,
                           reason=rng.choice(_REJECT_REASONS))
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
        if rng.random() >= min(0.95, ch.sql * (1.4 if upsell else 1.0)):
            r = rng.random()
            if r < 0.5:
                self._fire("reject", rng.uniform(2, 21) * 86400, "crm", work=True,
                           reason=rng.choice(_SAL_REJECT_REASONS))
                return "recycled"
            if r < 0.85:
                self._fire("recycle", rng.uniform(2, 21) * 86400, "crm", work=True, reason="not now")
                return "recycled"
            self._fire("disqualify", rng.uniform(2, 21) * 86400, "crm", work=True, reason="not a fit")
            return "disqualified"
        bant = {field: rng.choice(values) for field, values in _BANT.items()}
        self._fire("qualify_sql", rng.uniform(2, 21 if not upsell else 7) * 86400, "crm", work=True,
                   bant=bant)

        for _ in range(rng.randint(0, 3)):
            self._touch(rng.uniform(1, 10) * 86400, email_share=0.25)
        close_days = rng.uniform(10, 60) if not upsell else rng.uniform(5, 25)
        if rng.random() < min(0.9, ch.win * (1.6 if upsell else 1.0)):
            base = ch.deal * (0.35 if upsell else 1.0)
            amount = float(max(500, round(base * rng.lognormvariate(0, 0.6) / 50) * 50))
            self._fire("win", close_days * 86400, "crm", work=True, amount=amount,
                       currency=rng.choice(_CURRENCIES[self.territory]))
            return "won"
        if rng.random() < 0.75:
            self._fire("lose", close_days * 86400, "crm", work=True, reason=rng.choice(_LOSE_REASONS))
            return "lost"
        self._fire("recycle", close_days * 86400, "crm", work=True, reason="not now")
        return "recycled"

    def _extras(self) -> None:
        """Second forms and consent changes, placed anywhere in the lead's first weeks."""
        rng = self.rng
        recaptures = 1 if rng.random() < 0.07 else 0
        recaptures += 1 if rng.random() < 0.01 else 0
        for _ in range(recaptures):
            ch = rng.choices(CHANNELS, cum_weights=_CHANNEL_WEIGHTS)[0]
            if ch is self.channel:
                ch = CHANNELS[(CHANNELS.index(ch) + 1) % len(CHANNELS)]
            data: dict[str, Any] = {"channel": ch.name}
            campaign = self._campaign(ch)
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
                         {"given": change, "purpose": rng.choice(_CONSENT_PURPOSES)})

    # ---- steps ----------------------------------------------------------------

    def _route(self) -> tuple[Owner, str]:
        rng = self.rng
        r = rng.random()
        if self.channel.name == "referral" and r < 0.6:
            return rng.choice(OWNERS), "named-account"
        if r < 0.8:
            return rng.choice(_BY_TERRITORY[self.territory]), f"territory:{self.territory}"
        return rng.choice(OWNERS), "round-robin"

    def _assign(self, after_s: float, owner: Owner, rule: str) -> None:
        self._emit(after_s, "assign", "router", {"owner": owner.name, "rule": rule})
        self.owner = owner.name

    def _touch(self, after_s: float, email_share: float = 0.0) -> None:
        rng = self.rng
        if rng.random() < email_share:
            ch = EMAIL
        else:
            # engagement on any channel, not only the one that captured the lead
            ch = self.channel if rng.random() < 0.35 else rng.choices(CHANNELS, cum_weights=_CHANNEL_WEIGHTS)[0]
        data: dict[str, Any] = {"channel": ch.name}
        campaign = self._campaign(ch)
        if campaign is not None:
            data["campaign"] = campaign
        data["kind"] = rng.choice(ch.touch_kinds)
        self._emit(after_s, "touch", ch.touch_source, data, work=rng.random() < 0.8)

    def _score(self, after_s: float, *, target: int | None = None, below: bool = False) -> None:
        """Emit a score; total is the mean of fit and behaviour, steered to `target` or below the threshold."""
        rng = self.rng
        fit = _clamp(self.fit + rng.randint(-3, 3), 0, 100)
        total = (fit + self.behaviour) // 2 if target is None else target
        if below and self.threshold > 0:
            total = min(total, self.threshold - 1 - rng.randint(0, 8))
        total = _clamp(total, 0, 100)
        behaviour = _clamp(2 * total - fit, max(0, 2 * total - 100), min(100, 2 * total))
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
        t = self.t if exact else self.t + max(1000, int(after_s * _SECOND))
        if work:  # people act in office hours
            t = self._office_hours(t)
        if t > self.end:
            raise _HorizonReached
        self.events.append((t, kind, source, {"email": self.email, **data},
                            self.rng.random() < REDELIVERY_RATE))
        self.t = t

    def _insert(self, after_capture_s: float, kind: str, source: str, data: dict[str, Any]) -> None:
        """Place an event at a given time in the finished timeline (times stay strictly increasing)."""
        t = self.captured + int(after_capture_s * _SECOND)
        times = [e[0] for e in self.events]
        i = bisect_left(times, t)
        while i < len(times) and times[i] == t:
            t += 1
            i += 1
        if t > self.end:
            return
        self.events.insert(i, (t, kind, source, {"email": self.email, **data},
                               self.rng.random() < REDELIVERY_RATE))

    def _office_hours(self, t: int) -> int:
        """People in sales act on weekdays 08:00-18:00 UTC: move `t` to the next such moment."""
        at = self.origin + timedelta(microseconds=t)
        if at.weekday() < 5 and 8 <= at.hour < 18:
            return t
        day = at.date() if at.hour < 8 else at.date() + timedelta(days=1)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        opens = datetime.combine(day, time(8), tzinfo=UTC) + timedelta(minutes=self.rng.uniform(0, 90))
        return max(t, (opens - self.origin) // timedelta(microseconds=1))

    def _campaign(self, ch: Channel) -> str | None:
        if self.rng.random() < ch.no_campaign:
            return None
        return self.rng.choice(ch.campaigns)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def generate(*, leads: int, seed: int, start: datetime, days: int,
             mql_threshold: int = DEFAULT_MQL_THRESHOLD) -> Iterator[dict[str, Any]]:
    """Yield inbound messages (CloudEvents dicts) for `leads` leads captured over `days` from `start`.

    The stream is in non-decreasing `time` order across all leads, and the same
    arguments always give the same messages. Every message is accepted by a
    ledger whose MQL threshold is `mql_threshold`; about 0.5 % are re-delivered
    (same id and source) right after the original, and count as duplicates.
    """
    if leads < 0:
        raise ValueError(f"leads must be >= 0, got {leads}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if not 0 <= mql_threshold <= 100:
        raise ValueError(f"mql_threshold must be 0-100, got {mql_threshold}")
    origin = (start if start.tzinfo is not None else start.replace(tzinfo=UTC)).astimezone(UTC)
    return _stream(leads, seed, origin, days, mql_threshold)


def _stream(leads: int, seed: int, origin: datetime, days: int, mql_threshold: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    if leads == 0:
        return
    clock = _CaptureClock(origin, days, leads)
    companies = max(20, math.ceil(leads / 3))
    counters: dict[str, int] = {}
    # One entry per active lead: (time of its next message, lead number, its remaining
    # messages latest first), so memory holds only what is still to be sent.
    heap: list[tuple[int, int, list[_Event]]] = []
    admitted = 0
    next_capture: int | None = clock.at(0, rng)
    while True:
        # Simulate every lead captured by the time of the next message due (leads come in capture order).
        while next_capture is not None and (not heap or next_capture <= heap[0][0]):
            life = _LeadLife(admitted, next_capture, origin, rng, companies, mql_threshold).live()
            life.reverse()
            heapq.heappush(heap, (next_capture, admitted, life))
            admitted += 1
            next_capture = clock.at(admitted, rng) if admitted < leads else None
        if not heap:
            return
        _, index, life = heap[0]
        at, kind, source, data, redelivered = life.pop()
        if life:
            heapq.heapreplace(heap, (life[-1][0], index, life))
        else:
            heapq.heappop(heap)
        counters[source] = counters.get(source, 0) + 1
        message = {
            "specversion": "1.0",
            "id": f"{source}-s{seed}-{counters[source]:09d}",
            "source": source,
            "type": f"leadledger.inbound.{kind}.v1",
            "time": format_time(origin + timedelta(microseconds=at)),
            "data": data,
        }
        yield message
        if redelivered:
            yield {**message, "data": dict(data)}
