"""The PostgreSQL read-model class takes the callers' `?` SQL: each `?` outside quotes and
comments becomes `%s`, and every `%` is doubled (psycopg reads literals for placeholders too)."""

from __future__ import annotations

import pytest

from projections.engine.postgres import to_pyformat


@pytest.mark.parametrize(("text", "want"), [
    ("SELECT a FROM t WHERE b = ? AND c IN (?,?)", "SELECT a FROM t WHERE b = %s AND c IN (%s,%s)"),
    ("SELECT '?' , ? FROM t", "SELECT '?' , %s FROM t"),
    ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
    ('SELECT "odd?name" FROM "public".t WHERE x = ?', 'SELECT "odd?name" FROM "public".t WHERE x = %s'),
    ("SELECT a % 2, '5%' FROM t WHERE b LIKE ?", "SELECT a %% 2, '5%%' FROM t WHERE b LIKE %s"),
    ("SELECT ? -- why? 100%\nFROM t", "SELECT %s -- why? 100%%\nFROM t"),
    ("SELECT 1", "SELECT 1"),
])
def test_placeholders_outside_quotes_become_pyformat(text: str, want: str) -> None:
    assert to_pyformat(text) == want
    assert to_pyformat(text) is to_pyformat(text)  # translated once per distinct statement
