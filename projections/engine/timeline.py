"""The timeline table `rm_timeline`: every lead's facts folded so far (metric order), under the
dense number the runner gave the lead at its first event, and its hash chain so far
(`projections.engine.chains`: what the next event's link is checked against)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from projections.base import Lead, Table
from projections.engine import chains
from projections.engine.chains import Chain
from projections.engine.db import ReadModelDB
from schemas.facts import Fact, unpack

TIMELINE = Table(
    "rm_timeline",
    (("lead_no", "int"), ("lead_id", "text"), ("facts", "blob"), ("chain", "text")),
    key=("lead_no",),
    indexes=(("lead_id",),),
    upsert=True,
)

#: Leads read per query while walking every timeline.
PAGE = 2000


class Timelines:
    """Reads of the timeline table (inside the caller's transaction, if any).

    The timelines are what de-duplicates (a lead's version seen before is skipped), what a
    projection's fold gets as history, what a single projection is rebuilt from, and what the
    exact known-at path reads."""

    def __init__(self, db: ReadModelDB) -> None:
        self.db = db
        self._table = db.name(TIMELINE.name)
        #: writes one (lead_no, lead_id, packed facts, chain) row, replacing the lead's previous one
        self.upsert_sql = db.insert_sql(TIMELINE)

    def find(self, lead_ids: Sequence[str]) -> dict[str, tuple[int, list[Fact], Chain]]:
        """lead id -> (lead number, facts, hash chain) of the leads stored; unknown ids are left out."""
        return {lead_id: (int(no), unpack(facts), chains.decode(chain)) for no, lead_id, facts, chain in
                self.db.query_in(f"SELECT lead_no, lead_id, facts, chain FROM {self._table}", "lead_id", lead_ids)}

    def last_lead_no(self) -> int:
        """The highest lead number given so far (0: none)."""
        row = self.db.query(f"SELECT MAX(lead_no) FROM {self._table}")
        return int(row[0][0] or 0)

    def empty(self) -> bool:
        return not self.db.query(f"SELECT 1 FROM {self._table} LIMIT 1")

    def each(self) -> Iterator[tuple[Lead, list[Fact]]]:
        """Every lead's facts (metric order), in lead-number order."""
        last = 0
        while True:
            rows = self.db.query(
                f"SELECT lead_no, lead_id, facts FROM {self._table} WHERE lead_no > ? ORDER BY lead_no LIMIT {PAGE}",
                (last,))
            if not rows:
                return
            for no, lead_id, blob in rows:
                yield Lead(int(no), lead_id), unpack(blob)
            last = int(rows[-1][0])
