"""Shared helpers for the read-model tests: simulated stores and an independent reference.

The reference computes every SPEC §4 metric in plain Python straight from the
exported CloudEvents envelopes (`lifecycle.audit.export_envelopes`); it shares no
code with `projections/`, so agreement means something. Revenue is converted here
too, by its own reading of the contract: the rate of the won amount's currency in
effect on the won date (UTC), the reporting currency at 1, anything else unconverted.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from itertools import pairwise
from math import ceil
from typing import Any

import orjson

from leadledger.bootstrap import bootstrap
from lifecycle.application import LeadLedger
from lifecycle.audit import export_envelopes
from lifecycle.inbound import InboundHandler
from lifecycle.settings import Settings
from lifecycle.simulate import generate

START = datetime(2026, 1, 5, tzinfo=UTC)
STAGES = ("captured", "nurtured", "mql", "sal", "sql", "won", "recycled", "lost", "disqualified")
MAIN = ("captured", "mql", "sal", "sql", "won")


def simulated_app(settings: Settings, leads: int, seed: int, late_share: float = 0.08, deals: int = 0) -> LeadLedger:
    """A store filled through the inbound handler; `late_share` of the touches arrive at the
    end (late, out of occurred_at order), so recorded order and occurred order disagree.
    `deals` more leads (`currency_deals`) are won in many currencies over four months."""
    app = bootstrap(settings)
    messages = list(generate(leads=leads, seed=seed, start=START, days=30))
    rng = random.Random(seed)
    late = [m for m in messages if m["type"].endswith(".touch.v1") and rng.random() < late_share]
    late_ids = {id(m) for m in late}
    ordered = [m for m in messages if id(m) not in late_ids] + late + currency_deals(deals, seed)
    handler = InboundHandler(app, batch_size=200)
    results = list(handler.handle_stream((i, orjson.dumps(m)) for i, m in enumerate(ordered, start=1)))
    assert sum(r.status == "applied" for r in results) > leads
    return app


#: The currencies `currency_deals` cycles through (one written in lower case: stored upper-case).
DEAL_CURRENCIES = ("USD", "GBP", "SGD", "EUR", "usd", "CHF")
_DEAL_CHANNELS = ("webinar", "Paid_Search ", "referral", " Event")


def currency_deals(count: int, seed: int) -> list[dict[str, Any]]:
    """Inbound messages of `count` leads, each captured, touched, qualified and won within a week,
    the wins spread over ~4 months from START and cycling through DEAL_CURRENCIES (channel names
    in mixed case, as upstream systems send them)."""
    rng = random.Random(seed * 7919)
    out: list[dict[str, Any]] = []
    bant = {"budget": "approved", "authority": "CFO", "need": "reporting", "timeline": "Q3"}
    for i in range(count):
        t0 = START + timedelta(days=3 + i * 120 / max(1, count), hours=rng.randint(0, 6))
        email = f"fx-deal-{seed}-{i}@example.org"

        def msg(message: str, after: timedelta, email: str = email, t0: datetime = t0, **data: Any) -> None:
            out.append({"specversion": "1.0", "id": f"fx-{seed}-{len(out)}", "source": "fx-deals",
                        "type": f"leadledger.inbound.{message}.v1", "time": fmt(t0 + after),
                        "data": {"email": email, **data}})

        hour = timedelta(hours=1)
        msg("capture", 0 * hour, channel=_DEAL_CHANNELS[i % 4], campaign="FX-Test")
        msg("touch", hour, channel=_DEAL_CHANNELS[(i + 1) % 4], campaign="retarget", kind="ad_click")
        msg("score", 2 * hour, total=90)
        msg("transition", 3 * hour, trigger="qualify_mql")
        msg("assign", 4 * hour, owner="fx.owner")
        msg("transition", 5 * hour, trigger="accept")
        msg("touch", 24 * hour, channel="email", kind="email_open")
        msg("transition", 48 * hour, trigger="qualify_sql", bant=bant)
        msg("transition", 120 * hour, trigger="win", amount=round(rng.uniform(1_000, 90_000), 2),
            currency=DEAL_CURRENCIES[i % len(DEAL_CURRENCIES)])
    return out


# ---------------------------------------------------------------- the reference


@dataclass(frozen=True)
class Ev:
    lead: str
    name: str
    version: int
    at: datetime
    recorded: datetime
    data: dict[str, Any]

    @property
    def to_stage(self) -> str | None:
        value = self.data.get("to_stage")
        return value if isinstance(value, str) else None


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def events_of(envelopes: list[dict[str, Any]]) -> list[Ev]:
    out = []
    for env in envelopes:
        name = env["type"].split(".")[2]
        out.append(Ev(env["subject"], name, env["sequence"], parse(env["time"]), parse(env["recordedat"]),
                      env["data"]))
    return out


def by_lead(evs: list[Ev], as_of: datetime | None = None, known_at: datetime | None = None) -> dict[str, list[Ev]]:
    leads: dict[str, list[Ev]] = defaultdict(list)
    for e in evs:
        if (as_of is None or e.at <= as_of) and (known_at is None or e.recorded <= known_at):
            leads[e.lead].append(e)
    for lst in leads.values():
        lst.sort(key=lambda e: (e.at, e.version))
    return leads


def capture(evs: list[Ev]) -> Ev | None:
    return next((e for e in evs if e.name == "LeadCaptured"), None)


def group(c: Ev, by: str | None) -> str | None:
    if by == "channel":
        return str(c.data["channel"])
    if by == "campaign":
        return c.data.get("campaign") or "(none)"
    return None


def inside(t: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or t >= start) and (end is None or t < end)


def rank(values: list[float], p: Fraction) -> float:
    ordered = sorted(values)
    return ordered[max(1, ceil(p * len(ordered))) - 1]


def stat(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "mean_s": None, "p50_s": None, "p90_s": None}
    return {"count": len(values), "mean_s": sum(values) / len(values), "p50_s": rank(values, Fraction(1, 2)),
            "p90_s": rank(values, Fraction(9, 10))}


@dataclass(frozen=True)
class Params:
    by: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    mode: str = "cohort"
    as_of: datetime | None = None
    known_at: datetime | None = None
    model: str = "linear"
    conversion: str = "won"


def ref_funnel(evs: list[Ev], p: Params) -> list[dict[str, Any]]:
    counts: dict[str | None, Counter[str]] = defaultdict(Counter)
    for lead_evs in by_lead(evs, p.as_of, p.known_at).values():
        c = capture(lead_evs)
        if c is None:
            continue
        if p.by == "owner":
            for s, own in owner_entries(lead_evs, c, p).items():
                counts[own][s] += 1
            continue
        entries = [(e.to_stage, e.at) for e in lead_evs if e.to_stage]
        if p.mode == "cohort":
            reached = {s for s, _ in entries} if inside(c.at, p.start, p.end) else set()
        else:
            reached = {s for s, t in entries if inside(t, p.start, p.end)}
        for s in reached:
            counts[group(c, p.by)][s] += 1
    keys = sorted(counts, key=lambda k: (k is None, k or "")) if p.by else [None]
    out = []
    for k in keys:
        stages = {s: counts[k][s] for s in STAGES}
        conv = {f"{a}->{b}": (stages[b] / stages[a] if stages[a] else None) for a, b in pairwise(MAIN)}
        out.append({"key": k, "stages": stages, "conversion": conv})
    return out


def owner_entries(lead_evs: list[Ev], c: Ev, p: Params) -> dict[str, str | None]:
    """Per stage the lead counts for, the owner it had at its counted entry: the first entry (cohort, when
    captured in the window) or the first entry in the window (period). The owner at an entry is the
    latest assignment or acceptance before it, none after a rejection or recycling; an acceptance names its
    own."""
    owner: str | None = None
    found: dict[str, str | None] = {}
    for e in lead_evs:
        if e.to_stage:
            own = e.data["owner"] if e.name == "LeadAcceptedBySales" else owner
            counts = inside(c.at, p.start, p.end) if p.mode == "cohort" else inside(e.at, p.start, p.end)
            if counts and e.to_stage not in found:
                found[e.to_stage] = own
        if e.name in ("LeadAssigned", "LeadAcceptedBySales"):
            owner = e.data["owner"]
        elif e.name in ("LeadRejectedBySales", "LeadRecycled"):
            owner = None
    return found


def ref_velocity(evs: list[Ev], p: Params) -> list[dict[str, Any]]:
    stays: dict[str | None, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    firsts: dict[str | None, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for lead_evs in by_lead(evs, p.as_of, p.known_at).values():
        c = capture(lead_evs)
        if c is None:
            continue
        k = group(c, p.by)
        changes = [e for e in lead_evs if e.to_stage]
        for a, b in pairwise(changes):
            if inside(c.at if p.mode == "cohort" else b.at, p.start, p.end):
                stays[k][str(a.to_stage)].append((b.at - a.at).total_seconds())
        for s in ("mql", "sal", "sql", "won"):
            first = next((e for e in changes if e.to_stage == s), None)
            if first is not None and inside(c.at if p.mode == "cohort" else first.at, p.start, p.end):
                firsts[k][s].append((first.at - c.at).total_seconds())
    keys = sorted(set(stays) | set(firsts), key=lambda k: k or "") if p.by else [None]
    return [{"key": k, "time_in_stage": {s: stat(stays[k][s]) for s in STAGES},
             "time_to_stage": {s: stat(firsts[k][s]) for s in ("mql", "sal", "sql", "won")}} for k in keys]


def ref_weights(model: str, times: list[datetime], conv_at: datetime) -> list[float]:
    n = len(times)
    if model == "first":
        return [1.0 if i == 0 else 0.0 for i in range(n)]
    if model == "last":
        return [1.0 if i == n - 1 else 0.0 for i in range(n)]
    if model == "linear":
        return [1 / n] * n
    if model == "u_shaped":
        if n <= 2:
            return [1 / n] * n
        return [0.4 if i in (0, n - 1) else 0.2 / (n - 2) for i in range(n)]
    raw = [0.5 ** ((conv_at - t) / timedelta(days=7)) for t in times]
    return [r / sum(raw) for r in raw]


def is_touch(e: Ev) -> bool:
    return e.name in ("LeadCaptured", "LeadTouched")


def touch_key(e: Ev, by: str | None) -> str | None:
    if by == "channel":
        return str(e.data["channel"])
    if by == "campaign":
        return e.data.get("campaign") or "(none)"
    return None


def conversions(evs: list[Ev], p: Params) -> list[tuple[Ev, Ev, list[tuple[Ev, float]]]]:
    """(capture, conversion, [(touch, credit)]) for every conversion counted."""
    out = []
    for lead_evs in by_lead(evs, p.as_of, p.known_at).values():
        c = capture(lead_evs)
        if c is None:
            continue
        for i, e in enumerate(lead_evs):
            if e.to_stage != p.conversion:
                continue
            prev = max((j for j in range(i) if lead_evs[j].to_stage == p.conversion), default=-1)
            window = [x for x in lead_evs[prev + 1:i] if is_touch(x)]
            if not window:
                earlier = [x for x in lead_evs[:i] if is_touch(x)]
                window = earlier[-1:] or [c]
            if not inside(c.at if p.mode == "cohort" else e.at, p.start, p.end):
                continue
            weights = ref_weights(p.model, [x.at for x in window], e.at)
            out.append((c, e, list(zip(window, weights, strict=True))))
    return out


#: An `[fx]` table as the reference reads it: currency -> [(first day, rate)], any order.
Rates = dict[str, list[tuple[date, float]]]


def ref_rate(rates: Rates, reporting: str, currency: str, won: datetime) -> float | None:
    """The rate in effect on the won day: the latest whose first day is on or before it."""
    if currency == reporting:
        return 1.0
    day = won.astimezone(UTC).date()
    in_effect = [(start, rate) for start, rate in rates.get(currency, []) if start <= day]
    return max(in_effect)[1] if in_effect else None


def ref_attribution(evs: list[Ev], p: Params, rates: Rates | None = None,
                    reporting: str = "EUR") -> list[dict[str, Any]]:
    credit: dict[str | None, float] = defaultdict(float)
    revenue: dict[str | None, float] = defaultdict(float)
    unconverted: dict[str | None, dict[str, float]] = defaultdict(dict)
    for _, conv, credited in conversions(evs, p):
        for t, w in credited:
            k = touch_key(t, p.by)
            credit[k] += w
            if p.conversion == "won":
                amount, currency = float(conv.data["amount"]), str(conv.data["currency"])
                rate = ref_rate(rates or {}, reporting, currency, conv.at)
                if rate is None:
                    unconverted[k][currency] = unconverted[k].get(currency, 0.0) + w * amount
                else:
                    revenue[k] += w * amount * rate
    keys = sorted(credit, key=lambda k: k or "") if p.by else [None]
    won = p.conversion == "won"
    return [{"key": k, "conversions": credit[k], "revenue": revenue[k] if won else None,
             "unconverted": dict(sorted(unconverted[k].items())) if won else None}
            for k in keys]


def ref_speed(evs: list[Ev], p: Params) -> list[dict[str, Any]]:
    """Without a published policy, the system delay is capture → the lead's first assignment."""
    assigned: Counter[str | None] = Counter()
    answered: dict[str | None, list[float]] = defaultdict(list)
    waited: dict[str | None, list[float]] = defaultdict(list)
    for lead_evs in by_lead(evs, p.as_of, p.known_at).values():
        c = capture(lead_evs)
        if c is None:
            continue
        first = True
        for i, e in enumerate(lead_evs):
            if e.name != "LeadAssigned":
                continue
            was_first, first = first, False
            if not inside(c.at if p.mode == "cohort" else e.at, p.start, p.end):
                continue
            k = e.data["owner"] if p.by == "owner" else group(c, p.by)
            assigned[k] += 1
            if was_first:
                waited[k].append((e.at - c.at).total_seconds())
            for later in lead_evs[i + 1:]:
                if later.name == "LeadAssigned":
                    break
                if later.name == "LeadContacted":
                    answered[k].append((later.at - e.at).total_seconds())
                    break
    keys = sorted(set(assigned) | set(answered), key=lambda k: k or "") if p.by else [None]

    def delay(values: list[float]) -> dict[str, Any]:
        return {"count": len(values), "p50_s": rank(values, Fraction(1, 2)) if values else None,
                "p90_s": rank(values, Fraction(9, 10)) if values else None}

    return [{"key": k, "assignments": assigned[k], "contacted": len(answered[k]),
             "within_5m": sum(1 for v in answered[k] if v <= 300),
             "p50_s": rank(answered[k], Fraction(1, 2)) if answered[k] else None,
             "p90_s": rank(answered[k], Fraction(9, 10)) if answered[k] else None,
             "system_delay": delay(waited[k]), "human_delay": delay(answered[k])} for k in keys]


