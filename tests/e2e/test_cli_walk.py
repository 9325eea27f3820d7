"""The acceptance walk through the real `leadledger` command, and the lead's stage "as of" every instant."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.cli import T0, cli_env

LEADLEDGER = shutil.which("leadledger") or str(Path(sys.executable).with_name("leadledger"))


def hour(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Cli:
    def __init__(self, home: Path) -> None:
        self.env = cli_env(home)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LEADLEDGER, *args], env=self.env, capture_output=True, text=True, timeout=60)

    def ok(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, f"leadledger {' '.join(args)} failed: {done.stderr}"
        return orjson.loads(done.stdout)


@pytest.fixture
def walk(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "home")


# (hours after capture, command args after LEAD, expected event, stage after it)
STEPS: list[tuple[int, list[str], str, str | None]] = [
    (1, ["transition", "{lead}", "nurture"], "LeadNurtured", "nurtured"),
    (2, ["score", "{lead}", "--total", "82", "--fit", "40", "--behaviour", "42"], "LeadScored", None),
    (3, ["transition", "{lead}", "qualify_mql"], "LeadQualifiedAsMQL", "mql"),
    (4, ["assign", "{lead}", "--owner", "olivia", "--rule", "round-robin"], "LeadAssigned", None),
    (5, ["transition", "{lead}", "accept"], "LeadAcceptedBySales", "sal"),
    (6, ["contact", "{lead}"], "LeadContacted", None),
    (7, ["transition", "{lead}", "qualify_sql", "--budget", "50k", "--authority", "CFO", "--need",
         "reporting", "--timeline", "Q3", "--amount", "11500", "--currency", "eur"], "LeadQualifiedAsSQL", "sql"),
    (8, ["transition", "{lead}", "win", "--amount", "12000", "--currency", "eur"], "LeadWon", "won"),
    (9, ["transition", "{lead}", "recycle", "--reason", "upsell"], "LeadRecycled", "recycled"),
    (10, ["transition", "{lead}", "nurture"], "LeadNurtured", "nurtured"),
    (11, ["transition", "{lead}", "qualify_mql"], "LeadQualifiedAsMQL", "mql"),
]


def test_the_acceptance_walk(walk: Cli) -> None:
    captured = walk.ok("capture", "--email", "a@x.io", "--channel", "webinar", "--campaign", "q1-cloud",
                       "--name", "Ada", "--at", iso(T0))
    assert set(captured) >= {"lead_id"}
    lead = captured["lead_id"]
    assert captured["status"] == "applied" and captured["version"] == 1

    refused = walk.run("transition", lead, "accept", "--at", iso(hour(0.5)))
    assert refused.returncode != 0
    assert "captured" in refused.stderr and "accept" in refused.stderr and lead in refused.stderr
    assert "Traceback" not in refused.stderr
    only_capture = walk.ok("history", lead)
    assert [e["type"] for e in only_capture["events"]] == ["leadledger.lead.LeadCaptured.v3"]
    assert only_capture["stage"] == "captured"

    version = 1
    for hours, args, event, _ in STEPS:
        out = walk.ok(*[a.format(lead=lead) for a in args], "--at", iso(hour(hours)))
        version += 1
        assert (out["status"], out["event"], out["version"]) == ("applied", event, version), args

    # "as of" every instant: before capture, at each step, and between steps
    expectations: list[tuple[datetime, str | None, int]] = [
        (T0 - timedelta(seconds=1), None, 0),
        (T0, "captured", 1),
        (hour(0.5), "captured", 1),
    ]
    stage, count = "captured", 1
    for hours, _, _, new_stage in STEPS:
        count += 1
        stage = new_stage or stage
        expectations.append((hour(hours), stage, count))
        expectations.append((hour(hours) + timedelta(minutes=30), stage, count))
    assert [s for _, s, _ in expectations[-4:]] == ["nurtured", "nurtured", "mql", "mql"]

    for instant, stage_then, events_then in expectations:
        result = walk.ok("history", lead, "--as-of", iso(instant))
        assert result["lead_id"] == lead
        assert result.get("stage") == stage_then, f"as of {iso(instant)}"
        assert len(result["events"]) == events_then, f"as of {iso(instant)}"
        assert [e["sequence"] for e in result["events"]] == list(range(1, events_then + 1))

    everything = walk.ok("history", lead)
    assert everything["stage"] == "mql"
    changes = [(e["data"].get("from_stage"), e["data"].get("to_stage")) for e in everything["events"]
               if e["data"].get("to_stage")]
    assert changes == [(None, "captured"), ("captured", "nurtured"), ("nurtured", "mql"), ("mql", "sal"),
                       ("sal", "sql"), ("sql", "won"), ("won", "recycled"), ("recycled", "nurtured"),
                       ("nurtured", "mql")]
    sql = next(e for e in everything["events"] if e["data"].get("to_stage") == "sql")
    assert (sql["data"]["amount"], sql["data"]["currency"]) == (11500.0, "EUR")
    won = next(e for e in everything["events"] if e["data"].get("to_stage") == "won")
    assert (won["data"]["amount"], won["data"]["currency"]) == (12000.0, "EUR")
    assert everything["events"][0]["data"]["email"] == "a@x.io"
    assert everything["events"][0]["time"] == "2026-03-02T09:00:00.000000Z"

    verified = walk.run("verify", lead)
    assert verified.returncode == 0, verified.stderr


def test_refusals_through_the_cli_name_what_is_missing(walk: Cli) -> None:
    lead = walk.ok("capture", "--email", "b@x.io", "--channel", "ads", "--at", iso(T0))["lead_id"]
    low = walk.run("score", lead, "--total", "20", "--at", iso(hour(1)))
    assert low.returncode == 0, low.stderr

    below = walk.run("transition", lead, "qualify_mql", "--at", iso(hour(2)))
    assert below.returncode != 0 and "threshold" in below.stderr and "20" in below.stderr
    no_reason = walk.run("transition", lead, "qualify_mql", "--override", "--at", iso(hour(2)))
    assert no_reason.returncode != 0 and "reason" in no_reason.stderr
    forced = walk.ok("transition", lead, "qualify_mql", "--override", "--reason", "met at booth",
                     "--at", iso(hour(2)))
    assert forced["event"] == "LeadQualifiedAsMQL"

    by_email = walk.run("transition", "B@X.IO", "accept", "--at", iso(hour(3)))
    assert by_email.returncode != 0 and "owner" in by_email.stderr and "'mql'" in by_email.stderr

    history = walk.ok("history", "b@x.io")
    assert [e["sequence"] for e in history["events"]] == [1, 2, 3]
    assert history["stage"] == "mql"
