"""What a projection is: its tables, the events it handles, and a pure per-lead fold.

The runner hands a projection, for each lead of a batch, the lead's events it has
already folded (`history`) and the new ones; the projection answers with row
changes. Append projections own each row by the event that completes it (an
entry, a finished stay, a conversion's credits, a first response), so an event
arriving in metric order only adds rows derived from the lead's earlier events,
and one arriving out of order makes the projection re-derive that lead's rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from schemas.facts import Fact

NONE_KEY = "(none)"  # group key of a lead captured without a campaign (docs/contract.md)


@dataclass(frozen=True)
class Table:
    """A read-model table: columns as (name, type) with type one of int, text, real, blob."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    #: rows are keyed by `lead_no` first and may be deleted per lead
    per_lead: bool = True
    #: written with INSERT .. ON CONFLICT (key) DO UPDATE (one current row per key)
    upsert: bool = False
    #: counts: the last column is a number that rows of one key add up to (a row written adds its
    #: number to the stored row's; a row whose number comes to 0 is deleted). Such a table is not
    #: per lead: a fold that re-derives a lead's rows writes the differences (`summed`).
    summed: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


def summed(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows of a summed table with one row per key: the numbers of each key added up, zeros left out."""
    totals: dict[tuple[Any, ...], int] = {}
    for row in rows:
        key = row[:-1]
        totals[key] = totals.get(key, 0) + row[-1]
    return [(*key, n) for key, n in totals.items() if n]


class Lead(NamedTuple):
    lead_no: int  # dense number given by the runner at the lead's first event
    lead_id: str


@dataclass
class Changes:
    """What one lead's new events do to a projection's tables."""

    replace_lead: bool = False  # delete the lead's rows first (out-of-order re-derivation)
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    def add(self, table: str, row: tuple[Any, ...]) -> None:
        self.rows.setdefault(table, []).append(row)


class Projection(ABC):
    """A read model: a deterministic fold of lead events into tables."""

    name: ClassVar[str]
    #: bump when the definition changes: stored read models of an older version are rebuilt
    version: ClassVar[int] = 1
    handles: ClassVar[frozenset[str]]
    tables: ClassVar[tuple[Table, ...]]

    @abstractmethod
    def fold(self, lead: Lead, history: list[Fact], new: list[Fact]) -> Changes:
        """Row changes for `new` (version order) given `history` (metric order); both filtered
        to `handles`. Pure: the same arguments always give the same changes."""

    def derive(self, lead: Lead, facts: Sequence[Fact]) -> Changes:
        """Every row of one lead from all its (metric-ordered) facts: the rebuild path."""
        return self.fold(lead, [], sorted(facts))

    def derive_rows(self, lead: Lead, facts: Sequence[Fact]) -> Changes:
        """The rows of one lead's per-lead tables (what the exact known-at path reads; no counts)."""
        return self.derive(lead, facts)


def capture_of(facts: Sequence[Fact]) -> Fact | None:
    for f in facts:
        if f.name == "LeadCaptured":
            return f
    return None


def campaign_key(campaign: str | None) -> str:
    return NONE_KEY if campaign is None else campaign


class AppendProjection(Projection):
    """A projection whose rows each belong to one event (keyed lead_no, version, ...)."""

    def fold(self, lead: Lead, history: list[Fact], new: list[Fact]) -> Changes:
        changes = Changes()
        if not new:
            return changes
        # distinct events of one lead never tie on (occurred, version): tuple order is metric order
        last = history[-1] if history else None
        in_order = True
        for f in new:
            if last is not None and f < last:
                in_order = False
                break
            last = f
        if in_order:
            facts = history + new
            start = len(history)
        else:
            facts = sorted(history + new)
            start = 0
            changes.replace_lead = True
        capture = capture_of(facts)
        for i in range(start, len(facts)):
            for table, row in self.rows_for(lead, facts, i, capture):
                changes.add(table, row)
        return changes

    @abstractmethod
    def rows_for(
        self, lead: Lead, facts: Sequence[Fact], i: int, capture: Fact | None
    ) -> Iterable[tuple[str, tuple[Any, ...]]]:
        """The rows owned by `facts[i]`, from `facts[: i + 1]` only (so an as-of cut keeps them)."""
