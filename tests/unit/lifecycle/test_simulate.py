"""The traffic simulator: deterministic, valid SPEC §7 messages the stage table accepts, realistic mix."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson
import pytest

from lifecycle.domain.stages import RULES, GuardContext, Stage, fire
from lifecycle.simulate import generate
from lifecycle.simulate.world import ASSIGN_SOURCE, HORIZON
from schemas.codec import parse_time
from schemas.inbound import parse

START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 90


@cache
def stream(leads: int, seed: int, days: int = DAYS, threshold: int = 70) -> tuple[dict[str, Any], ...]:
    return tuple(generate(leads=leads, seed=seed, start=START, days=days, mql_threshold=threshold))


def encoded(messages: tuple[dict[str, Any], ...]) -> bytes:
    return b"\n".join(orjson.dumps(m) for m in messages)


def kind_of(message: dict[str, Any]) -> str:
    return str(message["type"]).split(".")[2]


def first_deliveries(messages: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for m in messages:
        key = (m["source"], m["id"])
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


@dataclass
class Replayed:
    """A lead as the system would fold it, from the simulator's messages alone."""

    channel: str
    stage: Stage = Stage.CAPTURED
    score: int | None = None
    owner: str | None = None
    last_time: datetime = START
    triggers: list[tuple[str, str | None]] = field(default_factory=list)  # (trigger, reason)
    stages: list[Stage] = field(default_factory=lambda: [Stage.CAPTURED])
    recaptures: int = 0


def replay(messages: tuple[dict[str, Any], ...], threshold: int = 70) -> dict[str, Replayed]:
    """Fold every lead's messages through the real stage table and guards; fail on anything refused."""
    leads: dict[str, Replayed] = {}
    for m in first_deliveries(messages):
        kind, data, at = kind_of(m), m["data"], parse_time(m["time"])
        email = data["email"]
        if kind == "capture" and email not in leads:
            leads[email] = Replayed(channel=data["channel"], last_time=at)
            continue
        lead = leads.get(email)
        assert lead is not None, f"message for a lead never captured: {m}"
        assert at > lead.last_time, f"per-lead times must strictly increase: {m}"
        lead.last_time = at
        if kind == "capture":
            lead.recaptures += 1
        elif kind == "score":
            lead.score = data["total"]
        elif kind == "assign":
            lead.owner = data["owner"]
        elif kind == "contact":
            assert data.get("owner") or lead.owner, f"contact without an owner: {m}"
        elif kind == "transition":
            trigger = data["trigger"]
            dest = fire(lead.stage, trigger)
            assert dest is not None, f"{trigger} not allowed from {lead.stage}: {m}"
            guard = RULES[trigger].guard
            if guard is not None:
                missing = guard(GuardContext(
                    score=lead.score, owner=lead.owner, mql_threshold=threshold,
                    reason=data.get("reason"), override=bool(data.get("override")),
                    amount=data.get("amount"), currency=data.get("currency"), bant=data.get("bant"),
                ))
                assert missing is None, f"{trigger} from {lead.stage} refused: {missing}: {m}"
            lead.stage = dest
            lead.stages.append(dest)
            lead.triggers.append((trigger, data.get("reason")))
            if trigger in ("reject", "recycle"):
                lead.owner = None
    return leads


@cache
def lives(leads: int, seed: int) -> dict[str, Replayed]:
    return replay(stream(leads, seed))


# ---- determinism -------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 42])
def test_same_arguments_give_byte_identical_messages(seed: int) -> None:
    once = list(generate(leads=300, seed=seed, start=START, days=30))
    again = list(generate(leads=300, seed=seed, start=START, days=30))
    assert once
    assert encoded(tuple(once)) == encoded(tuple(again))


def test_different_seeds_give_different_traffic() -> None:
    assert encoded(stream(300, 1)) != encoded(stream(300, 2))


def test_bad_arguments_are_refused_at_the_call() -> None:
    with pytest.raises(ValueError, match="leads"):
        generate(leads=-1, seed=1, start=START, days=10)
    with pytest.raises(ValueError, match="days"):
        generate(leads=10, seed=1, start=START, days=0)
    assert list(generate(leads=0, seed=1, start=START, days=10)) == []