#: the events whose reasons `reasons --stage` counts, by stage
REASON_EVENTS = {"lost": ("LeadLost",), "disqualified": ("LeadDisqualified",),
                 "recycled": ("LeadRecycled", "LeadRejectedBySales"), "rejected": ("LeadRejectedBySales",)}


def ref_reasons(evs: list[Ev], p: Params, stage: str) -> dict[str, Any]:
    """Per group key, the reasons of the stage's events that occurred in [start, end): the key is the
    capture's channel or campaign, or the owner the lead had just before the event."""
    counts: dict[str | None, Counter[str]] = defaultdict(Counter)
    for lead_evs in by_lead(evs, p.as_of, p.known_at).values():
        c = capture(lead_evs)
        if c is None:
            continue
        owner = None
        for e in lead_evs:
            if e.name in REASON_EVENTS[stage] and inside(e.at, p.start, p.end):
                k = owner if p.by == "owner" else group(c, p.by)
                counts[k][e.data["reason"]] += 1
            if e.name in ("LeadAssigned", "LeadAcceptedBySales"):
                owner = e.data["owner"]
            elif e.name in ("LeadRejectedBySales", "LeadRecycled"):
                owner = None
    groups = []
    for k in sorted(counts, key=lambda k: (k is None, k or "")):
        n = sum(counts[k].values())
        ordered = sorted(counts[k].items(), key=lambda item: (-item[1], item[0]))
        groups.append({"key": k, "events": n,
                       "reasons": [{"reason": r, "count": m, "share": m / n} for r, m in ordered]})
    return {"events": sum(g["events"] for g in groups), "groups": groups}


