"""The operations policy (docs/operations.md): one TOML file parsed into frozen typed objects.

Every problem is named by its key path (`routing.rules[1].pool.maria: …`); all are collected and refused at once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lifecycle.domain.stage import Stage

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()

# What a clock's `start` / `stop` may name: entering a stage, or a non-stage fact (docs/operations.md).
EVENT_KINDS = frozenset(
    {s.value for s in Stage}
    | {"rejected", "touched", "scored", "assigned", "contacted", "queued",
       "consent_given", "consent_withdrawn", "erased"}
)
BREACH_ACTIONS = ("alert", "reassign")
CLOCKS = ("business", "calendar")

# `when` keys (docs/operations.md): the firmographic attributes captured with a lead, and a touch's own fields for behaviour rules.
LEAD_KEYS = ("country", "industry", "employees", "employees_gte", "employees_lte", "role", "language",
             "email_domain_kind", "account_key")
TOUCH_KEYS = ("touch_kind", "channel", "campaign")
NUMERIC_ATTRIBUTES = frozenset({"employees"})

_DURATION = re.compile(r"(\d+)([smhd])")
_DURATION_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_HOURS = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_COUNTRY = re.compile(r"[A-Z]{2}")
_LANGUAGE = re.compile(r"[a-z]{2}")
_CURRENCY = re.compile(r"[A-Z]{3}")

_STAGES = frozenset(s.value for s in Stage)

Scalar: TypeAlias = str | int | float
Minutes: TypeAlias = tuple[int, int]  # [start, end) in minutes after local midnight; end ≤ 1440


class PolicyError(ValueError):
    """The policy was refused; `problems` holds one line per problem, each starting with its key path."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"policy refused ({count} problem{'s' if count != 1 else ''}):\n{lines}")


# ---------------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Condition:
    """One `when` key: `in` matches any of `values`; `gte` / `lte` are inclusive numeric bounds."""

    attribute: str
    op: Literal["in", "gte", "lte"]
    values: tuple[Scalar, ...]


When: TypeAlias = tuple[Condition, ...]  # every condition must hold; () matches everything


@dataclass(frozen=True)
class Calendar:
    """Working hours per weekday in `timezone`, and holidays (local dates without hours)."""

    id: str
    timezone: str
    hours: tuple[tuple[Minutes, ...], ...]  # seven entries, Monday first; sorted, non-overlapping
    holidays: frozenset[date]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches its instances, so this is a dict lookup


@dataclass(frozen=True)
class Absence:
    """A rep is away on the local dates d with start ≤ d < end (TOML keys `from`, `to`)."""

    start: date
    end: date


@dataclass(frozen=True)
class Rep:
    id: str
    calendar: str
    capacity: int | None  # open leads (owned, in mql, sal or sql); None = no limit
    absences: tuple[Absence, ...]


@dataclass(frozen=True)
class RoutingRule:
    id: str
    when: When
    pool: tuple[tuple[str, int], ...]  # (rep, weight), sorted by rep id
    sticky: Literal["account"] | None
    fallback: str | None  # a rep id; None = queue


@dataclass(frozen=True)
class Routing:
    on: tuple[Stage, ...]
    rules: tuple[RoutingRule, ...]


@dataclass(frozen=True)
class SlaRule:
    id: str
    start: str
    stop: frozenset[str]
    target: timedelta
    clock: Literal["business", "calendar"]
    calendar: str | None  # None: the owner's calendar at each instant (business clocks)
    warn_at: float | None
    on_breach: tuple[str, ...]


@dataclass(frozen=True)
class ScoringRule:
    id: str
    when: When
    points: int
    half_life: timedelta | None = None  # behaviour rules only
    max_per_day: int | None = None  # behaviour rules only


@dataclass(frozen=True)
class Scoring:
    threshold: int | None  # None: LEADLEDGER_MQL_THRESHOLD
    auto_mql: bool
    fit: tuple[ScoringRule, ...]
    behaviour: tuple[ScoringRule, ...]