# ---- the wire --------------------------------------------------------------------


def test_every_message_is_a_valid_inbound_message() -> None:
    for m in stream(2000, 1):
        kind, envelope = parse(orjson.dumps(m))
        assert envelope["specversion"] == "1.0"
        assert m["type"] == f"leadledger.inbound.{kind}.v1"
        assert m["time"].endswith("Z") and len(m["time"]) == len("2026-01-05T09:15:00.000000Z")
        email = m["data"]["email"]
        assert email == email.strip().lower()


def test_messages_arrive_in_time_order_within_the_window() -> None:
    times = [parse_time(m["time"]) for m in stream(2000, 1)]
    assert times == sorted(times)
    assert times[0] >= START
    assert times[-1] <= START + timedelta(days=DAYS) + HORIZON
    first_captures: dict[str, datetime] = {}
    for m in first_deliveries(stream(2000, 1)):
        if kind_of(m) == "capture":
            first_captures.setdefault(m["data"]["email"], parse_time(m["time"]))
    assert len(first_captures) == 2000
    assert max(first_captures.values()) < START + timedelta(days=DAYS)


def test_ids_are_unique_per_source_except_redeliveries() -> None:
    messages = stream(2000, 1)
    keys = Counter((m["source"], m["id"]) for m in messages)
    assert max(keys.values()) <= 2
    sources = {m["source"] for m in messages}
    assert {"web-forms", "ads-platform", "crm", "dialer", "scoring-engine", ASSIGN_SOURCE} <= sources


def test_redeliveries_are_exact_copies_right_after_the_original() -> None:
    messages = stream(2000, 1)
    redelivered = [i for i in range(1, len(messages))
                   if (messages[i]["source"], messages[i]["id"]) == (messages[i - 1]["source"], messages[i - 1]["id"])]
    assert 0.001 * len(messages) < len(redelivered) < 0.02 * len(messages)
    for i in redelivered:
        assert orjson.dumps(messages[i]) == orjson.dumps(messages[i - 1])
    assert len(redelivered) == len(messages) - len(first_deliveries(messages))


# ---- every lead's life is one the system accepts ----------------------------------------


@pytest.mark.parametrize(("leads", "seed"), [(2000, 1), (1000, 7)])
def test_every_lead_follows_the_stage_table_and_its_guards(leads: int, seed: int) -> None:
    assert len(lives(leads, seed)) == leads


def test_a_higher_mql_threshold_is_respected() -> None:
    replayed = replay(stream(500, 3, threshold=85), threshold=85)
    assert any(Stage.MQL in lead.stages for lead in replayed.values())


# ---- a realistic mix ---------------------------------------------------------------


def test_channels_differ_in_quality_and_most_leads_never_buy() -> None:
    replayed = lives(2000, 1)
    channels = Counter(lead.channel for lead in replayed.values())
    assert len(channels) >= 5
    won = [lead for lead in replayed.values() if Stage.WON in lead.stages]
    assert 0.005 <= len(won) / len(replayed) <= 0.10

    def mql_rate(names: set[str]) -> float:
        group = [lead for lead in replayed.values() if lead.channel in names]
        return sum(Stage.MQL in lead.stages for lead in group) / len(group)

    assert mql_rate({"referral", "webinar"}) > 2 * mql_rate({"social", "display"})


def test_campaigns_owners_and_behaviours_are_all_present() -> None:
    messages = first_deliveries(stream(2000, 1))
    campaigns: dict[str, set[str | None]] = {}
    for m in messages:
        if kind_of(m) == "capture":
            campaigns.setdefault(m["data"]["channel"], set()).add(m["data"].get("campaign"))
    assert all(2 <= len({c for c in cs if c}) <= 4 for cs in campaigns.values())
    assert any(None in cs for cs in campaigns.values())

    assigns = [m["data"] for m in messages if kind_of(m) == "assign"]
    assert 6 <= len({a["owner"] for a in assigns}) <= 10
    assert any(a["rule"] == "reassign:sla-breach" for a in assigns)

    transitions = [m["data"] for m in messages if kind_of(m) == "transition"]
    triggers = Counter(t["trigger"] for t in transitions)
    assert set(triggers) == set(RULES)
    assert any(t.get("override") and t.get("reason") for t in transitions)
    assert {t["reason"] for t in transitions if t["trigger"] == "disqualify"} >= {"spam", "duplicate", "not a fit"}
    assert all(t["amount"] > 0 and t["currency"] for t in transitions if t["trigger"] == "win")

    kinds = Counter(kind_of(m) for m in messages)
    assert kinds["consent"] > 0 and kinds["contact"] > 0 and kinds["touch"] > 0
    replayed = lives(2000, 1)
    assert any(lead.recaptures for lead in replayed.values())


