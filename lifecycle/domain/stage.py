"""The stages a lead can be in. Events name them, the stage table (stages.py) moves leads between them."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Where a lead is in its life. The value is the wire name; the order is the reported funnel order."""

    CAPTURED = "captured"
    NURTURED = "nurtured"
    MQL = "mql"
    SAL = "sal"
    SQL = "sql"
    WON = "won"
    RECYCLED = "recycled"
    LOST = "lost"
    DISQUALIFIED = "disqualified"
