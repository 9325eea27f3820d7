"""Reducer tests for the read-model folds: given a lead's facts, the rows each projection owes."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.attribution import CREDITS, Attribution, model_weights
from projections.base import Changes, Lead, Projection, summed
from projections.engine.registry import PROJECTIONS
from projections.funnel import ENTRIES, Funnel
from projections.leads import LEADS, Leads
from projections.reasons import EVENTS as REASON_EVENTS
from projections.reasons import Reasons
from projections.speed import ASSIGNMENTS, RESPONSES, Speed
from projections.velocity import FIRSTS, STAYS, Velocity
from schemas.facts import SECOND, Fact, decode_state, from_record

LEAD = Lead(7, "0" * 32)
H = 3600 * SECOND
DAY = 24 * H


def cap(t: int, channel: str = "webinar", campaign: str | None = "q1") -> Fact:
    return Fact(t, 0, "LeadCaptured", t, "captured", channel, campaign)


def touch(t: int, channel: str, campaign: str | None = None) -> Fact:
    return Fact(t, 0, "LeadTouched", t, None, channel, campaign)


def stage(t: int, name: str, to: str, value: float | None = None, owner: str | None = None,
          reason: str | None = None) -> Fact:
    return Fact(t, 0, name, t, to, owner=owner, value=value, reason=reason)


def numbered(*facts: Fact) -> list[Fact]:
    """Versions 1..n in the given (arrival) order."""
    return [f._replace(version=i) for i, f in enumerate(facts, start=1)]


def rows(p: Projection, facts: list[Fact]) -> dict[str, list[tuple[Any, ...]]]:
    handled = [f for f in facts if f.name in p.handles]
    return p.derive(LEAD, handled).rows


# ---------------------------------------------------------------- attribution models


def test_u_shaped_weights() -> None:
    assert model_weights([0], 1)["u_shaped"] == [1.0]
    assert model_weights([0, 1], 2)["u_shaped"] == [0.5, 0.5]
    assert model_weights([0, 1, 2], 3)["u_shaped"] == pytest.approx([0.4, 0.2, 0.4])
    assert model_weights([0, 1, 2, 3, 4], 5)["u_shaped"] == pytest.approx([0.4, 0.2 / 3, 0.2 / 3, 0.2 / 3, 0.4])


def test_time_decay_halves_weight_every_seven_days() -> None:
    c = 100 * DAY
    w = model_weights([c - 14 * DAY, c - 7 * DAY, c], c)["time_decay"]
    # raw 1/4, 1/2, 1 -> normalized by 7/4
    assert w == pytest.approx([1 / 7, 2 / 7, 4 / 7])


@given(st.lists(st.integers(0, 400 * DAY), min_size=1, max_size=12), st.integers(0, 10 * DAY))
def test_every_model_sums_to_one(times: list[int], after: int) -> None:
    times.sort()
    for model, weights in model_weights(times, times[-1] + after).items():
        assert math.isclose(sum(weights), 1.0, rel_tol=1e-9), model
        assert all(w >= 0 for w in weights)


def test_recycled_lead_converting_twice_splits_touch_windows() -> None:
    facts = numbered(
        cap(0, "webinar", "q1"),
        touch(1 * DAY, "email", "nurture"),
        stage(2 * DAY, "LeadQualifiedAsMQL", "mql"),
        touch(3 * DAY, "social", None),
        stage(4 * DAY, "LeadRejectedBySales", "recycled"),
        touch(5 * DAY, "paid_search", "brand"),
        stage(6 * DAY, "LeadQualifiedAsMQL", "mql"),
    )
    credits = rows(Attribution(), facts)[CREDITS.name]
    by_conversion: dict[int, dict[tuple[str, str], float]] = {}
    for r in credits:
        by_conversion.setdefault(r[1], {})[(r[5], r[6])] = r[9]  # linear
    assert by_conversion[3] == {("webinar", "q1"): 0.5, ("email", "nurture"): 0.5}
    assert by_conversion[7] == {("social", "(none)"): 0.5, ("paid_search", "brand"): 0.5}


def test_conversion_without_touch_in_window_goes_to_latest_earlier_touch() -> None:
    facts = numbered(
        cap(0, "event", None),
        touch(1 * DAY, "email", "tour"),
        stage(2 * DAY, "LeadQualifiedAsMQL", "mql"),
        stage(3 * DAY, "LeadRejectedBySales", "recycled"),
        stage(4 * DAY, "LeadQualifiedAsMQL", "mql"),
    )
    credits = [r for r in rows(Attribution(), facts)[CREDITS.name] if r[1] == 5]
    assert [(r[5], r[6], r[7], r[8], r[9], r[10], r[11]) for r in credits] == [
        ("email", "tour", 1.0, 1.0, 1.0, 1.0, 1.0)
    ]


def test_won_credit_carries_the_amount() -> None:
    facts = numbered(cap(0), stage(DAY, "LeadQualifiedAsMQL", "mql"),
                     stage(2 * DAY, "LeadAcceptedBySales", "sal", owner="ana"),
                     stage(3 * DAY, "LeadQualifiedAsSQL", "sql"), stage(4 * DAY, "LeadWon", "won", value=1200.0))
    won = [r for r in rows(Attribution(), facts)[CREDITS.name] if r[3] == "won"]
    assert [(r[12], r[9]) for r in won] == [(1200.0, 1.0)]


# ---------------------------------------------------------------- speed


def test_reassignment_before_contact_leaves_first_uncontacted() -> None:
    facts = numbered(
        cap(0),
        Fact(100 * SECOND, 0, "LeadAssigned", 0, owner="ana"),
        Fact(200 * SECOND, 0, "LeadAssigned", 0, owner="ben"),
        Fact(500 * SECOND, 0, "LeadContacted", 0, owner="ben"),
        Fact(900 * SECOND, 0, "LeadContacted", 0, owner="ben"),
    )
    out = rows(Speed(), facts)
    assert [(r[2], r[3]) for r in out[ASSIGNMENTS.name]] == [("ana", 100 * SECOND), ("ben", 200 * SECOND)]
    assert [(r[1], r[2], r[5]) for r in out[RESPONSES.name]] == [(3, "ben", 300 * SECOND)]


# ---------------------------------------------------------------- funnel and velocity


def test_funnel_marks_first_entries_and_previous_entry_times() -> None:
    facts = numbered(cap(0), stage(DAY, "LeadQualifiedAsMQL", "mql"), stage(2 * DAY, "LeadRejectedBySales", "recycled"),
                     stage(3 * DAY, "LeadQualifiedAsMQL", "mql"))
    entries = rows(Funnel(), facts)[ENTRIES.name]
    assert [(r[2], r[3], r[4]) for r in entries] == [
        ("captured", 0, None), ("mql", DAY, None), ("recycled", 2 * DAY, None), ("mql", 3 * DAY, DAY)]


def test_velocity_stays_end_at_the_next_stage_change_and_firsts_measure_from_capture() -> None:
    facts = numbered(cap(0), touch(DAY // 2, "email"), stage(DAY, "LeadQualifiedAsMQL", "mql"),
                     stage(3 * DAY, "LeadRejectedBySales", "recycled"), stage(4 * DAY, "LeadQualifiedAsMQL", "mql"))
    out = rows(Velocity(), facts)
    assert [(r[2], r[5]) for r in out[STAYS.name]] == [("captured", DAY), ("mql", 2 * DAY), ("recycled", DAY)]
    assert [(r[2], r[4]) for r in out[FIRSTS.name]] == [("mql", DAY)]


def test_lead_row_follows_metric_order() -> None:
    facts = numbered(cap(10), Fact(20, 0, "LeadScored", 0, value=80.0), Fact(30, 0, "LeadAssigned", 0, owner="ana"),
                     Fact(15, 0, "LeadScored", 0, value=40.0))  # late, but occurred before the 80
    (row,) = rows(Leads(), facts)[LEADS.name]
    assert row[2:] == ("captured", "ana", 80, "webinar", "q1", 10, 10)


def test_a_reason_row_has_the_owner_just_before_its_event() -> None:
    facts = numbered(cap(10), Fact(20, 0, "LeadAssigned", 0, owner="ana"), stage(30, "LeadAcceptedBySales", "sal",
                     owner="ana"), stage(40, "LeadRejectedBySales", "recycled", reason="not yet"),
                     stage(50, "LeadDisqualified", "disqualified", reason="spam"),
                     Fact(25, 0, "LeadAssigned", 0, owner="ben"))  # late: ben owned it before the acceptance
    got = sorted(rows(Reasons(), facts)[REASON_EVENTS.name])
    # lead_no, version, stage, rejected, reason, occurred_at, captured_at, channel, campaign, owner, recorded_at
    assert got == [(7, 4, "recycled", 1, "not yet", 40, 10, "webinar", "q1", "ana", 40),
                   (7, 5, "disqualified", 0, "spam", 50, 10, "webinar", "q1", None, 50)]
    before_acceptance = numbered(cap(10), Fact(20, 0, "LeadAssigned", 0, owner="ana"),
                                 Fact(25, 0, "LeadAssigned", 0, owner="ben"),
                                 stage(40, "LeadLost", "lost", reason="price"))
    assert [r[-2] for r in rows(Reasons(), before_acceptance)[REASON_EVENTS.name]] == ["ben"]


# ---------------------------------------------------------------- incremental == rebuild


STAGES = [("LeadNurtured", "nurtured"), ("LeadQualifiedAsMQL", "mql"), ("LeadAcceptedBySales", "sal"),
          ("LeadQualifiedAsSQL", "sql"), ("LeadWon", "won"), ("LeadRecycled", "recycled"),
          ("LeadRejectedBySales", "recycled"), ("LeadLost", "lost"), ("LeadDisqualified", "disqualified")]
GIVES_REASON = ("LeadRecycled", "LeadRejectedBySales", "LeadLost", "LeadDisqualified")


@st.composite
def lead_histories(draw: st.DrawFn) -> list[Fact]:
    n = draw(st.integers(1, 14))
    facts = [cap(draw(st.integers(0, 5 * DAY)), draw(st.sampled_from(["webinar", "social"])),
                 draw(st.sampled_from([None, "a", "b"])))]
    for _ in range(n):
        t = draw(st.integers(0, 40 * DAY))
        kind = draw(st.sampled_from(["touch", "stage", "assign", "contact", "score"]))
        if kind == "touch":
            facts.append(touch(t, draw(st.sampled_from(["email", "event", "social"])), draw(st.sampled_from([None, "x"]))))
        elif kind == "stage":
            name, to = draw(st.sampled_from(STAGES))
            facts.append(stage(t, name, to, value=1000.0 if to == "won" else None,
                               owner="ana" if to == "sal" else None,
                               reason=draw(st.sampled_from(["price", "not now"])) if name in GIVES_REASON else None))
        elif kind == "assign":
            facts.append(Fact(t, 0, "LeadAssigned", t, owner=draw(st.sampled_from(["ana", "ben"]))))
        elif kind == "contact":
            facts.append(Fact(t, 0, "LeadContacted", t, owner="ana"))
        else:
            facts.append(Fact(t, 0, "LeadScored", t, value=float(draw(st.integers(0, 100)))))
    return numbered(*facts)


def apply_incrementally(p: Projection, arrivals: list[list[Fact]]) -> dict[str, set[tuple[Any, ...]]]:
    """What the runner does: fold batch after batch, deleting the lead's rows on a re-derivation (but
    a summed table's, to which the fold writes differences: a row adds its number to its key's)."""
    tables: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {t.name: {} for t in p.tables}
    #: a refreshed table (derived in the database from the rows): per key, the recording times its
    #: rows were written with (the fold's (key, +1 or -1, time) records)
    times: dict[str, dict[tuple[Any, ...], dict[int, int]]] = {t.name: {} for t in p.tables if t.refreshed}
    history: list[Fact] = []
    for batch in arrivals:
        new = [f for f in batch if f.name in p.handles]
        if not new:
            continue
        changes: Changes = p.fold(LEAD, [f for f in history if f.name in p.handles], new)
        if changes.replace_lead:
            for t in p.tables:
                if t.per_lead:
                    tables[t.name].clear()
        for name, table_rows in changes.rows.items():
            table = next(t for t in p.tables if t.name == name)
            if table.summed:  # added up per key first, as the runner does a batch's
                table_rows = summed(table_rows)
            key_idx = [table.column_names.index(k) for k in table.key]
            for r in table_rows:
                key = tuple(r[i] for i in key_idx)
                if table.refreshed:
                    per = times[name].setdefault(key, {})
                    per[r[-1]] = per.get(r[-1], 0) + r[-2]
                    continue
                if table.summed:
                    n = (tables[name][key][-1] if key in tables[name] else 0) + r[-1]
                    if n:
                        tables[name][key] = (*key, n)
                    else:
                        del tables[name][key]
                    continue
                assert table.upsert or key not in tables[name], f"{name}: row {key} written twice"
                tables[name][key] = r
        history = sorted(history + batch)
    for name, cells in times.items():
        for key, per in cells.items():
            assert all(n >= 0 for n in per.values()), f"{name}: {key} took back a row it never had"
            at = [t for t, n in per.items() if n]
            if at:
                tables[name][key] = (*key, sum(per.values()), min(at), max(at))
    return {name: set(t.values()) for name, t in tables.items()}


def as_stored(p: Projection, found: dict[str, list[tuple[Any, ...]]]) -> dict[str, set[tuple[Any, ...]]]:
    """A rebuild's rows as the runner stores them: a summed table's added up per key, a refreshed
    table's from its records as the database derives them."""
    out = {name: set(r) for name, r in found.items()}
    for t in p.tables:
        if t.summed and t.name in found:
            out[t.name] = set(summed(found[t.name]))
        if t.refreshed and t.name in found:
            cells: dict[tuple[Any, ...], list[int]] = {}
            for r in found[t.name]:
                assert r[-2] == 1, r  # a rebuild only adds
                cells.setdefault(r[:-2], []).append(r[-1])
            out[t.name] = {(*key, len(at), min(at), max(at)) for key, at in cells.items()}
    return out