def test_touches_after_capture_come_from_other_channels_too() -> None:
    captured_on: dict[str, str] = {}
    other = 0
    for m in first_deliveries(stream(2000, 1)):
        data = m["data"]
        if kind_of(m) == "capture":
            captured_on.setdefault(data["email"], data["channel"])
        elif kind_of(m) == "touch" and data["channel"] != captured_on[data["email"]]:
            other += 1
    assert other > 100


def test_some_leads_are_never_contacted_after_assignment() -> None:
    assigned: set[str] = set()
    contacted: set[str] = set()
    for m in first_deliveries(stream(2000, 1)):
        if kind_of(m) == "assign":
            assigned.add(m["data"]["email"])
        elif kind_of(m) == "contact":
            contacted.add(m["data"]["email"])
    assert contacted < assigned


def test_some_customers_come_back_for_an_upsell_and_buy_again() -> None:
    def upsold_twice(lead: Replayed) -> bool:
        path = [trigger if reason != "upsell" else "upsell" for trigger, reason in lead.triggers]
        if "win" not in path:
            return False
        after_win = path[path.index("win") + 1 :]
        return "upsell" in after_win and "win" in after_win[after_win.index("upsell") :]

    replayed = lives(2000, 1)
    assert any(upsold_twice(lead) for lead in replayed.values())


# ---- valid under the time, money and key rules -------------------------------------------


def test_keys_are_normalized_and_amounts_within_the_bound() -> None:
    for m in first_deliveries(stream(2000, 1)):
        data = m["data"]
        for key in ("channel", "campaign"):
            if data.get(key) is not None:
                assert data[key] == data[key].strip().lower(), m
        if data.get("trigger") == "win":
            assert 0 < data["amount"] <= 1e12 and data["currency"] in ("EUR", "GBP", "USD", "SGD"), m


def test_most_sqls_state_an_expected_amount_near_the_amount_later_won() -> None:
    sqls: list[dict[str, Any]] = []
    last_sql: dict[str, dict[str, Any]] = {}
    near = 0
    for m in first_deliveries(stream(2000, 1)):
        data = m["data"]
        if data.get("trigger") == "qualify_sql":
            sqls.append(data)
            last_sql[data["email"]] = data
            assert ("amount" in data) == ("currency" in data), m
            if "amount" in data:
                assert 0 < data["amount"] <= 1e12 and data["currency"] in ("EUR", "GBP", "USD", "SGD"), m
        elif data.get("trigger") == "win":
            expected = last_sql[data["email"]]
            if "amount" in expected:
                assert expected["currency"] == data["currency"], m
                assert 0.75 * data["amount"] <= expected["amount"] <= 1.25 * data["amount"] + 50, m
                near += 1
    stated = sum("amount" in d for d in sqls)
    assert 0.6 * len(sqls) < stated < len(sqls)
    assert near > 0


def test_until_stops_the_same_traffic_before_that_time() -> None:
    until = START + timedelta(days=40, hours=3)
    cut = list(generate(leads=300, seed=4, start=START, days=30, until=until))
    everything = list(generate(leads=300, seed=4, start=START, days=30))
    assert 0 < len(cut) < len(everything)
    assert encoded(tuple(cut)) == encoded(tuple(everything[:len(cut)]))  # a prefix
    assert all(parse_time(m["time"]) <= until for m in cut)
    assert parse_time(everything[len(cut)]["time"]) > until
    assert list(generate(leads=300, seed=4, start=START, days=30, until=START - timedelta(days=1))) == []
    with pytest.raises(ValueError, match="until"):
        generate(leads=3, seed=1, start=START, days=3, until=datetime(2026, 2, 1))
