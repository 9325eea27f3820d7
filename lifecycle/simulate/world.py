"""The simulated world: channels and their quality, owners, companies and their countries, names,
reasons, daily rhythm, and what makes a lead likely to buy.

Every lead has a latent propensity, an odds factor drawn when it is captured: its fit, known from
its firmographics, times its intent, which no form states, divided by propensity_scale() (so that
the step factor below averages 1 over the world's leads):

- fit: employees (under 50: x0.6, 50-199: x1, 200-999: x2, 1000 and more: x3), industry (software
  and financial services x1.5, professional services x1.2, retail x0.7, media x0.6, education x0.5,
  the others x1), role (executive x1.8, manager x1.5, practitioner x0.8, student x0.25) and a
  free-mail address (x0.5);
- intent: log-normal with median 1 and log-sd INTENT_SIGMA.

The odds of each step of the journey (MQL, accepted by sales, SQL, won) are multiplied by
propensity ** STEP_WEIGHT and the step's STEP_ODDS, so that over the four steps a factor of 2
about doubles the chance of being won, while the funnel as a whole converts as the channels say.
Intent also sets how many high-intent touches (HIGH_INTENT: pricing-page visits, demo requests,
webinars attended, introduction calls) a lead makes of its own accord: Poisson with mean intent x
INTENT_TOUCHES_FIRST_WEEK in the week after capture and intent x INTENT_TOUCHES_LATER in the
following INTENT_LATER_DAYS. The journey's own touches (nurture e-mail, ads, page views) are
low-intent kinds whatever the lead, except a hand-raiser's demo request or look at the prices just
before its MQL. docs/simulate-scoring.md states the rule for users who write a scoring model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import timedelta
from functools import cache, lru_cache
from itertools import accumulate
from typing import Any

#: A lead's simulated life ends this long after its capture (events later are not generated).
HORIZON = timedelta(days=180)
#: Share of messages delivered twice (same id and source), as Kafka at-least-once does.
REDELIVERY_RATE = 0.005
#: Share of won customers who come back for another product (recycle "upsell").
UPSELL_RATE = 0.3

#: The upstream system whose assignment rules send the simulated `assign` messages (not `router`:
#: that actor is leadledger's own router, which no inbound message may name).
ASSIGN_SOURCE = "crm-assignment"

SECOND = 1_000_000  # times inside the generator are integer microseconds after `start`
HOUR = 3600 * SECOND
DAY = 24 * HOUR
MAX_CYCLES = 4  # marketing -> sales round trips per lead (bounded anyway by the horizon)


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

    @property
    def low_intent_kinds(self) -> tuple[str, ...]:
        """Its touch kinds that are not HIGH_INTENT (every channel has some)."""
        return tuple(k for k in self.touch_kinds if k not in HIGH_INTENT)


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
            "web-forms", "web-analytics", ("page_view", "content_download", "pricing_page", "demo_requested"),
            spam=0.04, fit=47, mql=0.20, sal=0.56, sql=0.40, win=0.27, deal=10_000),
    Channel("social", 0.21, ("linkedin-lead-gen", "twitter-promo", "facebook-awareness"), 0.10,
            "ads-platform", "ads-platform", ("ad_click", "post_engagement"),
            spam=0.10, fit=38, mql=0.08, sal=0.45, sql=0.30, win=0.18, deal=8_000),
    Channel("display", 0.14, ("banner-retargeting", "programmatic-awareness"), 0.15,
            "web-forms", "ads-platform", ("ad_click", "view_through"),
            spam=0.14, fit=34, mql=0.05, sal=0.40, sql=0.28, win=0.15, deal=7_000),
)
CHANNEL_WEIGHTS = tuple(accumulate(c.share for c in CHANNELS))

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
OWNER_BY_NAME: dict[str, Owner] = {o.name: o for o in OWNERS}
#: Where and when each territory's reps work (routed simulations): time zone, opening and closing hour
OWNER_HOURS: dict[str, tuple[str, int, int]] = {
    "emea": ("Europe/Berlin", 8, 18), "na": ("America/New_York", 9, 17), "apac": ("Asia/Tokyo", 9, 18),
}
BY_TERRITORY: dict[str, tuple[Owner, ...]] = {
    t: tuple(o for o in OWNERS if o.territory == t) for t in ("emea", "na", "apac")
}

FIRST = ("ada", "alan", "grace", "linus", "margaret", "dennis", "barbara", "ken", "frances", "tim",
          "radia", "guido", "sophie", "niklaus", "katherine", "edsger", "hedy", "john", "joan", "bjarne",
          "anita", "yukihiro", "lena", "omar", "priya", "mateo", "ingrid", "kwame", "mei", "lars",
          "fatima", "diego", "aiko", "noah", "elena", "ravi", "zoe", "jonas", "amara", "felix")
LAST = ("lovelace", "turing", "hopper", "torvalds", "hamilton", "ritchie", "liskov", "thompson", "allen",
         "berners", "perlman", "rossum", "wilson", "wirth", "johnson", "dijkstra", "lamarr", "backus",
         "clarke", "stroustrup", "borg", "matsumoto", "nilsson", "haddad", "sharma", "garcia", "berg",
         "mensah", "chen", "larsen", "okafor", "rossi", "tanaka", "weber", "petrov", "kumar", "dubois",
         "novak", "silva", "fischer")
COMPANY_A = ("North", "Blue", "Bright", "Iron", "Silver", "Green", "Red", "Swift", "Clear", "Deep",
              "High", "True", "Open", "Star", "Stone", "Cloud", "River", "Sun", "Oak", "Polar")
COMPANY_B = ("wind", "peak", "forge", "field", "wave", "line", "gate", "works", "bridge", "point",
              "labs", "stack", "grid", "path", "port", "core", "leaf", "mark", "shore", "bay")
#: a third word in the names of companies beyond the first 400 (so every company has a name, and a
#: domain, of its own)
COMPANY_D = ("Systems", "Group", "Digital", "Analytics", "Solutions", "Partners", "Software", "Industries",
              "Networks", "Dynamics")


@dataclass(frozen=True)
class Country:
    """Where a company is: its share of the companies, the territory its owners sell in, the languages
    its people write in (weighted), and what its names, domains and phone numbers look like."""

    code: str  # ISO 3166-1 alpha-2
    share: float
    territory: str  # emea | na | apac (BY_TERRITORY)
    languages: tuple[tuple[str, float], ...]  # ISO 639-1, weight
    tld: str
    legal_forms: tuple[str, ...]
    phone: tuple[str, ...]
    free_mail: tuple[str, ...]  # free-mail domains people there use (schemas/free_email_domains.txt)


COUNTRIES: tuple[Country, ...] = (
    Country("DE", 0.16, "emea", (("de", 1),), "de", ("GmbH", "GmbH", "AG"), ("+49 30", "+49 89", "+49 40"),
            ("gmail.com", "gmx.de", "web.de", "t-online.de")),
    Country("AT", 0.03, "emea", (("de", 1),), "at", ("GmbH",), ("+43 1",), ("gmail.com", "gmx.at")),
    Country("CH", 0.03, "emea", (("de", 0.65), ("fr", 0.25), ("it", 0.10)), "ch", ("AG", "GmbH", "SA"),
            ("+41 44", "+41 22"), ("gmail.com", "bluewin.ch", "gmx.ch")),
    Country("FR", 0.06, "emea", (("fr", 1),), "fr", ("SAS", "SA"), ("+33 1", "+33 4"),
            ("gmail.com", "orange.fr", "free.fr")),
    Country("GB", 0.08, "emea", (("en", 1),), "co.uk", ("Ltd", "Ltd", "plc"), ("+44 20", "+44 161"),
            ("gmail.com", "hotmail.co.uk", "btinternet.com")),
    Country("IE", 0.01, "emea", (("en", 1),), "ie", ("Ltd",), ("+353 1",), ("gmail.com", "eircom.net")),
    Country("NL", 0.04, "emea", (("nl", 1),), "nl", ("BV",), ("+31 20", "+31 10"), ("gmail.com", "ziggo.nl")),
    Country("BE", 0.02, "emea", (("nl", 0.55), ("fr", 0.45)), "be", ("NV", "SA"), ("+32 2",),
            ("gmail.com", "skynet.be", "telenet.be")),
    Country("ES", 0.03, "emea", (("es", 1),), "es", ("SL", "SA"), ("+34 91", "+34 93"),
            ("gmail.com", "hotmail.es")),
    Country("IT", 0.03, "emea", (("it", 1),), "it", ("Srl", "SpA"), ("+39 02", "+39 06"),
            ("gmail.com", "libero.it")),
    Country("SE", 0.02, "emea", (("sv", 1),), "se", ("AB",), ("+46 8",), ("gmail.com", "hotmail.se")),
    Country("PL", 0.02, "emea", (("pl", 1),), "pl", ("sp. z o.o.",), ("+48 22",), ("gmail.com", "wp.pl", "onet.pl")),
    Country("US", 0.26, "na", (("en", 0.95), ("es", 0.05)), "com", ("Inc", "Inc", "LLC", "Corp"),
            ("+1 415", "+1 212", "+1 512", "+1 617"), ("gmail.com", "yahoo.com", "outlook.com", "comcast.net")),
    Country("CA", 0.04, "na", (("en", 0.78), ("fr", 0.22)), "ca", ("Inc", "Ltd"), ("+1 416", "+1 514"),
            ("gmail.com", "hotmail.ca", "rogers.com")),
    Country("MX", 0.03, "na", (("es", 1),), "com.mx", ("SA de CV",), ("+52 55",),
            ("gmail.com", "hotmail.com", "yahoo.com.mx")),
    Country("BR", 0.04, "na", (("pt", 1),), "com.br", ("Ltda", "SA"), ("+55 11", "+55 21"),
            ("gmail.com", "uol.com.br", "hotmail.com.br")),
    Country("SG", 0.03, "apac", (("en", 1),), "com.sg", ("Pte Ltd",), ("+65",), ("gmail.com", "yahoo.com.sg")),
    Country("JP", 0.03, "apac", (("ja", 1),), "co.jp", ("KK",), ("+81 3",), ("gmail.com", "yahoo.co.jp")),
    Country("AU", 0.03, "apac", (("en", 1),), "com.au", ("Pty Ltd",), ("+61 2", "+61 3"),
            ("gmail.com", "bigpond.com")),
    Country("IN", 0.01, "apac", (("en", 1),), "in", ("Pvt Ltd",), ("+91 80",), ("gmail.com", "rediffmail.com")),
)
COUNTRY_WEIGHTS = tuple(accumulate(c.share for c in COUNTRIES))

INDUSTRIES = (("software", 0.22), ("manufacturing", 0.16), ("financial services", 0.12),
              ("professional services", 0.12), ("healthcare", 0.09), ("retail", 0.09), ("logistics", 0.06),
              ("media", 0.05), ("education", 0.05), ("energy", 0.04))
INDUSTRY_WEIGHTS = tuple(accumulate(w for _, w in INDUSTRIES))
#: employees per company: log-normal around a median, within these bounds
EMPLOYEES_MEDIAN, EMPLOYEES_SIGMA, EMPLOYEES_MIN, EMPLOYEES_MAX = 120, 1.9, 5, 50_000
ROLES = ("executive", "manager", "practitioner", "student")
#: how often each role signs up, at a small company and at a larger one
ROLE_WEIGHTS_SMALL, ROLE_WEIGHTS = (0.33, 0.28, 0.32, 0.07), (0.11, 0.38, 0.45, 0.06)
#: share of a company's people who sign up with a free-mail address (more at small companies)
FREE_MAIL_SMALL, FREE_MAIL = 0.35, 0.10
SMALL_COMPANY = 50  # employees below this: a small company (more executives, more free mail)


@dataclass(frozen=True)
class Company:
    """A simulated company: the same for every lead that works there (and every seed)."""

    name: str
    domain: str  # its e-mail domain: the leads of one company share it (one account)
    country: Country
    industry: str
    employees: int

    @property
    def small(self) -> bool:
        return self.employees < SMALL_COMPANY


@lru_cache(maxsize=100_000)
def company(number: int) -> Company:
    """Company `number` of the world: its name, domain and firmographics, from its number alone."""
    rng = random.Random(f"leadledger-simulated-company-{number}")  # a str seed: stable across runs
    country = rng.choices(COUNTRIES, cum_weights=COUNTRY_WEIGHTS)[0]
    industry = rng.choices(INDUSTRIES, cum_weights=INDUSTRY_WEIGHTS)[0][0]
    raw = math.exp(rng.gauss(math.log(EMPLOYEES_MEDIAN), EMPLOYEES_SIGMA))
    employees = min(EMPLOYEES_MAX, max(EMPLOYEES_MIN, _rounded(raw)))
    base = f"{COMPANY_A[number % 20]}{COMPANY_B[(number // 20) % 20]}"
    tier, cycle = divmod(number // 400, len(COMPANY_D) + 1)  # tier 0: no third word
    words = [base] + ([COMPANY_D[cycle - 1]] if cycle else [])
    slug = "-".join(w.lower() for w in words) + (str(tier + 1) if tier else "")
    name = " ".join([*words, *([str(tier + 1)] if tier else []), rng.choice(country.legal_forms)])
    return Company(name, f"{slug}.{country.tld}", country, industry, employees)


# ---- what makes a lead likely to buy (the module docstring) --------------------------------------

#: fit: the odds factor of a company of at least this many employees (first match)
EMPLOYEE_ODDS = ((1000, 3.0), (200, 2.0), (SMALL_COMPANY, 1.0), (0, 0.6))
INDUSTRY_ODDS = {"software": 1.5, "financial services": 1.5, "professional services": 1.2, "retail": 0.7,
                 "media": 0.6, "education": 0.5}  # the others: 1
ROLE_ODDS = {"executive": 1.8, "manager": 1.5, "practitioner": 0.8, "student": 0.25}
FREE_MAIL_ODDS = 0.5
#: intent: the log-sd of the log-normal factor (median 1) that no form states
INTENT_SIGMA = 0.8
#: each step's odds are multiplied by propensity ** STEP_WEIGHT and by the step's constant, which
#: keeps the world's mean rate of the step near the channels' (a later step's leads are the ones of
#: higher propensity: without it, more of them would pass)
STEP_WEIGHT = 0.5
STEP_ODDS = {"mql": 1.13, "sal": 1.0, "sql": 0.82, "win": 0.76}
#: high-intent touch kinds a lead makes of its own accord: kind -> (its channel, its share of them)
HIGH_INTENT: dict[str, tuple[str, float]] = {
    "pricing_page": ("organic", 0.35), "demo_requested": ("organic", 0.2),
    "webinar_attended": ("webinar", 0.3), "intro_call": ("referral", 0.15),
}
#: high-intent touches an average lead (intent 1) makes in the week after capture, and in weeks 2-12
INTENT_TOUCHES_FIRST_WEEK, INTENT_TOUCHES_LATER = 0.4, 0.25
INTENT_LATER_DAYS = 84


def fit_odds(company: Company, role: str, free_mail: bool) -> float:
    """The fit factor of a lead: the product of its firmographics' factors."""
    employees = next(odds for least, odds in EMPLOYEE_ODDS if company.employees >= least)
    return (employees * INDUSTRY_ODDS.get(company.industry, 1.0) * ROLE_ODDS[role]
            * (FREE_MAIL_ODDS if free_mail else 1.0))


