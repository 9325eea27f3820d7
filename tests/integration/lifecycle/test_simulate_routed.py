"""`simulate --operate`: the simulated traffic with leadledger's router and SLA clocks in the loop, into a
real SQLite store: nothing refused, nothing assigned upstream, each life goes on with the router's rep,
and the same seed and policy give the same decisions."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from leadledger.bootstrap import bootstrap
from lifecycle.audit import export_envelopes
from lifecycle.policies import PolicyStream
from lifecycle.simulate import DEFAULT_POLICY
from lifecycle.simulate.routed import RoutedReport, simulate_routed
from tests.support.env import sqlite_settings

START = datetime(2026, 1, 5, tzinfo=UTC)
UNTIL = datetime(2026, 3, 20, tzinfo=UTC)


def _run(home: Path, leads: int = 400, seed: int = 3) -> tuple[RoutedReport, list[dict[str, Any]]]:
    settings = sqlite_settings(home)
    app = bootstrap(settings)
    try:
        PolicyStream(app.store).publish(DEFAULT_POLICY.read_text(encoding="utf-8"), actor="test",
                                        now=datetime(2026, 1, 1, tzinfo=UTC))
        report = simulate_routed(app, leads=leads, seed=seed, start=START, days=45, mql_threshold=settings.mql_threshold, until=UNTIL)
        return report, list(export_envelopes(app.store))
    finally:
        app.store.close()


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> tuple[RoutedReport, list[dict[str, Any]]]:
    return _run(tmp_path_factory.mktemp("routed"))


def _named(events: list[dict[str, Any]]) -> dict[str, str]:
    """Lead id -> the idempotency key of its capture message (lead ids are random per store)."""
    found: dict[str, str] = {}
    for e in events:
        found.setdefault(e["subject"], e.get("causation") or "")
    return found


def _decisions(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    name = _named(events)
    return [(name[e["subject"]], e["type"], e["time"], orjson_sorted(e["data"])) for e in events
            if e["actor"] in ("router", "sla")]


def orjson_sorted(data: dict[str, Any]) -> str:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()


def test_nothing_is_refused_and_the_router_does_the_assigning(
        routed: tuple[RoutedReport, list[dict[str, Any]]]) -> None:
    report, events = routed
    assert report.tally.dead_lettered == 0, report.refused
    assigned = Counter(e["actor"] for e in events if e["type"].endswith(".LeadAssigned.v2"))
    assert assigned["router"] > 50 and set(assigned) == {"router"}
    kinds = Counter(e["type"].split(".")[-2] for e in events if e["actor"] in ("router", "sla"))
    assert kinds["LeadRoutingQueued"] > 0 and kinds["LeadSLABreached"] > 0  # nights, weekends, slow reps


def test_each_life_goes_on_with_the_rep_the_router_chose(routed: tuple[RoutedReport, list[dict[str, Any]]]) -> None:
    _, events = routed
    owner: dict[str, str | None] = {}
    contacts = 0
    for e in events:
        lead, name = e["subject"], e["type"].split(".")[-2]
        if name == "LeadAssigned":
            owner[lead] = e["data"]["owner"]
        elif name in ("LeadRejectedBySales", "LeadRecycled"):
            owner[lead] = None
        elif name == "LeadContacted":
            contacts += 1
            assert e["data"]["owner"] == owner.get(lead), f"{lead}: contacted by someone who is not its owner"
    assert contacts > 50


def test_the_same_seed_and_policy_give_the_same_decisions(
        tmp_path: Path, routed: tuple[RoutedReport, list[dict[str, Any]]]) -> None:
    _, events = routed
    _, events_again = _run(tmp_path / "again")
    assert _decisions(events_again) == _decisions(events)
    def upstream(evs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        name = _named(evs)
        return [(name[e["subject"]], e.get("causation") or "", e["time"]) for e in evs if e["actor"] not in ("router", "sla")]

    assert upstream(events_again) == upstream(events)
