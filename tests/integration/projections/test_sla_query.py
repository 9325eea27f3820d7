"""`leadledger sla` and `GET /sla` end to end, and the speed split into system and human delay, on a
store with a published policy, against numbers computed by hand. Runs on SQLite and PostgreSQL.

The policy (published between two ingests) has a business calendar (Europe/Berlin, Mon–Fri
08:00–18:00), routing on mql and one SLA: first contact within 30 business minutes, warning at 15.
Times below are UTC (Berlin is UTC+1 in March 2026); the week starts Monday 2026-03-02.

Ingested before the policy (no clock, system delay from the capture):
  ada  captured Mon 08:00, mql 09:00, assigned maria 09:10, contacted 09:15  system 70 min, human 5 min
Ingested after it (a clock each; system delay from the mql entry):
  bob  mql Mon 10:00, assigned jonas 10:20, contacted 10:30   met after 10 min     system 20 min, human 10 min
  cy   mql Mon 12:00, assigned maria 12:05, contacted 13:00   breached, 55 min     system  5 min, human 55 min
  dee  mql Fri 16:30, assigned jonas 16:45 (17:45 Berlin), never contacted: 15 min on Friday, deadline
       Monday 08:15 Berlin                                     breached             system 15 min
  eve  mql Mon 9th 10:50, assigned maria 11:40 (12:40 Berlin): at 12:00 20 min counted, past the
       warning                                                 open, at risk        system 50 min
Everything is asked as of Monday 2026-03-09 12:00Z.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from leadledger.bootstrap import open_store
from leadledger.http.app import create_app
from lifecycle.policies import PolicyStream
from lifecycle.settings import Settings
from tests.support.env import TEST_SECRET

with warnings.catch_warnings():  # starlette prefers httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

POLICY = """
[calendars.emea]
timezone = "Europe/Berlin"
hours = { mon = "08:00-18:00", tue = "08:00-18:00", wed = "08:00-18:00", thu = "08:00-18:00", fri = "08:00-18:00" }

[reps.maria]
calendar = "emea"
[reps.jonas]
calendar = "emea"

[routing]
on = ["mql"]
[[routing.rules]]
id = "everyone"
pool = { maria = 1, jonas = 1 }

[[sla]]
id = "first-contact"
start = "assigned"
stop = ["contacted"]
target = "30m"
clock = "business"
calendar = "emea"
warn_at = 0.5
"""
AS_OF = "2026-03-09T12:00:00Z"
MIN = 60.0


class Script:
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.lines: list[bytes] = []

    def msg(self, kind: str, when: str, **data: Any) -> None:
        self.lines.append(orjson.dumps({"specversion": "1.0", "id": f"{self.tag}-{len(self.lines) + 1:03d}",
                                        "source": "sla-test", "type": f"leadledger.inbound.{kind}.v1",
                                        "time": when, "data": data}))

    def lead(self, name: str, captured: str, mql: str, owner: str, assigned: str, contacted: str | None) -> None:
        email = f"{name}@example.com"
        self.msg("capture", captured, email=email, channel="web")
        self.msg("score", captured, email=email, total=80)
        self.msg("transition", mql, email=email, trigger="qualify_mql")
        self.msg("assign", assigned, email=email, owner=owner)
        if contacted is not None:
            self.msg("contact", contacted, email=email)

    def write(self, path: Path) -> Path:
        path.write_bytes(b"\n".join(self.lines) + b"\n")
        return path


def cli(s: Settings, *args: str, code: int = 0) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env.update(LEADLEDGER_HOME=str(s.home), LEADLEDGER_SECRET=TEST_SECRET.decode())
    if s.postgres_dsn:
        env.update(LEADLEDGER_POSTGRES_DSN=s.postgres_dsn, LEADLEDGER_POSTGRES_SCHEMA=s.postgres_schema)
    done = subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env, capture_output=True, timeout=120)
    assert done.returncode == code, done.stderr.decode()
    return done.stdout if code == 0 else done.stderr


def ask(s: Settings, *args: str) -> Any:
    return orjson.loads(cli(s, *args, "--json"))


@pytest.fixture
def ledger(backend_settings: Settings, tmp_path: Path) -> tuple[Settings, datetime]:
    """The store, and an instant between the first ingest and the policy's publication."""
    s = backend_settings
    before = Script("before")
    before.lead("ada", "2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z", "maria", "2026-03-02T09:10:00Z",
                "2026-03-02T09:15:00Z")
    cli(s, "ingest", str(before.write(tmp_path / "before.jsonl")))
    time.sleep(0.01)
    known = datetime.now(UTC)
    time.sleep(0.01)
    store = open_store(s)
    try:
        PolicyStream(store).publish(POLICY, actor="test", now=datetime.now(UTC))
    finally:
        store.close()
    time.sleep(0.01)
    after = Script("after")
    after.lead("bob", "2026-03-02T08:30:00Z", "2026-03-02T10:00:00Z", "jonas", "2026-03-02T10:20:00Z",
               "2026-03-02T10:30:00Z")
    after.lead("cy", "2026-03-02T11:00:00Z", "2026-03-02T12:00:00Z", "maria", "2026-03-02T12:05:00Z",
               "2026-03-02T13:00:00Z")
    after.lead("dee", "2026-03-06T16:00:00Z", "2026-03-06T16:30:00Z", "jonas", "2026-03-06T16:45:00Z", None)
    after.lead("eve", "2026-03-09T10:00:00Z", "2026-03-09T10:50:00Z", "maria", "2026-03-09T11:40:00Z", None)
    tally = orjson.loads(cli(s, "ingest", str(after.write(tmp_path / "after.jsonl")), "--json"))
    assert (tally["applied"], tally["dead_lettered"]) == (len(after.lines), 0)
    return s, known


