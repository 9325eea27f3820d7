"""Every read model, in the order they are folded, and `rm_projections`: the version of each
definition the stored tables were built with (a changed one is rebuilt), and of the engine's own
tables (`ENGINE`: read models built by an older engine are dropped and rebuilt from the source)."""

from __future__ import annotations

from collections.abc import Iterable

from projections.attribution import Attribution
from projections.base import Projection, Table
from projections.engine.checkpoints import CHECKPOINTS, MARKS
from projections.engine.db import ReadModelDB
from projections.engine.timeline import TIMELINE
from projections.funnel import Funnel
from projections.leads import Leads
from projections.pipeline import Pipeline
from projections.qualification import Qualification
from projections.reasons import Reasons
from projections.speed import Speed
from projections.velocity import Velocity

REGISTRY = Table(
    "rm_projections",
    (("name", "text"), ("version", "int")),
    key=("name",),
    per_lead=False,
    upsert=True,
)
#: The engine's own tables, next to the projections'.
ENGINE_TABLES = (TIMELINE, CHECKPOINTS, REGISTRY, MARKS)
#: The row of `rm_projections` that holds the version of the engine's tables (2: each lead's hash
#: chain in the timeline, the marks beside the checkpoints; 3: an MQL's fact in the timeline keeps its
#: source, which older timelines lack, so they are read again from the source; 4: the fact of a lost,
#: disqualified, recycled or rejected lead keeps the reason given, which older timelines lack).
ENGINE = "#engine"
ENGINE_VERSION = 4

#: Every read model, in the order they are folded.
PROJECTIONS: tuple[Projection, ...] = (Funnel(), Velocity(), Attribution(), Speed(), Qualification(), Reasons(),
                                       Leads(), Pipeline())
BY_NAME: dict[str, Projection] = {p.name: p for p in PROJECTIONS}


def tables_of(projections: Iterable[Projection]) -> tuple[Table, ...]:
    """The engine's tables, then the projections' (each name once)."""
    tables = {t.name: t for t in ENGINE_TABLES}
    for p in projections:
        for t in p.tables:
            tables[t.name] = t
    return tuple(tables.values())


def registry_rows(projections: Iterable[Projection]) -> list[tuple[str, int]]:
    """The `rm_projections` rows of tables built with the current definitions of `projections`."""
    return [(ENGINE, ENGINE_VERSION), *((p.name, p.version) for p in projections)]


class Registry:
    """The `rm_projections` rows (reads and writes join the caller's transaction)."""

    def __init__(self, db: ReadModelDB) -> None:
        self.db = db
        self._table = db.name(REGISTRY.name)
        self._upsert = db.insert_sql(REGISTRY)

    def versions(self) -> dict[str, int]:
        """name -> version of the definition the stored tables were built with."""
        return {str(name): int(version) for name, version in self.db.query(f"SELECT name, version FROM {self._table}")}

    def record(self, projections: Iterable[Projection]) -> None:
        """The tables of `projections` (and the engine's) are now built with their current definitions."""
        self.db.executemany(self._upsert, registry_rows(projections))

    def engine_current(self) -> bool:
        """The engine's tables were built by this version of the engine."""
        return self.versions().get(ENGINE) == ENGINE_VERSION
