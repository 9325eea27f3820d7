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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
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
    #: derived in the database from other tables' rows: what a fold writes for it says which of its keys
    #: its changes touched and how, and the runner hands a batch's to `Projection.refresh` once the batch's
    #: other rows are written; a replay builds it with `bulk_sql`.
    refreshed: bool = False

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


def floor_div(expr: str, d: int) -> str:
    """SQL for Python's `expr // d` (integers, d > 0) in SQLite and PostgreSQL alike: both divide
    integers truncating toward 0, and their % takes the dividend's sign."""
    return f"(({expr}) - ((({expr}) % {d}) + {d}) % {d}) / {d}"


def null_key(column: str) -> str:
    """SQL for a group key column as a counts table keeps it (key columns are never NULL): gnull 1
    and g '' for a NULL, else gnull 0 and g the value."""
    return f"CASE WHEN {column} IS NULL THEN 1 ELSE 0 END AS gnull, COALESCE({column}, '') AS g"


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
    #: With a table (one row per lead): the leads whose rows cut at a recording time K are not their rows
    #: known at K (their facts are not `known_in_order`), written by the fold that makes them so. Then each
    #: row keeps its own event's recording time (`recorded_at`) and --known-at reads the live rows cut at
    #: K for every other lead, re-deriving only the leads listed.
    #: (Append projections write it; see `AppendProjection.fold`.)
    late: ClassVar[Table | None] = None
    #: The tables a replay does not load row by row: it builds them with `bulk_sql` from the other
    #: tables' rows once those are loaded (counts: a GROUP BY in the database, not a sum in Python).
    bulk_built: ClassVar[tuple[Table, ...]] = ()

    @abstractmethod
    def fold(self, lead: Lead, history: list[Fact], new: list[Fact]) -> Changes:
        """Row changes for `new` (version order) given `history` (metric order); both filtered
        to `handles`. Pure: the same arguments always give the same changes."""

    def known_columns(self, table: Table, known_at: int) -> str:
        """The SELECT list of `table`'s live rows as known at `known_at`, for a lead known in order
        (rows whose own event was recorded by then): the rows as they are, unless a projection's row
        changes with a later event."""
        return "*"

    def bulk_fold(self, lead: Lead, facts: list[Fact]) -> Changes:
        """A replay's fold of one lead's whole history (metric order): the rows of every table but
        the `bulk_built` ones."""
        return self.fold(lead, [], facts)

    def bulk_sql(self, name: Callable[[Table], str]) -> list[str]:
        """The statements that fill the (empty) `bulk_built` tables from the other tables' rows,
        every table named `name(table)` in them; each statement's rows come out in key order."""
        return []

    def refresh(self, table: Table, keys: Sequence[tuple[Any, ...]],
                name: Callable[[Table], str]) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """(statement, parameter rows) pairs that bring the `refreshed` table `table` up to date with
        `keys`, the rows a batch's folds wrote for it (in their order), every table named `name(table)`."""
        raise NotImplementedError(f"{self.name} refreshes no table ({table.name})")

    def derive(self, lead: Lead, facts: Sequence[Fact]) -> Changes:
        """Every row of one lead from all its (metric-ordered) facts: the rebuild path."""
        return self.fold(lead, [], sorted(facts))

    def derive_rows(self, lead: Lead, facts: Sequence[Fact]) -> Changes:
        """The rows of one lead's per-lead tables (what the exact known-at path reads; no counts)."""
        return self.derive(lead, facts)


def known_in_order(facts: Sequence[Fact]) -> bool:
    """Whether a lead's facts (metric order), cut at any recording time K, keep a prefix in metric order
    that starts with the capture: then the rows known at K are its rows whose own event was recorded at
    or before K (each row depends only on the events before it, and the capture it carries is known
    with the first of them). True when the recording times never decrease in metric order and the
    capture, if any, is the first fact."""
    for a, b in pairwise(facts):
        if b.recorded < a.recorded:
            return False
    capture = capture_of(facts)
    return capture is None or facts[0] is capture


def turns_late(history: list[Fact], new: list[Fact], replaced: bool) -> bool:
    """Whether folding `new` onto `history` (re-derived from scratch when `replaced`) is when the lead
    stops being `known_in_order`: its row of a late-leads table is written then (again when re-derived)."""
    facts = sorted(history + new) if replaced else history + new
    return bool(new) and not known_in_order(facts) and (replaced or known_in_order(history))


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
        changes = self._rows(lead, history, new)
        if self.late is not None and turns_late(history, new, changes.replace_lead):
            changes.rows[self.late.name] = [(lead.lead_no,)]
        return changes

    def derive_rows(self, lead: Lead, facts: Sequence[Fact]) -> Changes:
        return self._rows(lead, [], sorted(facts))  # the rows alone (no late-leads row)

    def bulk_fold(self, lead: Lead, facts: list[Fact]) -> Changes:
        """The rows and the late-leads row (`AppendProjection.fold`): a subclass whose `fold` adds counts
        of its rows (its `bulk_built` tables) leaves them to `bulk_sql` this way."""
        return AppendProjection.fold(self, lead, [], facts) if self.bulk_built else self.fold(lead, [], facts)

    def _rows(self, lead: Lead, history: list[Fact], new: list[Fact]) -> Changes:
        """The rows `rows_for` gives for `new` (all of the lead's, re-derived, when one is out of order)."""
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