@settings(max_examples=150, deadline=None)
@given(lead_histories(), st.data())
def test_incremental_fold_in_any_batches_and_arrival_order_equals_rebuild(facts: list[Fact], data: st.DataObject) -> None:
    arrival = data.draw(st.permutations(facts[1:]))  # the capture (version 1) always comes first
    order = [facts[0], *arrival]
    cuts = sorted(data.draw(st.sets(st.integers(1, len(order)), max_size=4)))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True) if order[a:b]]
    for p in PROJECTIONS:
        expected = {name: r for name, r in as_stored(p, rows(p, facts)).items() if r}
        got = {name: r for name, r in apply_incrementally(p, batches).items() if r}
        assert got == expected, p.name


def test_lean_decode_equals_record_decode() -> None:
    import orjson

    from schemas.codec import to_record

    envelope = {
        "type": "leadledger.lead.LeadWon.v1", "time": "2026-03-02T09:15:00.000001Z",
        "recordedat": "2026-03-02T09:15:01.500000Z", "id": "e", "actor": "a", "subject": "s",
        "data": {"from_stage": "sql", "to_stage": "won", "amount": 1200.5, "currency": "EUR"},
    }
    state = orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS)
    from uuid import uuid4

    lean = decode_state(4, state)
    assert lean == from_record(to_record(uuid4(), 4, state))
    assert lean.stage == "won" and lean.value == 1200.5 and lean.recorded - lean.occurred == 1_499_999
