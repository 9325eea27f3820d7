"""Times a person types (`--as-of 2026-02-01`, `as_of=...`): RFC 3339 with a zone, or a bare date."""

from __future__ import annotations

from datetime import UTC, date, datetime, time


class TimeFormatError(ValueError):
    """The text is not a date or an RFC 3339 time with a zone; the message says what to write."""


def parse_user_time(value: str) -> datetime:
    """RFC 3339 with a zone, or a bare date meaning 00:00 UTC that day; always returned in UTC."""
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise TimeFormatError(
            f"{value!r} is not a date (2026-02-01) or an RFC 3339 time (2026-02-01T09:30:00Z)"
        ) from None
    if parsed.tzinfo is None:
        raise TimeFormatError(f"{value!r} has no time zone; add Z or +01:00")
    return parsed.astimezone(UTC)