@dataclass(frozen=True)
class FxRate:
    start: date  # TOML key `from`
    rate: float


@dataclass(frozen=True)
class Policy:
    """A valid policy. `source` is the file as given; `canonical` its content as canonical JSON."""

    calendars: Mapping[str, Calendar]
    reps: Mapping[str, Rep]
    routing: Routing | None
    sla: tuple[SlaRule, ...]
    scoring: Scoring | None
    fx: Mapping[str, tuple[FxRate, ...]]
    source: str
    canonical: str

    @property
    def sha256(self) -> str:
        """The digest `PolicyPublished.sha256` records: of `source`, so anyone can check it from the event alone."""
        return content_sha256(self.source)

    @property
    def canonical_sha256(self) -> str:
        """Equal for two files that differ only in comments, whitespace, key order or date spelling."""
        return hashlib.sha256(self.canonical.encode()).hexdigest()

    def document(self) -> dict[str, Any]:
        """The content as plain data (a fresh copy; dates as ISO strings)."""
        loaded: dict[str, Any] = json.loads(self.canonical)
        return loaded

    def calendar_of(self, rep: str) -> Calendar | None:
        """The calendar of a rep of this policy, None for an owner the policy does not know."""
        found = self.reps.get(rep)
        return self.calendars[found.calendar] if found is not None else None


def content_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- matching


def matches(when: When, attributes: Mapping[str, object]) -> bool:
    """Every condition must hold; a list matches any of its values; a missing attribute never matches."""
    for cond in when:
        value = attributes.get(cond.attribute)
        if value is None:
            return False
        if cond.op == "in":
            if isinstance(value, bool) or value not in cond.values:
                return False
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        bound = cond.values[0]
        assert not isinstance(bound, str)  # validation gave numeric bounds
        if (cond.op == "gte" and value < bound) or (cond.op == "lte" and value > bound):
            return False
    return True


# ---------------------------------------------------------------------------------------------- parsing


def parse_policy(text: str) -> Policy:
    """Parse and validate a policy file's text; raises `PolicyError` listing every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([f"(file): not valid TOML: {exc}"]) from None
    return _Parser(raw, text).policy()


def diff(a: Policy, b: Policy) -> tuple[Change, ...]:
    """Key paths added, removed, changed (and rule lists reordered) from `a` to `b`.

    Arrays of tables whose entries all carry a unique `id` are compared by id (`routing.rules[id=x]`), so
    inserting a rule does not show every later rule as changed; their order is reported when it changes,
    because the first matching routing rule wins.
    """
    out: list[Change] = []
    _diff_value("", a.document(), b.document(), out)
    return tuple(out)


@dataclass(frozen=True)
class Change:
    path: str
    kind: Literal["added", "removed", "changed", "reordered"]
    before: Any
    after: Any

    def __str__(self) -> str:
        if self.kind == "added":
            return f"+ {self.path} = {_show(self.after)}"
        if self.kind == "removed":
            return f"- {self.path} = {_show(self.before)}"
        if self.kind == "reordered":
            return f"~ {self.path}: order {', '.join(self.before)} → {', '.join(self.after)}"
        return f"~ {self.path}: {_show(self.before)} → {_show(self.after)}"


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _diff_value(path: str, a: Any, b: Any, out: list[Change]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            sub = _child(path, key)
            if key not in b:
                out.append(Change(sub, "removed", a[key], None))
            elif key not in a:
                out.append(Change(sub, "added", None, b[key]))
            else:
                _diff_value(sub, a[key], b[key], out)
        return
    ids_a, ids_b = _ids(a), _ids(b)
    if ids_a is not None and ids_b is not None:
        by_a = dict(zip(ids_a, a, strict=True))
        by_b = dict(zip(ids_b, b, strict=True))
        common_a = [i for i in ids_a if i in by_b]
        common_b = [i for i in ids_b if i in by_a]
        if common_a != common_b:
            out.append(Change(path, "reordered", common_a, common_b))
        for rid in ids_a:
            sub = f"{path}[id={rid}]"
            if rid not in by_b:
                out.append(Change(sub, "removed", by_a[rid], None))
            else:
                _diff_value(sub, by_a[rid], by_b[rid], out)
        for rid in ids_b:
            if rid not in by_a:
                out.append(Change(f"{path}[id={rid}]", "added", None, by_b[rid]))
        return
    if a != b or type(a) is not type(b):
        out.append(Change(path, "changed", a, b))


def _ids(value: Any) -> list[str] | None:
    if not isinstance(value, list) or not value:
        return None
    ids = [item.get("id") if isinstance(item, dict) else None for item in value]
    if all(isinstance(i, str) for i in ids) and len(set(ids)) == len(ids):
        return [str(i) for i in ids]
    return None


def _child(path: str, key: str) -> str:
    name = key if _PLAIN_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{name}" if path else name


def _plain(value: Any) -> Any:
    """TOML values as JSON data: dates and times as ISO strings, so `2026-12-24` and "2026-12-24" agree."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value


