"""What the --known-at property tests share: folding generated leads batch by batch and checking each
projection's late-leads list, the generated leads as reference events, and known-at instants to ask."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import strategies as st

from lifecycle.settings import Settings
from projections.base import known_in_order
from projections.engine.registry import BY_NAME
from projections.engine.sources import ListSource
from schemas.facts import Fact
from tests.integration.projections.test_funnel_counts import EPOCH, fresh_runner, instants, source_events
from tests.support.reference import Ev


def fold_and_check_late(s: Settings, leads: list[list[Fact]], interleave: list[int], batch: int,
                        names: tuple[str, ...]) -> None:
    """Fold the leads (interleaved as drawn) `batch` events at a time into fresh read models; then each
    named projection's late-leads table lists exactly the leads whose facts (those it handles) are not
    known in order, and a rebuild lists the same."""
    runner = fresh_runner(s)
    try:
        runner.catch_up(ListSource(source_events(leads, interleave)), batch)
        tables = {name: BY_NAME[name].late for name in names}
        late = {name: {row[0] for row in runner.db.dump([t])[t.name]} for name, t in tables.items() if t}
        runner.reset(list(names))  # a rebuild: each lead folded once from its timeline
        for name, t in tables.items():
            assert t is not None, f"{name} lists no late leads"
            assert {row[0] for row in runner.db.dump([t])[t.name]} == late[name], name
    finally:
        runner.db.close()
    numbers: dict[str, int] = {}  # lead_no: the order of first arrival
    for e in source_events(leads, interleave):
        numbers.setdefault(e.lead_id, len(numbers) + 1)
    for name in names:
        handles = BY_NAME[name].handles
        assert late[name] == {numbers[f"{i + 1:032x}"] for i, facts in enumerate(leads)
                              if not known_in_order(sorted(f for f in facts if f.name in handles))}, name


def reference_events(leads: list[list[Fact]]) -> list[Ev]:
    """The generated leads as the plain-Python reference reads events (lead i's id: i + 1 in hex)."""
    def dt(us: int) -> datetime:
        return EPOCH + timedelta(microseconds=us)

    return [Ev(f"{i + 1:032x}", f.name, f.version, dt(f.occurred), dt(f.recorded),
               {"to_stage": f.stage, "channel": f.channel, "campaign": f.campaign, "owner": f.owner,
                "amount": f.value, "currency": f.currency, "reason": f.reason})
            for i, facts in enumerate(leads) for f in facts]


def known_instants(origin: int, recorded: list[int]) -> st.SearchStrategy[int]:
    """µs to ask --known-at with: a recording time of the history, a µs either side, or anywhere."""
    return st.one_of(st.sampled_from(recorded), st.tuples(st.sampled_from(recorded), st.sampled_from([-1, 1])).map(sum),
                     instants(origin))
