"""`operate` over a real store (SQLite and PostgreSQL): given stored events and a published policy →
the decisions it appends; restarts, crashes and a second operator change nothing of them."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest

from leadledger.bootstrap import bootstrap
from lifecycle.application import LeadLedger
from lifecycle.domain import commands as cmd
from lifecycle.operate import OperateReport, OperatorRunner
from lifecycle.policies import PolicyStream
from tests.support.cli import cli_env
from tests.support.env import sqlite_settings

MONDAY = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # 08:00 in Berlin
POLICY = """
[calendars.emea]
timezone = "Europe/Berlin"
hours = { mon = "08:00-18:00", tue = "08:00-18:00", wed = "08:00-18:00", thu = "08:00-18:00", fri = "08:00-16:00" }

[reps.maria]
calendar = "emea"
capacity = 3
[reps.jonas]
calendar = "emea"
capacity = 3
absences = [{ from = "2026-03-03", to = "2026-03-04" }]

[routing]
on = ["mql"]
[[routing.rules]]
id = "all"
pool = { maria = 2, jonas = 1 }

[[sla]]
id = "first-contact"
start = "assigned"
stop = ["contacted"]
target = "30m"
clock = "business"
warn_at = 0.5
on_breach = ["alert", "reassign"]
"""


def _ref(lead: UUID) -> cmd.LeadRef:
    return cmd.LeadRef(lead_id=lead)


def _qualified(app: LeadLedger, email: str, captured_at: datetime, mql_at: datetime) -> UUID:
    """A lead captured and qualified as an MQL (by override), what routes it: its id."""
    out = app.execute(cmd.Capture(occurred_at=captured_at, actor="test", message_key=None, email=email,
                                  channel="web"))
    assert out.lead_id is not None
    app.execute(cmd.Transition(occurred_at=mql_at, actor="test", message_key=None, lead=_ref(out.lead_id),
                               trigger="qualify_mql", override=True, reason="x"))
    return out.lead_id


def _history(app: LeadLedger, leads: int = 12, seed: int = 7) -> list[UUID]:
    """Leads qualified over three days, day and night; some contacted in time, some late, some lost."""
    rng = random.Random(seed)
    ids = []
    for i in range(leads):
        at = MONDAY + timedelta(hours=rng.randrange(0, 60), minutes=rng.randrange(60))
        out = app.execute(cmd.Capture(occurred_at=at, actor="test", message_key=None, email=f"p{i}@firm{i}.example",
                                      channel="web"))
        assert out.lead_id is not None
        lead = out.lead_id
        ids.append(lead)
        app.execute(cmd.Transition(occurred_at=at + timedelta(minutes=1), actor="test", message_key=None,
                                   lead=_ref(lead), trigger="qualify_mql", override=True, reason="demo"))
        if i % 4 == 3:
            app.execute(cmd.Transition(occurred_at=at + timedelta(hours=30), actor="test", message_key=None,
                                       lead=_ref(lead), trigger="disqualify", reason="spam"))
    return ids


SCORING = """
[scoring]
threshold = 50
auto_mql = true
[[scoring.fit]]
id = "large"
when = { employees_gte = 200 }
points = 20
[[scoring.behaviour]]
id = "webinar"
when = { touch_kind = "webinar_attended" }
points = 15
half_life = "2d"
"""


def _scored_history(app: LeadLedger, leads: int = 12, seed: int = 5) -> None:
    """Leads captured with a company size and touched over three days: the scorer qualifies those that
    reach 50, the router then assigns them, their SLA clocks run."""
    rng = random.Random(seed)
    for i in range(leads):
        at = MONDAY + timedelta(hours=rng.randrange(0, 60), minutes=rng.randrange(60))
        out = app.execute(cmd.Capture(occurred_at=at, actor="test", message_key=None, email=f"s{i}@firm{i}.example",
                                      channel="web", employees=rng.choice([20, 500])))
        assert out.lead_id is not None
        for k in range(rng.randrange(4)):
            app.execute(cmd.Touch(occurred_at=at + timedelta(hours=3 * k + 1), actor="test", message_key=None,
                                  lead=_ref(out.lead_id), channel="webinar", kind="webinar_attended"))


def _published(app: LeadLedger, text: str = POLICY) -> None:
    PolicyStream(app.store).publish(text, actor="test", now=MONDAY - timedelta(days=1))


def _decisions(app: LeadLedger) -> list[tuple[Any, ...]]:
    """Every decision event, without what differs between runs (ids, recording times, hashes)."""
    out = []
    for _, lead, version, state in app.store.iter_raw():
        envelope = orjson.loads(state)
        if envelope["actor"] in ("router", "sla", "scorer"):
            out.append((str(lead), version, envelope["type"], envelope["time"], orjson.dumps(envelope["data"],
                        option=orjson.OPT_SORT_KEYS)))
    return sorted(out)


NOW = MONDAY + timedelta(days=4)


class TestOperate:
    def test_routes_queues_at_night_releases_in_the_morning_and_breaches(self, app: LeadLedger) -> None:
        _published(app)
        _history(app)
        report = OperatorRunner(app.store).run_once(NOW)
        decisions = _decisions(app)
        kinds = {d[2].split(".")[2] for d in decisions}
        assert {"LeadAssigned", "LeadRoutingQueued", "LeadSLAWarned", "LeadSLABreached"} <= kinds
        assert report.decisions["assign"] == sum(1 for d in decisions if "LeadAssigned" in d[2])
        for _, _lead, _, state in app.store.iter_raw():
            envelope = orjson.loads(state)
            if envelope["type"].endswith("LeadAssigned.v2") and envelope["actor"] == "router":
                at = datetime.fromisoformat(envelope["time"]).astimezone(UTC)
                local = at + timedelta(hours=1)  # Berlin in March (before DST)
                assert local.weekday() < 5 and 8 <= local.hour < 18, envelope  # only inside working hours
                if envelope["data"]["owner"] == "jonas":
                    assert local.date() != datetime(2026, 3, 3).date()  # never while absent
                assert envelope["data"]["policy_version"] == 1
                assert all(c["open"] < c["capacity"] for c in envelope["data"]["candidates"])

    def test_a_second_run_decides_nothing_new(self, app: LeadLedger) -> None:
        _published(app)
        _history(app)
        OperatorRunner(app.store).run_once(NOW)
        before = _decisions(app)
        again = OperatorRunner(app.store).run_once(NOW)
        assert sum(again.decisions.values()) == 0
        assert _decisions(app) == before

    def test_no_policy_no_decisions(self, app: LeadLedger) -> None:
        _history(app)
        report = OperatorRunner(app.store).run_once(NOW)
        assert sum(report.decisions.values()) == 0 and _decisions(app) == []

    def test_a_deadline_that_passed_while_down_fires_on_restart_at_its_true_instant(self, app: LeadLedger) -> None:
        _published(app)
        out = _qualified(app, "late@firm.example", MONDAY + timedelta(hours=1), MONDAY + timedelta(hours=1, minutes=1))
        first = OperatorRunner(app.store).run_once(MONDAY + timedelta(hours=1, minutes=2))
        assert first.decisions == {"assign": 1}
        # down for a day; the restarted operator fires the warning and breach at their own instants
        OperatorRunner(app.store).run_once(MONDAY + timedelta(days=1))
        times: dict[str, str] = {}
        for d in sorted(_decisions(app), key=lambda d: d[1]):  # the first of each kind, by version
            if d[0] == str(out):
                times.setdefault(d[2].split(".")[2], d[3])
        assert times["LeadSLAWarned"] == "2026-03-02T08:16:00.000000Z"
        assert times["LeadSLABreached"] == "2026-03-02T08:31:00.000000Z"

    def test_a_lead_queued_for_reassignment_stays_with_its_owner_once_they_call(self, app: LeadLedger) -> None:
        """Tuesday (jonas away): maria's lead breaches, nobody else can take it, it queues; maria calls
        before jonas is back, so the queue lets it go: no reassignment the next morning."""
        _published(app)
        tuesday = MONDAY + timedelta(days=1, hours=1)  # 09:00 in Berlin
        out = _qualified(app, "q@firm.example", tuesday, tuesday + timedelta(minutes=1))
        OperatorRunner(app.store).run_once(tuesday + timedelta(hours=1))  # assigned, warned, breached, queued
        app.execute(cmd.Contact(occurred_at=tuesday + timedelta(hours=2), actor="test", message_key=None,
                                lead=_ref(out)))
        OperatorRunner(app.store).run_once(NOW)  # past Wednesday 08:00, when jonas could have taken it
        names = [d[2].split(".")[2] for d in sorted(_decisions(app), key=lambda d: d[1])]
        assert names == ["LeadAssigned", "LeadSLAWarned", "LeadSLABreached", "LeadRoutingQueued"]
        assert app.load(out).owner == "maria"  # type: ignore[union-attr]

    def test_a_new_policy_version_never_reaches_back_to_running_clocks(self, app: LeadLedger) -> None:
        """A lead MQL'd before any policy has no clock; one assigned under v1 (30 min) and contacted at
        25 min stays met when v2 (20 min) is published later; a lead assigned after v2 gets v2's clock."""
        before = app.execute(cmd.Capture(occurred_at=MONDAY, actor="test", message_key=None,
                                         email="early@firm.example", channel="web"))
        assert before.lead_id is not None
        app.execute(cmd.Assign(occurred_at=MONDAY + timedelta(minutes=1), actor="test", message_key=None,
                               lead=_ref(before.lead_id), owner="maria", rule="manual"))
        _published(app)
        first = _qualified(app, "v1@firm.example", MONDAY + timedelta(hours=1), MONDAY + timedelta(hours=1, minutes=1))
        OperatorRunner(app.store).run_once(MONDAY + timedelta(hours=1, minutes=2))  # assigned under v1
        app.execute(cmd.Contact(occurred_at=MONDAY + timedelta(hours=1, minutes=26), actor="test", message_key=None,
                                lead=_ref(first)))
        PolicyStream(app.store).publish(POLICY.replace('target = "30m"', 'target = "20m"'), actor="test",
                                        now=MONDAY + timedelta(hours=2))
        second = _qualified(app, "v2@firm.example", MONDAY + timedelta(hours=3), MONDAY + timedelta(hours=3, minutes=1))
        OperatorRunner(app.store).run_once(NOW)
        per_lead: dict[str, list[tuple[str, str, int]]] = {}
        for lead, _, kind, at, data in sorted(_decisions(app), key=lambda d: (d[0], d[1])):
            per_lead.setdefault(lead, []).append((kind.split(".")[2], at, orjson.loads(data)["policy_version"]))
        assert str(before.lead_id) not in per_lead  # its clock started before any policy
        assert per_lead[str(first)] == [("LeadAssigned", "2026-03-02T08:01:00.000000Z", 1),
                                                ("LeadSLAWarned", "2026-03-02T08:16:00.000000Z", 1)]
        assert [(k, v) for k, _, v in per_lead[str(second)]][:3] == [
            ("LeadAssigned", 2), ("LeadSLAWarned", 2), ("LeadSLABreached", 2)]
        assert per_lead[str(second)][2][1] == "2026-03-02T10:21:00.000000Z"  # 20 minutes: v2's target

    def test_a_breach_of_a_lead_out_of_the_open_stages_reassigns_nobody(self, app: LeadLedger) -> None:
        _published(app)
        out = _qualified(app, "dq@firm.example", MONDAY, MONDAY + timedelta(minutes=1))
        OperatorRunner(app.store).run_once(MONDAY + timedelta(minutes=2))
        app.execute(cmd.Transition(occurred_at=MONDAY + timedelta(minutes=5), actor="test", message_key=None,
                                   lead=_ref(out), trigger="disqualify", reason="spam"))
        OperatorRunner(app.store).run_once(NOW)
        names = [d[2].split(".")[2] for d in sorted(_decisions(app), key=lambda d: d[1])]
        assert names == ["LeadAssigned", "LeadSLAWarned", "LeadSLABreached"]  # the clock ran (no stop kind), no reassign

    def test_a_restart_after_a_long_catch_up_decides_nothing(self, app: LeadLedger) -> None:
        """One catch-up over a backlog stores its decisions after later events of the same leads (a lead
        queued at night, then disqualified before morning): a rebuilt operator must reach the state the
        live one had, so a restart decides nothing more."""
        _published(app)
        night = MONDAY + timedelta(hours=14)  # 22:00 in Berlin: nobody works
        out = _qualified(app, "n@firm.example", night, night + timedelta(minutes=1))
        app.execute(cmd.Transition(occurred_at=night + timedelta(hours=2), actor="test", message_key=None,
                                   lead=_ref(out), trigger="disqualify", reason="spam"))
        # Tuesday (jonas away): maria's lead breaches, nobody else can take it, it queues; maria accepts
        # it at 11:00, before the operator ever ran: the queue lets it go, whenever that is learned
        tuesday = MONDAY + timedelta(days=1, hours=1)
        kept = _qualified(app, "k@firm.example", tuesday, tuesday + timedelta(minutes=1))
        OperatorRunner(app.store).run_once(tuesday + timedelta(minutes=2))  # assigned to maria
        app.execute(cmd.Transition(occurred_at=tuesday + timedelta(hours=2), actor="test", message_key=None,
                                   lead=_ref(kept), trigger="accept"))
        _history(app)
        live = OperatorRunner(app.store, batch=100_000)
        first = live.run_once(NOW)
        assert first.decisions["queue"] >= 2
        restarted = OperatorRunner(app.store)
        again = restarted.run_once(NOW)
        assert again.decisions == {}
        assert live.operator is not None and restarted.operator is not None
        assert set(restarted.operator.queue) == set(live.operator.queue)  # the same derived state
        assert {k: (v.owner, v.stage) for k, v in restarted.operator.leads.items()} == {
            k: (v.owner, v.stage) for k, v in live.operator.leads.items()}
        assert app.load(out).owner is None  # type: ignore[union-attr]
        assert app.load(kept).owner == "maria"  # type: ignore[union-attr]

    def test_a_contact_exactly_at_the_deadline_is_met(self, app: LeadLedger) -> None:
        _published(app)
        out = _qualified(app, "x@firm.example", MONDAY, MONDAY + timedelta(minutes=10))
        OperatorRunner(app.store).run_once(MONDAY + timedelta(minutes=11))
        app.execute(cmd.Contact(occurred_at=MONDAY + timedelta(minutes=40), actor="test", message_key=None,
                                lead=_ref(out)))
        OperatorRunner(app.store).run_once(MONDAY + timedelta(days=1))
        names = [d[2].split(".")[2] for d in _decisions(app)]
        assert names == ["LeadAssigned", "LeadSLAWarned"]

    def test_routing_is_a_function_of_the_stored_history(self, app: LeadLedger, tmp_path: Path) -> None:
        """The same inputs in a fresh store, operated in two steps instead of one: the same decisions."""
        _published(app)
        _history(app)
        OperatorRunner(app.store).run_once(NOW)
        other = bootstrap(sqlite_settings(tmp_path / "fresh"))
        try:
            _published(other)
            _history(other)
            runner = OperatorRunner(other.store, batch=3)
            runner.run_once(MONDAY + timedelta(days=1, hours=3))
            OperatorRunner(other.store, batch=7).run_once(NOW)
            assert _owners(other) == _owners(app)
            assert [d[1:] for d in _decisions_in_lead_order(other)] == [d[1:] for d in _decisions_in_lead_order(app)]
        finally:
            other.store.close()

    def test_a_second_operator_at_the_same_position_loses_and_rebuilds(self, app: LeadLedger) -> None:
        _published(app)
        _history(app)
        one, two = OperatorRunner(app.store, batch=4), OperatorRunner(app.store, batch=4)
        one.rebuild(OperateReport())  # both read the same position before either stores decisions
        two.rebuild(OperateReport())
        assert sum(one.run_once(NOW).decisions.values()) > 0
        late = two.run_once(NOW)  # its first transaction conflicts: nothing of it is stored
        assert late.rebuilds == 1 and sum(late.decisions.values()) == 0
        counts: dict[tuple[str, int], int] = {}
        for lead, version, *_ in _decisions(app):
            counts[(lead, version)] = counts.get((lead, version), 0) + 1
        assert set(counts.values()) == {1}
        fresh = _decisions(app)
        assert OperatorRunner(app.store).run_once(NOW).decisions == {}
        assert _decisions(app) == fresh

    def test_a_manual_owner_is_never_overridden(self, app: LeadLedger) -> None:
        _published(app)
        out = app.execute(cmd.Capture(occurred_at=MONDAY, actor="test", message_key=None, email="m@firm.example",
                                      channel="web"))
        assert out.lead_id is not None
        app.execute(cmd.Assign(occurred_at=MONDAY + timedelta(minutes=1), actor="test", message_key=None,
                               lead=_ref(out.lead_id), owner="kim"))
        app.execute(cmd.Transition(occurred_at=MONDAY + timedelta(minutes=2), actor="test", message_key=None,
                                   lead=_ref(out.lead_id), trigger="qualify_mql", override=True, reason="x"))
        OperatorRunner(app.store).run_once(MONDAY + timedelta(minutes=3))
        assert _decisions(app) == []