def fmt(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ref_leads(evs: list[Ev], as_of: datetime | None, known_at: datetime | None, stage: str | None = None,
              channel: str | None = None, owner: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    rows = []
    for lead, lead_evs in by_lead(evs, as_of, known_at).items():
        c = capture(lead_evs)
        if c is None:
            continue
        st = own = score = last = None
        for e in lead_evs:
            if e.to_stage:
                st, last = e.to_stage, e.at
            if e.name == "LeadAssigned" or e.name == "LeadAcceptedBySales":
                own = e.data["owner"]
            elif e.name in ("LeadRejectedBySales", "LeadRecycled"):
                own = None
            elif e.name == "LeadScored":
                score = e.data["total"]
        row = {"lead_id": lead, "stage": st, "owner": own, "score": score, "channel": c.data["channel"],
               "campaign": c.data.get("campaign"), "captured_at": fmt(c.at), "last_change_at": fmt(last)}
        if (stage is None or st == stage) and (channel is None or row["channel"] == channel) and (
                owner is None or own == owner):
            rows.append(row)
    rows.sort(key=lambda r: (r["captured_at"], r["lead_id"]), reverse=True)
    return rows[:limit]


def exported(app: LeadLedger) -> list[Ev]:
    return events_of(list(export_envelopes(app.store)))


def approx_equal(got: Any, want: Any, path: str = "") -> None:
    """Deep equality with floats compared to 1e-9 relative (sums in a different order)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{path}: keys {got!r} != {want!r}"
        for k in want:
            approx_equal(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            approx_equal(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, float), f"{path}: {got!r} is not a float (want {want!r})"
        assert abs(got - want) <= 1e-9 * max(1.0, abs(want)), f"{path}: {got!r} != {want!r}"
    else:
        assert got == want and type(got) is type(want), f"{path}: {got!r} != {want!r}"


def ref_pipeline(evs: list[Ev], by: str, as_of: datetime | None, known_at: datetime | None,
                 rates: Rates | None = None, reporting: str = "EUR") -> list[dict[str, Any]]:
    """Per group, the leads in mql, sal, sql at as_of and the expected value of those in sql: each lead's
    state walked from its visible events, its SQL entry's amount at the rate of that entry's day."""
    out: dict[str | None, dict[str, Any]] = {}
    for lead_evs in by_lead(evs, as_of, known_at).values():
        c = capture(lead_evs)
        st = own = None
        sql: Ev | None = None
        for e in lead_evs:
            if e.to_stage:
                st = e.to_stage
            if e.name == "LeadQualifiedAsSQL":
                sql = e
            if e.name == "LeadAssigned" or e.name == "LeadAcceptedBySales":
                own = e.data["owner"]
            elif e.name in ("LeadRejectedBySales", "LeadRecycled"):
                own = None
        if st not in ("mql", "sal", "sql"):
            continue
        key = own if by == "owner" else group(c, by) if c is not None else None
        g = out.setdefault(key, {"key": key, "open": {"mql": 0, "sal": 0, "sql": 0}, "value": 0.0,
                                 "with_amount": 0, "without_amount": 0, "unconverted": {}})
        g["open"][st] += 1
        if st != "sql":
            continue
        assert sql is not None
        amount = sql.data.get("amount")
        if amount is None:
            g["without_amount"] += 1
            continue
        g["with_amount"] += 1
        currency = str(sql.data["currency"])
        rate = ref_rate(rates or {}, reporting, currency, sql.at)
        if rate is None:
            g["unconverted"][currency] = g["unconverted"].get(currency, 0.0) + float(amount)
        else:
            g["value"] += float(amount) * rate
    for g in out.values():
        g["unconverted"] = dict(sorted(g["unconverted"].items()))
    return [out[k] for k in sorted(out, key=lambda k: (k is None, k or ""))]
