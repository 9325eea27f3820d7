"""The simulated world: channels and their quality, owners, names, reasons, daily rhythm."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from itertools import accumulate
from typing import Any

#: A lead's simulated life ends this long after its capture (events later are not generated).
HORIZON = timedelta(days=180)
#: Share of messages delivered twice (same id and source), as Kafka at-least-once does.
REDELIVERY_RATE = 0.005
#: Share of won customers who come back for another product (recycle "upsell").
UPSELL_RATE = 0.3

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
COMPANY_C = ("GmbH", "Ltd", "Inc", "AG", "BV", "SAS", "Oy", "AB", "LLC", "Pte Ltd")

PHONE_PREFIX = {"emea": ("+49 30", "+44 20", "+33 1", "+31 20"), "na": ("+1 415", "+1 212", "+1 512"),
                 "apac": ("+65", "+81 3", "+61 2")}
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