def _owners(app: LeadLedger) -> dict[int, str | None]:
    """Each lead's final owner, by the lead's capture order (ids are random per store)."""
    order = []
    for _, lead, version, _ in app.store.iter_raw():
        if version == 1:
            order.append(lead)
    return {i: app.load(lead).owner for i, lead in enumerate(order)}  # type: ignore[union-attr]


def _decisions_in_lead_order(app: LeadLedger) -> list[tuple[Any, ...]]:
    index: dict[str, int] = {}
    for _, lead, version, _ in app.store.iter_raw():
        if version == 1:
            index[str(lead)] = len(index)
    return sorted((index[d[0]], *d[1:]) for d in _decisions(app))


# ---------------------------------------------------------------------------- crashes (real processes)


def _operate(home: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "leadledger", "operate", "--once", "--batch", "1",
                             "--now", NOW.isoformat(), *extra], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("scored", [False, True], ids=["routing-and-sla", "with-the-scorer"])
def test_sigkill_anywhere_gives_the_decisions_of_an_uninterrupted_run(tmp_path: Path, scored: bool) -> None:
    inputs = tmp_path / "inputs"
    app = bootstrap(sqlite_settings(inputs))
    _published(app, POLICY + SCORING if scored else POLICY)
    _history(app, leads=16)
    if scored:
        _scored_history(app, leads=16)
    app.store.close()
    calm, crashed = tmp_path / "calm", tmp_path / "crashed"
    shutil.copytree(inputs, calm)
    shutil.copytree(inputs, crashed)
    started = time.monotonic()
    assert _operate(calm).wait(120) == 0
    whole = time.monotonic() - started  # how long an uninterrupted run takes on this machine
    rng = random.Random(11)
    kills = 0
    for _ in range(10):  # killed at random instants (startup, rebuild, between and inside transactions)
        proc = _operate(crashed)
        time.sleep(rng.uniform(0.05, 0.95) * whole)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
    assert _operate(crashed).wait(300) == 0  # then left to finish
    assert kills >= 1, "no run was killed: the test proved nothing (make the delays shorter)"
    one, two = bootstrap(sqlite_settings(calm)), bootstrap(sqlite_settings(crashed))
    try:
        assert _decisions(two) == _decisions(one)  # the same lead ids: the stores are copies of one
        assert _decisions(one)
        if scored:
            kinds = {d[2].split(".")[2] for d in _decisions(one)}
            assert {"LeadScored", "LeadQualifiedAsMQL", "LeadAssigned"} <= kinds
    finally:
        one.store.close()
        two.store.close()


def test_a_following_operator_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """`operate` (no --once) follows the log; SIGTERM ends it after the transaction in flight, exit 0,
    with its summary line, and what it stored is exactly what an uninterrupted catch-up decides."""
    home, twin = tmp_path / "home", tmp_path / "twin"
    app = bootstrap(sqlite_settings(home))
    _published(app)
    _history(app, leads=8)
    app.store.close()
    shutil.copytree(home, twin)
    proc = subprocess.Popen([sys.executable, "-m", "leadledger", "operate", "--poll-interval", "0.1",
                             "--now", NOW.isoformat()], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:  # until it has caught up with the log (its position at the head)
            watch = bootstrap(sqlite_settings(home))
            try:
                state = watch.store.operator_state("operator")
                caught_up = state is not None and orjson.loads(state[1])["position"] == watch.store.head_position()
            finally:
                watch.store.close()
            if caught_up or time.monotonic() > deadline or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert caught_up, "the operator never caught up"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert "operated up to event" in err, err
    assert _operate(twin).wait(120) == 0
    one, two = bootstrap(sqlite_settings(home)), bootstrap(sqlite_settings(twin))
    try:
        assert _decisions(one) == _decisions(two) and _decisions(one)
    finally:
        one.store.close()
        two.store.close()