def row(sla: str, group: str | None, started: int, met: int, breached: int, open_: int, at_risk: int,
        compliance: float | None, p50: float | None, p90: float | None, restarted: int = 0) -> dict[str, Any]:
    return {"sla": sla, "group": group, "started": started, "met": met, "breached": breached,
            "restarted": restarted, "open": open_, "at_risk": at_risk,
            "compliance": None if compliance is None else round(compliance, 9),  # 9 decimals, as answered
            "p50_seconds": p50, "p90_seconds": p90}


def delay(count: int, p50: float | None, p90: float | None) -> dict[str, Any]:
    return {"count": count, "p50_s": p50, "p90_s": p90}


def test_sla_cli_and_http(ledger: tuple[Settings, datetime]) -> None:
    s, _ = ledger
    by_rule = ask(s, "sla", "--as-of", AS_OF)
    assert by_rule == {
        "from": None, "to": None, "as_of": "2026-03-09T12:00:00.000000Z", "known_at": None,
        "evaluated_at": "2026-03-09T12:00:00.000000Z", "by": "rule", "policy_version": 1,
        # ada's assignment was recorded before the policy: no clock
        "rules": [row("first-contact", "first-contact", 4, 1, 2, 1, 1, 1 / 3, 10 * MIN, 55 * MIN)],
        "note": None,
    }
    by_owner = ask(s, "sla", "--by", "owner", "--as-of", AS_OF)["rules"]
    assert by_owner == [row("first-contact", "jonas", 2, 1, 1, 0, 0, 0.5, 10 * MIN, 10 * MIN),
                        row("first-contact", "maria", 2, 0, 1, 1, 1, 0.0, 55 * MIN, 55 * MIN)]
    window = ask(s, "sla", "--from", "2026-03-06", "--to", "2026-03-10", "--as-of", AS_OF)
    assert window["rules"] == [row("first-contact", "first-contact", 2, 0, 1, 1, 1, 0.0, None, None)]
    assert (window["from"], window["to"]) == ("2026-03-06T00:00:00.000000Z", "2026-03-10T00:00:00.000000Z")
    friday = ask(s, "sla", "--as-of", "2026-03-06T17:30:00Z")["rules"]  # dee's clock: 15 min, warned at 17:00Z
    assert friday == [row("first-contact", "first-contact", 3, 1, 1, 1, 1, 0.5, 10 * MIN, 55 * MIN)]

    table = cli(s, "sla", "--by", "owner", "--as-of", AS_OF).decode()
    assert "first-contact" in table and "maria" in table and "33.3 %" not in table and "50.0 %" in table
    assert "33.3 %" in cli(s, "sla", "--as-of", AS_OF).decode()
    assert b"--by" in cli(s, "sla", "--by", "channel", code=2)

    with TestClient(create_app(s, None)) as client:
        for params, args in (({"as_of": AS_OF}, ["--as-of", AS_OF]),
                             ({"by": "owner", "as_of": AS_OF}, ["--by", "owner", "--as-of", AS_OF]),
                             ({"from": "2026-03-06", "to": "2026-03-10", "as_of": AS_OF},
                              ["--from", "2026-03-06", "--to", "2026-03-10", "--as-of", AS_OF])):
            response = client.get("/sla", params=params)
            assert response.status_code == 200, response.text
            assert response.json() == ask(s, "sla", *args), params
        for params, name in (({"as-of": AS_OF}, "as-of"), ({"by": "channel"}, "by"), ({"mode": "period"}, "mode"),
                             ({"from": "soon"}, "from")):
            response = client.get("/sla", params=params)
            assert response.status_code == 400, params
            assert name in response.json()["error"] and "--" not in response.json()["error"]
        assert "/sla" in client.get("/openapi.json").json()["paths"]
        page = client.get("/report", params={"as_of": AS_OF}).text
        assert '<section id="sla">' in page and "first-contact" in page


