"""Properties of the scorer over whole histories: every score it recorded live is the score `score explain`
computes for the same instant; generated lives scored and qualified in one run or in many runs, and
after a restart, give the same events; the back-test of the published model finds the live automatic
MQL instants exactly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadledger.bootstrap import bootstrap
from lifecycle.application import LeadLedger
from lifecycle.audit import checked_records
from lifecycle.domain import commands as cmd
from lifecycle.inbound import InboundHandler
from lifecycle.operate import OperatorRunner, decode
from lifecycle.operations import scoring, scoring_backtest
from lifecycle.operations.fairness import Window
from lifecycle.policies import PolicyStream
from lifecycle.simulate import generate
from tests.support.env import sqlite_settings

START = datetime(2026, 1, 5, tzinfo=UTC)
MODEL = """
[scoring]
threshold = 55
auto_mql = true
[[scoring.fit]]
id = "large-company"
when = { employees_gte = 200 }
points = 20
[[scoring.fit]]
id = "executive"
when = { role = ["executive", "manager"] }
points = 10
[[scoring.fit]]
id = "free-mail"
when = { email_domain_kind = "free" }
points = -15
[[scoring.behaviour]]
id = "webinar"
when = { touch_kind = ["webinar_attended", "webinar_registered"] }
points = 15
half_life = "7d"
max_per_day = 20
[[scoring.behaviour]]
id = "any-touch"
points = 4
half_life = "14d"
max_per_day = 8
"""


def _scorer_scores(app: LeadLedger) -> dict[UUID, list[dict[str, Any]]]:
    found: dict[UUID, list[dict[str, Any]]] = {}
    for _, lead, _, state in app.store.iter_raw():
        envelope = orjson.loads(state)
        if envelope["actor"] == "scorer" and envelope["type"].endswith("LeadScored.v2"):
            found.setdefault(lead, []).append({"at": envelope["time"], **envelope["data"]})
    return found


def test_every_live_score_of_a_simulated_history_is_what_explain_computes(tmp_path: Path) -> None:
    app = bootstrap(sqlite_settings(tmp_path))
    try:
        PolicyStream(app.store).publish(MODEL, actor="test", now=START)
        messages = list(generate(leads=250, seed=3, start=START, days=30))
        for _ in InboundHandler(app, batch_size=200).handle_stream(
                (i, orjson.dumps(m)) for i, m in enumerate(messages, start=1)):
            pass
        report = OperatorRunner(app.store).run_once(START + timedelta(days=400))
        assert report.decisions["score"] > 250  # at every capture, and at the touches that changed a total
        model = PolicyStream(app.store).versions()[-1].policy.scoring
        assert model is not None
        checked = 0
        for lead, scores in _scorer_scores(app).items():
            records = checked_records(app.store, lead)
            attributes, touches = scoring.lead_inputs((r.name, r.occurred_at, r.data) for r in records)
            for live in scores:
                at = scoring.us(datetime.fromisoformat(live["at"]))
                explained, _ = scoring.explain(model, attributes, touches, at)
                assert explained.payload() == {k: live[k] for k in ("fit", "behaviour", "total", "contributions")}
                checked += 1
        assert checked == report.decisions["score"]
    finally:
        app.store.close()


# ---------------------------------------------------------------------------------------------- generated lives

_KINDS = ["webinar_attended", "page_view", "newsletter_open", "webinar_registered"]
_life = st.tuples(
    st.sampled_from([None, 10, 250, 5000]),  # employees
    st.sampled_from([None, "executive", "practitioner"]),  # role
    st.booleans(),  # free mail
    st.lists(st.tuples(st.integers(1, 3 * 24 * 60), st.sampled_from(_KINDS)), max_size=8),  # touches
    st.none() | st.integers(0, 8),  # nurtured after this many touches
)


def _live(app: LeadLedger, lives: list[Any], start: int = 0, after: Callable[[], object] = lambda: None,
          ) -> list[UUID]:
    """Store the lives from index `start` on (lead i captured at START + i hours), calling `after` after
    each command: their ids."""
    ids = []
    for i, (employees, role, free, touches, nurture_after) in enumerate(lives[start:], start=start):
        at = START + timedelta(hours=i)
        domain = "gmail.com" if free else f"firm{i}.example"
        out = app.execute(cmd.Capture(occurred_at=at, actor="test", message_key=None, email=f"p{i}@{domain}",
                                      channel="web", employees=employees, role=role))
        assert out.lead_id is not None
        ids.append(out.lead_id)
        after()
        ref = cmd.LeadRef(lead_id=out.lead_id)
        for k, (minutes, kind) in enumerate(touches):
            at += timedelta(minutes=minutes)
            if nurture_after == k:  # refused once the scorer made the lead an MQL (in a live run)
                app.execute(cmd.Transition(occurred_at=at, actor="test", message_key=None, lead=ref,
                                           trigger="nurture"))
                after()
            app.execute(cmd.Touch(occurred_at=at + timedelta(seconds=1), actor="test", message_key=None, lead=ref,
                                  channel="web", kind=kind))
            after()
    return ids


def _decided(app: LeadLedger, ids: list[UUID]) -> list[tuple[int, int, str, str, bytes]]:
    index = {lead: i for i, lead in enumerate(ids)}
    out = []
    for _, lead, version, state in app.store.iter_raw():
        envelope = orjson.loads(state)
        if envelope["actor"] == "scorer":
            out.append((index[lead], version, envelope["type"], envelope["time"],
                        orjson.dumps(envelope["data"], option=orjson.OPT_SORT_KEYS)))
    return sorted(out)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lives=st.lists(_life, min_size=1, max_size=6), batch=st.integers(1, 7), split=st.floats(0, 1))
def test_one_run_many_runs_and_a_restart_decide_the_same(tmp_path_factory: Any, lives: list[Any], batch: int,
                                                         split: float) -> None:
    whole_home, steps_home = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("steps")
    whole, steps = bootstrap(sqlite_settings(whole_home)), bootstrap(sqlite_settings(steps_home))
    try:
        for app in (whole, steps):
            PolicyStream(app.store).publish(MODEL, actor="test", now=START)
        ids = _live(whole, lives)
        OperatorRunner(whole.store, batch=100_000).run_once(START + timedelta(days=30))
        # the same lives stored in two parts, the operator run after the first part and restarted after it
        cut = round(split * len(lives))
        first = _live(steps, lives[:cut])
        OperatorRunner(steps.store, batch=batch).run_once(START + timedelta(days=30))
        later = _live(steps, lives, start=cut)
        OperatorRunner(steps.store, batch=batch).run_once(START + timedelta(days=30))
        assert OperatorRunner(steps.store).run_once(START + timedelta(days=30)).decisions == {}
        assert _decided(steps, first + later) == _decided(whole, ids)
    finally:
        whole.store.close()
        steps.store.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lives=st.lists(_life, min_size=1, max_size=6))
def test_the_backtest_of_the_published_model_reproduces_the_live_mql_instants(tmp_path_factory: Any,
                                                                               lives: list[Any]) -> None:
    """Operated live (after every command), the scorer's automatic MQLs happen exactly where the
    back-test of the same model, over the history they made, says the model would have made them."""
    app = bootstrap(sqlite_settings(tmp_path_factory.mktemp("live")))
    try:
        PolicyStream(app.store).publish(MODEL, actor="test", now=START)
        runner = OperatorRunner(app.store)
        ids = _live(app, lives, after=lambda: runner.run_once(START + timedelta(days=30)))
        live: dict[UUID, int | None] = dict.fromkeys(ids)
        for _, lead, _, state in app.store.iter_raw():
            envelope = orjson.loads(state)
            if envelope["actor"] == "scorer" and "LeadQualifiedAsMQL" in envelope["type"] and live[lead] is None:
                live[lead] = scoring.us(datetime.fromisoformat(envelope["time"]))
        model = PolicyStream(app.store).versions()[-1].policy.scoring
        assert model is not None
        folded = scoring_backtest.fold((decode(row) for row in app.store.iter_raw()), Window())
        backtested = {facts.lead: scoring_backtest.would_be_mql(model, 55, facts) for facts in folded.leads}
        assert backtested == live
    finally:
        app.store.close()
