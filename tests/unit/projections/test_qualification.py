"""The qualification read model: each MQL's source from its event, the rows each lead owes, and the
figures per source (entries, distinct leads, won after an entry, rate) over hand-made histories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from projections.base import Lead
from projections.engine.sqlite import SQLiteReadModelDB
from projections.qualification import ENTRIES, WINS, Qualification, check_qualification, compute
from projections.query import Query, QueryError
from schemas.facts import SECOND, Fact, decode_state, us_to_dt

H = 3600 * SECOND
DAY = 24 * H


def mql(t: int, source: str) -> Fact:
    return Fact(t, 0, "LeadQualifiedAsMQL", t, "mql", source=source)


def cap(t: int) -> Fact:
    return Fact(t, 0, "LeadCaptured", t, "captured", "web")


def stage(t: int, name: str, to: str) -> Fact:
    return Fact(t, 0, name, t, to)


def won(t: int) -> Fact:
    return Fact(t, 0, "LeadWon", t, "won", value=1000.0, currency="EUR")


def numbered(*facts: Fact) -> list[Fact]:
    return [f._replace(version=i) for i, f in enumerate(facts, start=1)]


@pytest.mark.parametrize(("actor", "override", "source"), [
    ("scorer", False, "scorer"), ("ana", True, "override"), ("inbound:crm", False, "external"),
])
def test_an_mqls_source_is_read_from_its_event(actor: str, override: bool, source: str) -> None:
    envelope = {"type": "leadledger.lead.LeadQualifiedAsMQL.v1", "time": "2026-03-02T09:00:00Z",
                "recordedat": "2026-03-02T09:00:01Z", "id": "e", "actor": actor, "subject": "s",
                "data": {"from_stage": "captured", "to_stage": "mql", "score": 80, "override": override,
                         "reason": "fits" if override else None}}
    fact = decode_state(2, orjson.dumps(envelope))
    assert (fact.stage, fact.source) == ("mql", source)


def test_rows_are_one_per_mql_entry_and_one_per_win() -> None:
    facts = numbered(cap(0), mql(H, "override"), stage(2 * H, "LeadRejectedBySales", "recycled"),
                     mql(3 * H, "external"), won(DAY))
    rows = Qualification().derive(Lead(7, "0" * 32), facts).rows
    # ..., the entry's own recording time last (here as it occurred)
    assert rows[ENTRIES.name] == [(7, 2, "override", H, 0, H), (7, 4, "external", 3 * H, 0, 3 * H)]
    assert rows[WINS.name] == [(7, 5, DAY, DAY)]


Histories = dict[int, list[Fact]]

#: ann: override MQL, won. ben: external MQL, never won. cat: scorer MQL on day 1, won on day 3.
#: dan: override MQL day 1, rejected, external MQL day 2, won day 4 (both entries won after).
#: eve: override MQL, won day 1, recycled (upsell), external MQL day 3, not won again.
#: fay: override MQL twice (rejected in between), never won.
HISTORIES: Histories = {
    1: numbered(cap(0), mql(10 * H, "override"), won(2 * DAY)),
    2: numbered(cap(0), mql(10 * H, "external")),
    3: numbered(cap(0), mql(DAY + 9 * H, "scorer"), won(3 * DAY + 10 * H)),
    4: numbered(cap(0), mql(DAY + 10 * H, "override"), stage(DAY + 12 * H, "LeadRejectedBySales", "recycled"),
                mql(2 * DAY + 10 * H, "external"), won(4 * DAY)),
    5: numbered(cap(0), mql(13 * H, "override"), won(DAY), stage(2 * DAY, "LeadRecycled", "recycled"),
                mql(3 * DAY + 9 * H, "external")),
    6: numbered(cap(0), mql(14 * H, "override"), stage(15 * H, "LeadRejectedBySales", "recycled"),
                mql(DAY + 10 * H, "override")),
}


@pytest.fixture
def query(tmp_path: Path) -> Any:
    db = SQLiteReadModelDB(tmp_path / "rm.sqlite")
    db.create([ENTRIES, WINS])
    p = Qualification()
    for no, facts in HISTORIES.items():
        for table, rows in p.derive(Lead(no, f"{no:032x}"), [f for f in facts if f.name in p.handles]).rows.items():
            db.executemany(db.insert_sql(next(t for t in p.tables if t.name == table)), rows)

    def ask(**kw: Any) -> dict[str, tuple[int, int, int, float | None]]:
        out = compute(check_qualification(Query(**kw)), db.name(ENTRIES.name), db.name(WINS.name), db.query)
        return {r["source"]: (r["entries"], r["leads"], r["won"], r["rate"]) for r in [*out["sources"], out["total"]]}

    yield ask
    db.close()


def test_every_entry_by_source_and_the_leads_won_after_it(query: Any) -> None:
    assert query() == {"scorer": (1, 1, 1, 1.0), "external": (3, 3, 1, pytest.approx(1 / 3)),
                       "override": (5, 4, 3, 0.75), "all": (9, 6, 4, pytest.approx(4 / 6))}


def test_the_window_is_on_the_mql_entry_and_a_win_after_it_still_counts(query: Any) -> None:
    # [day 1, day 3): cat's scorer MQL (won day 3), dan's override and external MQLs (won day 4), fay's
    # second override; ann's, ben's and eve's first MQLs are before it, eve's external one at its end
    assert query(from_=us_to_dt(DAY), to=us_to_dt(3 * DAY)) == {
        "scorer": (1, 1, 1, 1.0), "external": (1, 1, 1, 1.0), "override": (2, 2, 1, 0.5), "all": (4, 3, 2, pytest.approx(2 / 3))}


def test_as_of_counts_only_entries_and_wins_that_occurred_by_then(query: Any) -> None:
    # day 3 12:00: cat's win (day 3 10:00) is in, dan's (day 4) not yet; eve's external MQL is in
    assert query(as_of=us_to_dt(3 * DAY + 12 * H)) == {
        "scorer": (1, 1, 1, 1.0), "external": (3, 3, 0, 0.0), "override": (5, 4, 2, 0.5), "all": (9, 6, 3, 0.5)}
    assert query(as_of=us_to_dt(9 * H)) == {
        "scorer": (0, 0, 0, None), "external": (0, 0, 0, None), "override": (0, 0, 0, None), "all": (0, 0, 0, None)}


def test_a_win_before_the_entry_does_not_count_for_it(query: Any) -> None:
    # eve was won on day 1, then recycled and qualified again on day 3 on an upstream score
    assert query(from_=us_to_dt(3 * DAY))["external"] == (1, 1, 0, 0.0)


def test_the_window_takes_no_mode_and_no_grouping() -> None:
    with pytest.raises(QueryError, match="no --mode"):
        check_qualification(Query(mode="period"))
    with pytest.raises(QueryError, match="no --by"):
        check_qualification(Query(by="channel"))