def test_speed_splits_system_and_human_delay(ledger: tuple[Settings, datetime]) -> None:
    s, known = ledger
    [overall] = ask(s, "speed", "--as-of", AS_OF)["groups"]
    assert (overall["assignments"], overall["contacted"], overall["p50_s"], overall["p90_s"]) == (
        5, 3, 10 * MIN, 55 * MIN)
    # ada from her capture (no routing policy when recorded), the others from their mql entry:
    # 70, 20, 5, 15, 50 min → ranks 3 and 5 of 5, 15, 20, 50, 70
    assert overall["system_delay"] == delay(5, 20 * MIN, 70 * MIN)
    assert overall["human_delay"] == delay(3, 10 * MIN, 55 * MIN)  # 5, 10, 55 min
    by_owner = {g["key"]: g for g in ask(s, "speed", "--by", "owner", "--as-of", AS_OF)["groups"]}
    assert by_owner["maria"]["system_delay"] == delay(3, 50 * MIN, 70 * MIN)  # 5, 50, 70
    assert by_owner["maria"]["human_delay"] == delay(2, 5 * MIN, 55 * MIN)
    assert by_owner["jonas"]["system_delay"] == delay(2, 15 * MIN, 20 * MIN)
    assert by_owner["jonas"]["human_delay"] == delay(1, 10 * MIN, 10 * MIN)
    # as known before the policy was published: only ada, from her capture
    [before] = ask(s, "speed", "--known-at", known.isoformat())["groups"]
    assert before["system_delay"] == delay(1, 70 * MIN, 70 * MIN)
    assert before["human_delay"] == delay(1, 5 * MIN, 5 * MIN)
    # period mode: assignments in the window
    [monday] = ask(s, "speed", "--mode", "period", "--from", "2026-03-09", "--as-of", AS_OF)["groups"]
    assert monday["system_delay"] == delay(1, 50 * MIN, 50 * MIN) and monday["human_delay"] == delay(0, None, None)
    assert "system p50" in cli(s, "speed", "--as-of", AS_OF).decode()


def test_without_a_policy_sla_says_how_to_publish_one(backend_settings: Settings, tmp_path: Path) -> None:
    s = backend_settings
    script = Script("bare")
    script.lead("ada", "2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z", "maria", "2026-03-02T09:10:00Z", None)
    cli(s, "ingest", str(script.write(tmp_path / "bare.jsonl")))
    answer = ask(s, "sla")
    assert answer["rules"] == [] and answer["policy_version"] is None
    assert answer["note"] == "no policy published; publish one with `leadledger policy publish FILE`"
    assert "no policy published" in cli(s, "sla").decode()
    [group] = ask(s, "speed")["groups"]
    assert group["system_delay"] == delay(1, 70 * MIN, 70 * MIN)  # capture → assignment
    with TestClient(create_app(s, None)) as client:
        assert client.get("/sla").json()["note"] == answer["note"]
        assert 'id="sla"' not in client.get("/report").text
