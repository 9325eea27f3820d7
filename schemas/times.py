"""Times a person types (`--as-of 2026-02-01`, `as_of=...`): RFC 3339 with a zone, or a bare date.

The syntax is one regular expression (`time_pattern`), so the HTTP API's OpenAPI document
publishes exactly what the parser accepts: a calendar date of years 0001-9999 (Feb 29 only in
leap years), or a date, `T` (or `t`, or a space), HH:MM[:SS[.fraction]] and a zone (`Z`, `z` or
±HH:MM). Seconds 00-59 (no leap second); a fraction of any length is cut to microseconds. A time
on 0001-01-01 takes no positive offset and one on 9999-12-31 no negative one: either could fall
outside years 1-9999 once moved to UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

_D = "[0-9]"
_DAYS_31 = "(?:0[1-9]|[12][0-9]|3[01])"
_DAYS_30 = "(?:0[1-9]|[12][0-9]|30)"
_DAYS_28 = "(?:0[1-9]|1[0-9]|2[0-8])"
_MONTH_DAY = f"(?:(?:0[13578]|1[02])-{_DAYS_31}|(?:0[469]|11)-{_DAYS_30}|02-{_DAYS_28})"
_MONTH_DAY_BUT_JAN_1 = (f"(?:01-(?:0[2-9]|[12][0-9]|3[01])|(?:0[3578]|1[02])-{_DAYS_31}"
                        f"|(?:0[469]|11)-{_DAYS_30}|02-{_DAYS_28})")
_MONTH_DAY_BUT_DEC_31 = (f"(?:(?:0[13578]|10)-{_DAYS_31}|12-(?:0[1-9]|[12][0-9]|30)"
                         f"|(?:0[469]|11)-{_DAYS_30}|02-{_DAYS_28})")
_LEAP_DAY = f"(?:{_D}{_D}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)-02-29"
_YEAR = f"(?:000[1-9]|00[1-9]{_D}|0[1-9]{_D}{{2}}|[1-9]{_D}{{3}})"
_YEAR_2_TO_9998 = f"(?:000[2-9]|00[1-9]{_D}|0[1-9]{_D}{{2}}|[1-8]{_D}{{3}}|9[0-8]{_D}{{2}}|99[0-8]{_D}|999[0-8])"

#: any calendar date of years 0001-9999
DATE_SYNTAX = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_DAY})"
#: every calendar date but the first (0001-01-01) and the last (9999-12-31)
_INNER_DATE = (f"(?:{_YEAR_2_TO_9998}-{_MONTH_DAY}|0001-{_MONTH_DAY_BUT_JAN_1}|9999-{_MONTH_DAY_BUT_DEC_31}"
               f"|{_LEAP_DAY})")
_CLOCK = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]+)?)?"
_HH_MM = "(?:[01][0-9]|2[0-3]):[0-5][0-9]"
_SEPARATOR = "[Tt ]"


def time_pattern(plus: str = "+") -> str:
    """The accepted syntax as an anchored regular expression that reads the same in Python and in
    ECMA 262 (JSON Schema's `pattern`). `plus`: the characters that mean a positive offset (HTTP
    adds the space that an unencoded `+` in a query string decodes to)."""
    pos = "[" + "".join("\\+" if c == "+" else c for c in plus) + "]" if len(plus) > 1 else re.escape(plus)
    any_offset = f"(?:[Zz]|(?:{pos}|-){_HH_MM})"
    utc_or_negative = f"(?:[Zz]|-{_HH_MM}|{pos}00:00)"  # on 0001-01-01
    utc_or_positive = f"(?:[Zz]|{pos}{_HH_MM}|-00:00)"  # on 9999-12-31
    date_time = (f"{_INNER_DATE}{_SEPARATOR}{_CLOCK}{any_offset}"
                 f"|0001-01-01{_SEPARATOR}{_CLOCK}{utc_or_negative}"
                 f"|9999-12-31{_SEPARATOR}{_CLOCK}{utc_or_positive}")
    return f"^(?:{DATE_SYNTAX}|{date_time})$"


_SYNTAX = re.compile(time_pattern().removesuffix("$") + r"\Z")
_LOOSE = re.compile(  # the same shape with any digits: to tell a date out of the calendar from noise
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?)?")


class TimeFormatError(ValueError):
    """The text is not a date or an RFC 3339 time with a zone; the message says what to write."""


def parse_user_time(value: str) -> datetime:
    """RFC 3339 with a zone, or a bare date meaning 00:00 UTC that day; always returned in UTC.
    Surrounding white space is ignored (the HTTP API refuses it before calling this)."""
    text = value.strip()
    parts = _LOOSE.fullmatch(text)
    if parts is None:
        raise TimeFormatError(
            f"{value!r} is not a date (2026-02-01) or an RFC 3339 time (2026-02-01T09:30:00Z)"
        )
    year, month, day, hour, minute, second, fraction, z, sign, off_h, off_m = parts.groups()
    if hour is not None and z is None and sign is None:
        raise TimeFormatError(f"{value!r} has no time zone; add Z or +01:00")
    if _SYNTAX.fullmatch(text) is None:
        try:
            datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
        except ValueError:
            raise TimeFormatError(f"{value!r} is not a date of the calendar or a time of the day (years "
                                  "0001 to 9999, hours 00-23, seconds 00-59)") from None
        if sign is None or (int(off_h) < 24 and int(off_m) < 60):
            raise TimeFormatError(f"{value!r} is out of range: give a time between years 1 and 9999 in UTC")
        raise TimeFormatError(f"{value!r} has an offset out of range (-23:59 to +23:59)")
    start = datetime.combine(date(int(year), int(month), int(day)), time(0), tzinfo=UTC)
    if hour is None:
        return start
    micros = int((fraction or "")[:6].ljust(6, "0"))
    offset = timedelta(hours=int(off_h or 0), minutes=int(off_m or 0)) * (-1 if sign == "-" else 1)
    return start + timedelta(hours=int(hour), minutes=int(minute), seconds=int(second or 0),
                             microseconds=micros) - offset
