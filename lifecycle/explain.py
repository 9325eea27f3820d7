"""Why leadledger decided what it did: one readable line per decision event (pure, no IO).

`explain(name, data)` reads a stored event's name and its data as `history` shows it (times as
RFC 3339 strings, or datetimes) and says why the router assigned or queued the lead, why an SLA clock
warned or breached, or what the scorer's rules gave. Every other event, an assignment made by hand or
upstream (`method` null) and an upstream score have no explanation: None. (The scorer's automatic MQL
carries its reason in the event itself.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["explain"]

_REASONS = {
    "absent": "absent",
    "outside_hours": "outside hours",
    "at_capacity": "at capacity",
    "breached": "breached the SLA",
}


def explain(name: str, data: Mapping[str, Any]) -> str | None:
    """The reasons of a decision event in one line; None for an event leadledger did not decide."""
    if name == "LeadAssigned":
        return _assigned(data)
    if name == "LeadRoutingQueued":
        return _queued(data)
    if name in ("LeadSLAWarned", "LeadSLABreached"):
        return _sla(data, breached=name == "LeadSLABreached")
    if name == "LeadScored":
        return _scored(data)
    return None


# ---------------------------------------------------------------------------------------------- scoring


def _scored(data: Mapping[str, Any]) -> str | None:
    """The scorer's score: its total and what each matching rule gave (an upstream score: None)."""
    model = data.get("model")
    if model in (None, "external"):
        return None
    parts = [f"{c.get('rule')} {_signed(c.get('points'))}" for c in _items(data.get("contributions"))]
    rules = ", ".join(parts) if parts else "no rule matched"
    return f"scored {data.get('total')} by {_policy(data)}: {rules}"


def _signed(points: object) -> str:
    if not isinstance(points, int | float):
        return str(points)
    shown = f"{points:.1f}".rstrip("0").rstrip(".")
    return shown if shown.startswith("-") else f"+{shown}"


# ---------------------------------------------------------------------------------------------- routing


def _assigned(data: Mapping[str, Any]) -> str | None:
    method = data.get("method")
    if method is None:
        return None  # by hand or upstream: nothing of leadledger's to explain
    owner = data.get("owner")
    head = f"assigned to {owner} by rule {data.get('rule')}"
    version = _policy(data)
    candidates = _items(data.get("candidates"))
    excluded = _excluded(data.get("excluded"))
    if method == "round_robin":
        line = f"{head} ({version}, round robin): candidates {_candidates(candidates, owner)}"
        return f"{line}; excluded: {excluded}" if excluded else line
    if method == "sticky":
        line = f"{head} ({version}) — sticky: {owner} already owns an open lead of this account"
    elif method == "fallback":
        line = f"{head} ({version}) — fallback owner (no candidate)"
    else:
        line = f"{head} ({version}, {str(method).replace('_', ' ')})"
    return f"{line}; excluded: {excluded}" if excluded else line


def _candidates(candidates: Sequence[Mapping[str, Any]], winner: object) -> str:
    """Each candidate with its weight, round-robin value before → after the decision, and load. After:
    every candidate gains its weight, and the winner gives back the candidates' total weight."""
    total = sum(_int(c.get("weight")) for c in candidates)
    parts = []
    for c in candidates:
        weight, before = _int(c.get("weight")), _int(c.get("current_before"))
        after = before + weight - (total if c.get("rep") == winner else 0)
        capacity = c.get("capacity")
        load = f"{c.get('open')}/{capacity} open" if capacity is not None else f"{c.get('open')} open"
        parts.append(f"{c.get('rep')} (weight {weight}, current {before}→{after}, {load})")
    return ", ".join(parts) if parts else "none"


def _queued(data: Mapping[str, Any]) -> str:
    reasons = ", ".join(f"{rep} {reason}" for rep, reason in _exclusions(data.get("excluded")))
    line = f"queued by rule {data.get('rule')} ({_policy(data)}): no candidate"
    return f"{line} — {reasons}" if reasons else line


def _excluded(value: object) -> str:
    return ", ".join(f"{rep} ({reason})" for rep, reason in _exclusions(value))


def _exclusions(value: object) -> list[tuple[object, str]]:
    out = []
    for item in _items(value):
        reason = item.get("reason")
        out.append((item.get("rep"), _REASONS.get(str(reason), str(reason).replace("_", " "))))
    return out


# ---------------------------------------------------------------------------------------------- SLA clocks


def _sla(data: Mapping[str, Any], *, breached: bool) -> str:
    deadline = _instant(data.get("deadline"))
    started = _instant(data.get("started_at"))
    owner = data.get("owner")
    context = ", ".join([
        f"started {_when(started, deadline)}",
        f"owner {owner}" if owner is not None else "no owner",
        _policy(data),
    ])
    sla = data.get("sla")
    if breached:
        return f"SLA {sla} breached at its deadline {_when(deadline)} ({context})"
    return f"SLA {sla} warning: its deadline is {_when(deadline)} ({context})"


def _instant(value: object) -> datetime | str | None:
    """A wire time (RFC 3339) or datetime as a UTC datetime; text that is not a time stays as it is."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo is not None else value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed
    return None


def _when(value: datetime | str | None, same_day_as: datetime | str | None = None) -> str:
    """`2026-03-02 09:05 UTC`; only `09:00` when on the day of `same_day_as` (seconds when not :00)."""
    if value is None:
        return "(unknown)"
    if isinstance(value, str):
        return value
    clock = value.strftime("%H:%M:%S" if value.second else "%H:%M")
    if isinstance(same_day_as, datetime) and same_day_as.date() == value.date():
        return clock
    return f"{value:%Y-%m-%d} {clock} UTC"


# ---------------------------------------------------------------------------------------------- helpers


def _policy(data: Mapping[str, Any]) -> str:
    version = data.get("policy_version")
    return f"policy v{version}" if version is not None else "no policy version"


def _items(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, list | tuple):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