@cache
def propensity_scale(companies: int = 5000) -> float:
    """What a lead's fit x intent is divided by to give its propensity: the scale at which the
    world's leads (of its first `companies` companies, role and free mail weighted as leads draw
    them) have a mean step factor propensity ** STEP_WEIGHT of 1."""
    total = 0.0
    for number in range(companies):
        found = company(number)
        weights, free = (ROLE_WEIGHTS_SMALL, FREE_MAIL_SMALL) if found.small else (ROLE_WEIGHTS, FREE_MAIL)
        for role, weight in zip(ROLES, weights, strict=True):
            total += weight * (free * fit_odds(found, role, True) ** STEP_WEIGHT
                               + (1 - free) * fit_odds(found, role, False) ** STEP_WEIGHT)
    mean_intent = math.exp((STEP_WEIGHT * INTENT_SIGMA) ** 2 / 2)  # of intent ** STEP_WEIGHT
    return float((total / companies * mean_intent) ** (1 / STEP_WEIGHT))


def _rounded(value: float) -> int:
    """A head count as companies state it: two significant digits from 100 up."""
    count = round(value)
    if count < 100:
        return count
    magnitude = 10 ** (len(str(count)) - 2)
    return round(count / magnitude) * magnitude


CURRENCIES = {"emea": ("EUR", "EUR", "EUR", "GBP"), "na": ("USD",), "apac": ("USD", "USD", "SGD")}

SPAM_REASONS = ("spam", "spam", "duplicate", "not a fit")
LATE_DQ_REASONS = ("not a fit", "duplicate", "competitor research")
REJECT_REASONS = ("not ready to buy", "no budget", "wrong contact person", "student or job seeker",
                   "no response to outreach")
SAL_REJECT_REASONS = ("no budget this year", "no active project", "too small for our offering")
LOSE_REASONS = ("lost to competitor", "price too high", "no decision", "project cancelled",
                 "chose to build in-house")
OVERRIDE_REASONS = ("requested a demo via chat", "strategic target account", "met at the booth",
                     "referred by an executive")
CONSENT_PURPOSES = ("marketing e-mail", "newsletter", "sales calls")
BANT = {
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
HOUR_WEIGHT = (0.2, 0.15, 0.1, 0.1, 0.15, 0.3, 0.6, 1.0, 1.6, 2.0, 2.2, 2.1,
                1.8, 2.0, 2.2, 2.1, 1.8, 1.4, 1.0, 0.8, 0.7, 0.6, 0.4, 0.3)
WEEKEND_WEIGHT = 0.3

Event = tuple[int, str, str, dict[str, Any], bool]  # (time, kind, source, data, redelivered)


