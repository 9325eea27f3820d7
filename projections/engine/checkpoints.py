"""Where each read-model source has got to: `rm_checkpoints` (source, partition, position).

One row per Kafka partition of lead-events (`kafka:<topic>`), one row (partition 0) for the
embedded notification log (`store`). Rows are written in the same transaction as the read-model
rows they vouch for; this module only names the table and reads and writes its rows inside
the caller's transaction.
"""

from __future__ import annotations

from projections.base import Table
from projections.engine.db import ReadModelDB

CHECKPOINTS = Table(
    "rm_checkpoints",
    (("source_name", "text"), ("partition_no", "int"), ("position_no", "int")),
    key=("source_name", "partition_no"),
    per_lead=False,
    upsert=True,
)


class Checkpoints:
    """The checkpoint rows of one read-model database (reads and writes join the caller's transaction)."""

    def __init__(self, db: ReadModelDB) -> None:
        self.db = db
        self._table = db.name(CHECKPOINTS.name)
        self._upsert = db.insert_sql(CHECKPOINTS)

    def read(self, source_name: str) -> dict[int, int]:
        """partition -> position of the last event folded from that source."""
        rows = self.db.query(f"SELECT partition_no, position_no FROM {self._table} WHERE source_name = ?",
                             (source_name,))
        return {int(p): int(pos) for p, pos in rows}

    def all(self) -> list[tuple[str, int, int]]:
        """Every row, sorted: (source, partition, position)."""
        return sorted((str(s), int(p), int(pos)) for s, p, pos in self.db.query(
            f"SELECT source_name, partition_no, position_no FROM {self._table}"))

    def set(self, source_name: str, partition: int, position: int) -> None:
        self.db.execute(self._upsert, (source_name, partition, position))

    def set_many(self, rows: list[tuple[str, int, int]]) -> None:
        self.db.executemany(self._upsert, rows)

    def delete(self, source_name: str, partition: int) -> None:
        self.db.execute(f"DELETE FROM {self._table} WHERE source_name = ? AND partition_no = ?",
                        (source_name, partition))

    def delete_source(self, source_name: str) -> None:
        self.db.execute(f"DELETE FROM {self._table} WHERE source_name = ?", (source_name,))
