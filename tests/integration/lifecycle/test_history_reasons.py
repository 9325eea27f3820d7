"""`leadledger history` says why: each decision of the router and the SLA clocks carries its reasons in one
line, in the table and as `why` in JSON (next to the event's full data)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
from click.testing import CliRunner, Result

from leadledger.bootstrap import bootstrap
from leadledger.cli import cli
from lifecycle.domain.commands import Capture
from lifecycle.store.repository import Changes
from tests.support.cli import T0, runner_env
from tests.support.env import sqlite_settings

ROUTED = ("assigned to maria by rule enterprise-dach (policy v3, round robin): candidates "
          "maria (weight 2, current 0→-1, 12/40 open), jonas (weight 1, current 1→2, 3/40 open); "
          "excluded: lena (absent), tom (outside hours)")
QUEUED = "queued by rule enterprise-dach (policy v3): no candidate — maria absent, jonas outside hours"
BREACHED = ("SLA first-contact breached at its deadline 2026-03-02 13:00 UTC (started 09:00, owner maria, "
            "policy v3)")
WARNED = ("SLA first-contact warning: its deadline is 2026-03-02 13:00 UTC (started 09:00, owner maria, "
          "policy v3)")


def run_cli(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=runner_env(home))


@pytest.fixture
def decided(tmp_path: Path) -> tuple[Path, UUID]:
    """A lead captured by hand, then queued, routed, warned about and breached by leadledger's operator
    (its aggregate's methods, committed as the operator commits)."""
    app = bootstrap(sqlite_settings(tmp_path))
    try:
        outcome = app.execute(Capture(occurred_at=T0, actor="web-forms", message_key=None,
                                      email="ada@example.com", channel="webinar"))
        assert outcome.lead_id is not None
        loaded = app.store.load(outcome.lead_id)
        assert loaded is not None
        lead = loaded.lead
        lead.queue_for_routing(rule="enterprise-dach", policy_version=3, occurred_at=T0 + timedelta(seconds=1),
                               excluded=[{"rep": "maria", "reason": "absent"},
                                         {"rep": "jonas", "reason": "outside_hours"}], causation=None)
        lead.route_to(owner="maria", rule="enterprise-dach", method="round_robin", policy_version=3,
                      candidates=[{"rep": "maria", "weight": 2, "current_before": 0, "open": 12, "capacity": 40},
                                  {"rep": "jonas", "weight": 1, "current_before": 1, "open": 3, "capacity": 40}],
                      excluded=[{"rep": "lena", "reason": "absent"}, {"rep": "tom", "reason": "outside_hours"}],
                      occurred_at=T0 + timedelta(minutes=1), causation=None)
        deadline = T0 + timedelta(hours=4)
        for breached, at in ((False, T0 + timedelta(hours=3)), (True, deadline)):
            lead.sla_timer(breached=breached, sla="first-contact", started_at=T0, deadline=deadline,
                           owner="maria", policy_version=3, occurred_at=at)
        app.store.commit(Changes(leads=[loaded]))
    finally:
        app.store.close()
    return tmp_path, outcome.lead_id


def history_json(home: Path, lead: UUID) -> dict[str, Any]:
    result = run_cli(home, "history", str(lead), "--json")
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = orjson.loads(result.stdout)
    return body


def test_history_json_gives_each_decision_its_why_next_to_the_full_data(decided: tuple[Path, UUID]) -> None:
    home, lead = decided
    events = history_json(home, lead)["events"]
    assert [e["type"].split(".")[2] for e in events] == [
        "LeadCaptured", "LeadRoutingQueued", "LeadAssigned", "LeadSLAWarned", "LeadSLABreached"]
    assert [e.get("why") for e in events] == [None, QUEUED, ROUTED, WARNED, BREACHED]
    assert "why" not in events[0]  # only decisions carry one
    assigned = events[2]
    assert assigned["actor"] == "router"
    assert assigned["data"]["method"] == "round_robin"
    assert assigned["data"]["candidates"][0] == {"rep": "maria", "weight": 2, "current_before": 0, "open": 12,
                                                 "capacity": 40}
    assert assigned["data"]["excluded"] == [{"rep": "lena", "reason": "absent"},
                                            {"rep": "tom", "reason": "outside_hours"}]
    assert events[4]["actor"] == "sla" and events[4]["data"]["deadline"] == "2026-03-02T13:00:00.000000Z"


def test_the_history_table_shows_each_decisions_reasons(decided: tuple[Path, UUID]) -> None:
    home, lead = decided
    result = CliRunner().invoke(cli, ["--home", str(home), "history", str(lead)],
                                env={**runner_env(home), "COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for why in (QUEUED, ROUTED, WARNED, BREACHED):
        assert any(why in line for line in lines), f"{why!r} not on one line of:\n{result.stdout}"


def test_an_assignment_by_hand_has_no_why(decided: tuple[Path, UUID]) -> None:
    home, lead = decided
    assert run_cli(home, "assign", str(lead), "--owner", "jonas", "--rule", "manual").exit_code == 0
    last = history_json(home, lead)["events"][-1]
    assert last["data"]["owner"] == "jonas" and last["data"]["method"] is None
    assert "why" not in last
