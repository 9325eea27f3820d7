"""Where each read-model source has got to: `rm_checkpoints` (source, partition, position).

One row per Kafka partition of lead-events (`kafka:<topic>`), one row (partition 0) for the
embedded notification log (`store`). Rows are written in the same transaction as the read-model
rows they vouch for; this module only names the table and reads and writes its rows inside
the caller's transaction.

Beside each checkpoint, `rm_checkpoint_marks` keeps the hash of the event AT that position: a
fingerprint of the source as it was when the rows were built. A catch-up compares it with the
source (`Source.check_mark`), so read models whose store went backwards (an older backup
restored) or was replaced (a new file) refuse to carry on instead of silently skipping every
event numbered below their checkpoint.
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
MARKS = Table(
    "rm_checkpoint_marks",
    (("source_name", "text"), ("partition_no", "int"), ("position_no", "int"), ("event_hash", "text")),
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
        self._marks = db.name(MARKS.name)
        self._upsert_mark = db.insert_sql(MARKS)

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

    def marked(self, source_name: str) -> dict[int, tuple[int, str | None]]:
        """partition -> (checkpoint, the hash of the event there, if recorded) of one source."""
        rows = self.db.query(
            f"SELECT c.partition_no, c.position_no, m.position_no, m.event_hash FROM {self._table} c "
            f"LEFT JOIN {self._marks} m ON m.source_name = c.source_name AND m.partition_no = c.partition_no "
            "WHERE c.source_name = ?", (source_name,))
        return {int(p): (int(pos), str(digest) if digest is not None and mark == pos else None)
                for p, pos, mark, digest in rows}

    def mark_many(self, rows: list[tuple[str, int, int, str]]) -> None:
        """(source, partition, position, hash of the event at that position): with `set_many`."""
        self.db.executemany(self._upsert_mark, rows)

    def delete(self, source_name: str, partition: int) -> None:
        for table in (self._table, self._marks):
            self.db.execute(f"DELETE FROM {table} WHERE source_name = ? AND partition_no = ?",
                            (source_name, partition))

    def delete_source(self, source_name: str) -> None:
        for table in (self._table, self._marks):
            self.db.execute(f"DELETE FROM {table} WHERE source_name = ?", (source_name,))