def _parse_duration(value: object) -> timedelta | str:
    """A duration, or the sentence saying what is wrong with it."""
    if not isinstance(value, str):
        return f'bad duration {value!r}: a string such as "5m" (Ns, Nm, Nh or Nd)'
    found = _DURATION.fullmatch(value.strip())
    if found is None:
        return f'bad duration {value!r}: expected Ns, Nm, Nh or Nd, e.g. "5m"'
    seconds = int(found.group(1)) * _DURATION_UNIT[found.group(2)]
    if seconds <= 0:
        return f"bad duration {value!r}: must be positive"
    return timedelta(seconds=seconds)


class _Parser:
    """One pass over the TOML data; each check appends a problem and returns None instead of raising."""

    def __init__(self, raw: dict[str, Any], source: str) -> None:
        self.raw, self.source = raw, source
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    # -- generic checks

    def clean(self, mark: int) -> bool:
        """No problem was found since `mark = len(self.problems)`."""
        return len(self.problems) == mark

    def table(self, path: str, value: object, allowed: Sequence[str] | None,
              required: Sequence[str] = ()) -> dict[str, Any] | None:
        """A table; `allowed = None` for tables keyed by the user's own names (calendars, reps, pools, fx)."""
        if not isinstance(value, dict):
            self.fail(path, f"must be a table, got {_kind(value)}")
            return None
        for key in value:
            if allowed is not None and key not in allowed:
                self.fail(_child(path, key), f"unknown key (expected one of: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                self.fail(_child(path, key), "required")
        return value

    def array_of_tables(self, path: str, value: object) -> list[tuple[str, Any]]:
        if not isinstance(value, list):
            self.fail(path, f"must be an array of tables ([[{path}]]), got {_kind(value)}")
            return []
        return [(f"{path}[{i}]", item) for i, item in enumerate(value)]

    def ident(self, path: str, value: object) -> str | None:
        if not isinstance(value, str) or not value or value != value.strip() or any(c.isspace() for c in value):
            self.fail(path, f"must be a non-empty name without spaces, got {value!r}")
            return None
        return value

    def string_list(self, path: str, value: object) -> list[tuple[str, str]]:
        """A string or a list of strings, each with its own path."""
        if isinstance(value, str):
            return [(path, value)]
        if not isinstance(value, list) or not value:
            self.fail(path, f"must be a string or a non-empty list of strings, got {_show_value(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append((f"{path}[{i}]", item))
            else:
                self.fail(f"{path}[{i}]", f"must be a string, got {_kind(item)}")
        return out

    def day(self, path: str, value: object) -> date | None:
        if type(value) is date:
            return value
        if isinstance(value, str) and _ISO_DATE.fullmatch(value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        self.fail(path, f"bad date {_show_value(value)}: expected YYYY-MM-DD, e.g. 2026-12-24")
        return None

    def duration(self, path: str, value: object) -> timedelta | None:
        parsed = _parse_duration(value)
        if isinstance(parsed, str):
            self.fail(path, parsed)
            return None
        return parsed

    def integer(self, path: str, value: object, what: str, minimum: int, maximum: int | None = None) -> (
            int | None):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum and (
            maximum is None or value <= maximum)
        if not ok:
            self.fail(path, f"{what}, got {_show_value(value)}")
            return None
        assert isinstance(value, int)
        return value

    def unique_ids(self, rules: list[tuple[str, str | None]], what: str) -> None:
        seen: dict[str, str] = {}
        for path, rid in rules:
            if rid is None:
                continue
            if rid in seen:
                self.fail(f"{path}.id", f"duplicate {what} id {rid!r} (also {seen[rid]})")
            else:
                seen[rid] = path

    # -- sections

    def policy(self) -> Policy:
        top = self.table("", self.raw, ("calendars", "reps", "routing", "sla", "scoring", "fx")) or {}
        # references are checked against the names declared, so a broken calendar or rep is reported once
        # (for itself), not again for everything that names it
        calendar_names = _names(top.get("calendars"))
        rep_names = _names(top.get("reps"))
        calendars = self.calendars(top.get("calendars", {}))
        reps = self.reps(top.get("reps", {}), calendar_names)
        routing = self.routing(top["routing"], rep_names) if "routing" in top else None
        sla = self.sla(top.get("sla", []), calendar_names)
        scoring = self.scoring(top["scoring"]) if "scoring" in top else None
        fx = self.fx(top.get("fx", {}))
        if self.problems:
            raise PolicyError(self.problems)
        canonical = json.dumps(_plain(self.raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                               allow_nan=False)
        return Policy(calendars=MappingProxyType(calendars), reps=MappingProxyType(reps), routing=routing,
                      sla=sla, scoring=scoring, fx=MappingProxyType(fx), source=self.source,
                      canonical=canonical)

    def calendars(self, value: object) -> dict[str, Calendar]:
        out: dict[str, Calendar] = {}
        section = self.table("calendars", value, allowed=None)
        for cid, body in (section or {}).items():
            path = _child("calendars", cid)
            if self.ident(path, cid) is None:
                continue
            spec = self.table(path, body, ("timezone", "hours", "holidays"), required=("timezone", "hours"))
            if spec is None:
                continue
            zone = self.timezone(f"{path}.timezone", spec["timezone"]) if "timezone" in spec else None
            hours = self.week(f"{path}.hours", spec["hours"]) if "hours" in spec else None
            holidays = []
            raw_holidays = spec.get("holidays", [])
            if not isinstance(raw_holidays, list):
                self.fail(f"{path}.holidays", f"must be a list of dates, got {_kind(raw_holidays)}")
            else:
                for i, item in enumerate(raw_holidays):
                    day = self.day(f"{path}.holidays[{i}]", item)
                    if day is not None:
                        holidays.append(day)
            if zone is not None and hours is not None:
                out[cid] = Calendar(cid, zone, hours, frozenset(holidays))
        return out

    def timezone(self, path: str, value: object) -> str | None:
        if isinstance(value, str) and value:
            try:
                ZoneInfo(value)
                return value
            except (ZoneInfoNotFoundError, ValueError, OSError):
                pass
        self.fail(path, f'unknown time zone {_show_value(value)} (an IANA name such as "Europe/Berlin")')
        return None

    def week(self, path: str, value: object) -> tuple[tuple[Minutes, ...], ...] | None:
        spec = self.table(path, value, WEEKDAYS)
        if spec is None:
            return None
        week: list[tuple[Minutes, ...]] = []
        ok = True
        for day in WEEKDAYS:
            parsed = self.day_hours(f"{path}.{day}", spec[day]) if day in spec else ()
            ok = ok and parsed is not None
            week.append(parsed or ())
        if not ok:
            return None
        if not any(week):
            self.fail(path, "no working hours on any day (a calendar needs at least one)")
            return None
        return tuple(week)

    def day_hours(self, path: str, value: object) -> tuple[Minutes, ...] | None:
        """`"08:00-18:00"`, `"08:00-12:00, 13:00-18:00"` or a list of such strings; `[]` is a day off."""
        if isinstance(value, list) and not value:
            return ()
        items: list[tuple[str, str]] = []
        for item_path, text in self.string_list(path, value):
            items.extend((item_path, part) for part in text.split(","))
        if not items:
            return None
        spans: list[tuple[str, str, Minutes]] = []
        ok = True
        for item_path, text in items:
            span = self.span(item_path, text)
            if span is None:
                ok = False
            else:
                spans.append((item_path, text.strip(), span))
        spans.sort(key=lambda s: s[2])
        for (_, text_a, a), (item_path, text_b, b) in itertools.pairwise(spans):
            if b[0] < a[1]:
                self.fail(item_path, f"hours {text_b!r} overlap {text_a!r}")
                ok = False
        if not ok:
            return None
        merged: list[Minutes] = []
        for _, _, (start, end) in spans:  # adjacent spans ("08:00-12:00, 12:00-18:00") are one span
            if merged and merged[-1][1] == start:
                merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return tuple(merged)

    def span(self, path: str, text: str) -> Minutes | None:
        found = _HOURS.fullmatch(text)
        if found is None:
            self.fail(path, f'malformed hours {text.strip()!r}: expected "HH:MM-HH:MM", e.g. "08:00-18:00"')
            return None
        sh, sm, eh, em = (int(g) for g in found.groups())
        if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em != 0):
            self.fail(path, f"malformed hours {text.strip()!r}: a time is out of range (00:00 to 24:00)")
            return None
        start, end = sh * 60 + sm, eh * 60 + em
        if end <= start:
            self.fail(path, f"hours {text.strip()!r}: the end must be after the start "
                            "(a shift across midnight is written as two days' hours)")
            return None
        return start, end

    def reps(self, value: object, calendars: Collection[str]) -> dict[str, Rep]:
        out: dict[str, Rep] = {}
        section = self.table("reps", value, allowed=None)
        for rid, body in (section or {}).items():
            path, mark = _child("reps", rid), len(self.problems)
            self.ident(path, rid)
            spec = self.table(path, body, ("calendar", "capacity", "absences"), required=("calendar",))
            if spec is None:
                continue
            calendar = self.reference(f"{path}.calendar", spec["calendar"], calendars, "calendar") if (
                "calendar" in spec) else None
            capacity = self.integer(f"{path}.capacity", spec["capacity"],
                                    "capacity must be a non-negative integer (open leads)", 0) if (
                "capacity" in spec) else None
            absences = self.absences(f"{path}.absences", spec.get("absences", []))
            if self.clean(mark) and calendar is not None:
                out[rid] = Rep(rid, calendar, capacity, absences)
        return out

    def reference(self, path: str, value: object, known: Collection[str], what: str) -> str | None:
        if isinstance(value, str) and value in known:
            return value
        names = ", ".join(sorted(known)) or "none defined"
        self.fail(path, f"unknown {what} {_show_value(value)} ({what}s: {names})")
        return None

    def absences(self, path: str, value: object) -> tuple[Absence, ...]:
        out = []
        for item_path, item in self.array_of_tables(path, value):
            spec = self.table(item_path, item, ("from", "to"), required=("from", "to"))
            if spec is None or "from" not in spec or "to" not in spec:
                continue
            start, end = self.day(f"{item_path}.from", spec["from"]), self.day(f"{item_path}.to", spec["to"])
            if start is not None and end is not None:
                if end <= start:
                    self.fail(f"{item_path}.to", f"{end} must be after from = {start} (the range is [from, to))")
                else:
                    out.append(Absence(start, end))
        return tuple(sorted(out, key=lambda a: (a.start, a.end)))

    def when(self, path: str, value: object, touch: bool) -> When | None:
        allowed = LEAD_KEYS + TOUCH_KEYS if touch else LEAD_KEYS
        if not isinstance(value, dict):
            self.fail(path, f"must be a table, got {_kind(value)}")
            return None
        conds: list[Condition] = []
        ok = True
        for key, raw in value.items():
            sub = _child(path, key)
            if key not in allowed:
                extra = " (touch_kind, channel and campaign are for scoring.behaviour rules)" if (
                    key in TOUCH_KEYS) else ""
                self.fail(sub, f"unknown when key (expected one of: {', '.join(allowed)}){extra}")
                ok = False
                continue
            cond = self.condition(sub, key, raw)
            ok = ok and cond is not None
            if cond is not None:
                conds.append(cond)
        bounds = {c.op: c.values[0] for c in conds if c.op != "in"}
        low, high = bounds.get("gte"), bounds.get("lte")
        if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
            self.fail(path, f"employees_gte {low} is above employees_lte {high}: the rule can never match")
            ok = False
        return tuple(conds) if ok else None

    def condition(self, path: str, key: str, raw: object) -> Condition | None:
        if key.endswith(("_gte", "_lte")):
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                self.fail(path, f"must be a number (an inclusive bound), got {_show_value(raw)}")
                return None
            return Condition(key[:-4], "gte" if key.endswith("_gte") else "lte", (raw,))
        values = raw if isinstance(raw, list) else [raw]
        if not values:
            self.fail(path, "must be a value or a non-empty list of values")
            return None
        check = _VALUE_CHECKS.get(key, _any_string)
        good: list[Scalar] = []
        for i, item in enumerate(values):
            problem = check(item)
            if problem:
                self.fail(f"{path}[{i}]" if isinstance(raw, list) else path, problem)
            elif isinstance(item, str | int | float):
                good.append(item)
        return Condition(key, "in", tuple(good)) if len(good) == len(values) else None

    def routing(self, value: object, reps: Collection[str]) -> Routing | None:
        spec = self.table("routing", value, ("on", "rules"))
        if spec is None:
            return None
        on: list[Stage] = []
        for path, name in self.string_list("routing.on", spec.get("on", ["mql"])):
            if name in _STAGES:
                on.append(Stage(name))
            else:
                self.fail(path, f"unknown stage {name!r} (stages: {', '.join(s.value for s in Stage)})")
        rules: list[RoutingRule] = []
        ids: list[tuple[str, str | None]] = []
        for path, item in self.array_of_tables("routing.rules", spec.get("rules", [])):
            rule = self.routing_rule(path, item, reps, ids)
            if rule is not None:
                rules.append(rule)
        self.unique_ids(ids, "routing rule")
        return Routing(tuple(dict.fromkeys(on)), tuple(rules))

    def routing_rule(self, path: str, item: object, reps: Collection[str],
                     ids: list[tuple[str, str | None]]) -> RoutingRule | None:
        mark = len(self.problems)
        spec = self.table(path, item, ("id", "when", "pool", "sticky", "fallback"), required=("id", "pool"))
        if spec is None:
            return None
        rid = self.ident(f"{path}.id", spec["id"]) if "id" in spec else None
        ids.append((path, rid))
        when = self.when(f"{path}.when", spec["when"], touch=False) if "when" in spec else ()
        pool = self.pool(f"{path}.pool", spec["pool"], reps) if "pool" in spec else None
        sticky = spec.get("sticky")
        if sticky is not None and sticky != "account":
            self.fail(f"{path}.sticky", f'must be "account" (or left out), got {_show_value(sticky)}')
        fallback = spec.get("fallback", "queue")
        if fallback != "queue" and not (isinstance(fallback, str) and fallback in reps):
            self.fail(f"{path}.fallback", f'unknown rep {_show_value(fallback)} (expected "queue" or a rep id: '
                                          f"{', '.join(sorted(reps)) or 'none defined'})")
        if not self.clean(mark) or rid is None or when is None or pool is None:
            return None
        return RoutingRule(rid, when, pool, "account" if sticky else None,
                           None if fallback == "queue" else str(fallback))

    def pool(self, path: str, value: object, reps: Collection[str]) -> tuple[tuple[str, int], ...] | None:
        spec = self.table(path, value, allowed=None)
        if spec is None:
            return None
        if not spec:
            self.fail(path, "must name at least one rep (rep = weight)")
            return None
        out, ok = [], True
        for rep, weight in spec.items():
            sub = _child(path, rep)
            if rep not in reps:
                self.fail(sub, f"unknown rep {rep!r} (reps: {', '.join(sorted(reps)) or 'none defined'})")
                ok = False
            parsed = self.integer(sub, weight, "weight must be a positive integer", 1)
            if parsed is None:
                ok = False
            else:
                out.append((rep, parsed))
        return tuple(sorted(out)) if ok else None

    def sla(self, value: object, calendars: Collection[str]) -> tuple[SlaRule, ...]:
        rules: list[SlaRule] = []
        ids: list[tuple[str, str | None]] = []
        for path, item in self.array_of_tables("sla", value):
            mark = len(self.problems)
            spec = self.table(path, item, ("id", "start", "stop", "target", "clock", "calendar", "warn_at",
                                           "on_breach"), required=("id", "start", "stop", "target"))
            if spec is None:
                continue
            rid = self.ident(f"{path}.id", spec["id"]) if "id" in spec else None
            ids.append((path, rid))
            start = self.kind(f"{path}.start", spec["start"]) if "start" in spec else None
            stop = {self.kind(p, k) for p, k in self.string_list(f"{path}.stop", spec["stop"])} if (
                "stop" in spec) else set()
            if start is not None and start in stop:
                self.fail(f"{path}.stop", f"{start!r} is also the start kind (a new start restarts the clock)")
            target = self.duration(f"{path}.target", spec["target"]) if "target" in spec else None
            clock = spec.get("clock", "calendar")
            if clock not in CLOCKS:
                self.fail(f"{path}.clock", f'must be "business" or "calendar" (24x7), got {_show_value(clock)}')
            calendar = None
            if "calendar" in spec:
                calendar = self.reference(f"{path}.calendar", spec["calendar"], calendars, "calendar")
                if clock == "calendar":
                    self.fail(f"{path}.calendar", 'only a clock = "business" uses a calendar')
            warn_at = spec.get("warn_at")
            if warn_at is not None and (isinstance(warn_at, bool) or not isinstance(warn_at, int | float)
                                        or not 0 < warn_at < 1):
                self.fail(f"{path}.warn_at", "must be a fraction of the target strictly between 0 and 1, "
                                             f"got {_show_value(warn_at)}")
            actions = []
            for p, action in self.string_list(f"{path}.on_breach", spec["on_breach"]) if (
                    "on_breach" in spec) else ():
                if action in BREACH_ACTIONS:
                    actions.append(action)
                else:
                    self.fail(p, f"unknown breach action {action!r} (expected: {', '.join(BREACH_ACTIONS)})")
            if self.clean(mark) and rid and start and target:
                rules.append(SlaRule(rid, start, frozenset(k for k in stop if k), target, clock, calendar,
                                     float(warn_at) if warn_at is not None else None,
                                     tuple(dict.fromkeys(actions))))
        self.unique_ids(ids, "sla rule")
        return tuple(rules)

    def kind(self, path: str, value: object) -> str | None:
        if isinstance(value, str) and value in EVENT_KINDS:
            return value
        self.fail(path, f"unknown event kind {_show_value(value)} (kinds: {', '.join(sorted(EVENT_KINDS))})")
        return None

    def scoring(self, value: object) -> Scoring | None:
        spec = self.table("scoring", value, ("threshold", "auto_mql", "fit", "behaviour"))
        if spec is None:
            return None
        threshold = None
        if "threshold" in spec:
            threshold = self.integer("scoring.threshold", spec["threshold"],
                                     "threshold must be an integer from 0 to 100", 0, 100)
        auto_mql = spec.get("auto_mql", False)
        if not isinstance(auto_mql, bool):
            self.fail("scoring.auto_mql", f"must be true or false, got {_show_value(auto_mql)}")
        ids: list[tuple[str, str | None]] = []
        fit = self.score_rules("scoring.fit", spec.get("fit", []), behaviour=False, ids=ids)
        behaviour = self.score_rules("scoring.behaviour", spec.get("behaviour", []), behaviour=True, ids=ids)
        self.unique_ids(ids, "scoring rule")
        return Scoring(threshold, bool(auto_mql), fit, behaviour)

    def score_rules(self, section: str, value: object, behaviour: bool,
                    ids: list[tuple[str, str | None]]) -> tuple[ScoringRule, ...]:
        keys = ("id", "when", "points", "half_life", "max_per_day") if behaviour else ("id", "when", "points")
        out = []
        for path, item in self.array_of_tables(section, value):
            spec = self.table(path, item, keys, required=("id", "points"))
            if spec is None:
                continue
            rid = self.ident(f"{path}.id", spec["id"]) if "id" in spec else None
            ids.append((path, rid))
            when = self.when(f"{path}.when", spec["when"], touch=behaviour) if "when" in spec else ()
            points = self.integer(f"{path}.points", spec["points"], "points must be an integer",
                                  -(10**9)) if "points" in spec else None
            half_life = self.duration(f"{path}.half_life", spec["half_life"]) if "half_life" in spec else None
            cap = self.integer(f"{path}.max_per_day", spec["max_per_day"],
                               "max_per_day must be a positive integer", 1) if "max_per_day" in spec else None
            if rid is not None and when is not None and points is not None:
                out.append(ScoringRule(rid, when, points, half_life, cap))
        return tuple(out)

    def fx(self, value: object) -> dict[str, tuple[FxRate, ...]]:
        out: dict[str, tuple[FxRate, ...]] = {}
        section = self.table("fx", value, allowed=None)
        for currency, body in (section or {}).items():
            path = _child("fx", currency)
            if not _CURRENCY.fullmatch(currency):
                self.fail(path, "a currency is a three-letter ISO 4217 code in capitals, e.g. USD")
            rates: dict[date, FxRate] = {}
            for item_path, item in self.array_of_tables(path, body):
                spec = self.table(item_path, item, ("from", "rate"), required=("from", "rate"))
                if spec is None or "from" not in spec or "rate" not in spec:
                    continue
                start = self.day(f"{item_path}.from", spec["from"])
                rate = spec["rate"]
                if isinstance(rate, bool) or not isinstance(rate, int | float) or not (
                        math.isfinite(rate) and rate > 0):
                    self.fail(f"{item_path}.rate", f"must be a positive number, got {_show_value(rate)}")
                    continue
                if start is not None and start in rates:
                    self.fail(f"{item_path}.from", f"a second rate from {start}")
                elif start is not None:
                    rates[start] = FxRate(start, float(rate))
            out[currency] = tuple(rates[d] for d in sorted(rates))
        return out


def _names(section: object) -> frozenset[str]:
    return frozenset(section) if isinstance(section, dict) else frozenset()


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {_show_value(value)}"


def _show_value(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date | datetime | time):
        return value.isoformat()
    return repr(value)


def _any_string(value: object) -> str | None:
    return None if isinstance(value, str) and value else f"must be a non-empty string, got {_show_value(value)}"


def _country(value: object) -> str | None:
    ok = isinstance(value, str) and _COUNTRY.fullmatch(value)
    return None if ok else f"a country is an ISO 3166-1 alpha-2 code in capitals (e.g. DE), got {_show_value(value)}"


def _language(value: object) -> str | None:
    ok = isinstance(value, str) and _LANGUAGE.fullmatch(value)
    return None if ok else f"a language is an ISO 639-1 code in lower case (e.g. de), got {_show_value(value)}"


def _domain_kind(value: object) -> str | None:
    return None if value in ("free", "business") else f'must be "free" or "business", got {_show_value(value)}'


def _number(value: object) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return None if ok else f"must be a number, got {_show_value(value)}"


_VALUE_CHECKS: dict[str, Callable[[object], str | None]] = {
    "country": _country, "language": _language, "email_domain_kind": _domain_kind, "employees": _number,
}

