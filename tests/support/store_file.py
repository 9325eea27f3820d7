"""Raw SQL against an embedded store's `events.sqlite`: how the tamper tests edit what leadledger wrote."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def sql(home: Path, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on `home/events.sqlite` (committed) and return its rows."""
    conn = sqlite3.connect(home / "events.sqlite")
    try:
        rows = conn.execute(statement, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()
