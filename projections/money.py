"""Money: the reporting currency and the `[fx]` table that converts won amounts into it.

The table is TOML (for now the file named by `LEADLEDGER_FX_FILE`; later a section of the
policy file), one array of dated rates per currency:

    [fx]
    USD = [{ from = "2026-01-01", rate = 0.92 }]   # 1 USD = 0.92 reporting currency from that date

An amount is converted at the rate in effect on its won date: the latest rate whose `from` is
on or before that date (UTC). The reporting currency converts at 1. An amount with no rate on
its date (its currency is not in the table, or it was won before the currency's first `from`)
is never added in: it is reported per currency as unconverted. Nothing here adds two
currencies.
"""

from __future__ import annotations

import math
import re
import tomllib
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from lifecycle.settings import DEFAULT_REPORTING_CURRENCY, Settings, SettingsError

#: ISO 4217 form: three upper-case letters (codes are upper-cased before the check).
_CODE = re.compile(r"[A-Z]{3}")
#: Currency of a won amount stored without one (a timeline folded before currencies were kept):
#: ISO 4217 "no currency"; never converted.
NO_CURRENCY = "XXX"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FxError(SettingsError):
    """The `[fx]` table is wrong; the message names the file and the key path (`fx.USD[1].rate`)."""


def day_start_us(day: date) -> int:
    """00:00 UTC of `day`, in µs since the epoch (the read models' time unit)."""
    return (datetime(day.year, day.month, day.day, tzinfo=UTC) - _EPOCH).days * 86_400_000_000


@dataclass(frozen=True)
class FxTable:
    """The reporting currency and, per other currency, its rates by start date (oldest first)."""

    reporting: str = DEFAULT_REPORTING_CURRENCY
    rates: Mapping[str, tuple[tuple[date, float], ...]] = field(default_factory=dict)

    def rate(self, currency: str, on: date) -> float | None:
        """Reporting currency per unit of `currency` on the date `on`; None: no rate then."""
        if currency == self.reporting:
            return 1.0
        periods = self.rates.get(currency)
        if not periods:
            return None
        i = bisect_right([start for start, _ in periods], on)
        return periods[i - 1][1] if i else None

    def period_rate(self, currency: str | None, period: int) -> float | None:
        """The rate of `currency`'s `period`-th rate (1-based, as `period_starts` numbers them);
        period 0 is before its first rate. None: not converted."""
        if currency == self.reporting:
            return 1.0
        periods = self.rates.get(currency or "")
        if not periods or not 1 <= period <= len(periods):
            return None
        return periods[period - 1][1]

    def period_starts(self) -> dict[str, list[int]]:
        """Per converted currency, when each of its rates starts (µs, 00:00 UTC of `from`)."""
        return {cur: [day_start_us(start) for start, _ in periods] for cur, periods in self.rates.items()}


def parse_fx(table: Any, reporting: str, where: str) -> FxTable:
    """The `[fx]` table (a TOML-decoded mapping) checked; `where` names the file in errors."""
    if not isinstance(table, Mapping):
        raise FxError(f"{where}: fx must be a table of currencies, got {_kind(table)}")
    rates: dict[str, tuple[tuple[date, float], ...]] = {}
    for raw_code, entries in table.items():
        code = str(raw_code).strip().upper()
        path = f"fx.{raw_code}"
        if not _CODE.fullmatch(code):
            raise FxError(f"{where}: {path}: a currency must be a 3-letter ISO 4217 code like USD")
        if code in rates:
            raise FxError(f"{where}: {path}: {code} is given twice (currency codes ignore case)")
        if code == reporting:
            raise FxError(f"{where}: {path}: {code} is the reporting currency (LEADLEDGER_REPORTING_CURRENCY); "
                          "it always converts at 1, remove it")
        if not isinstance(entries, list) or not entries:
            raise FxError(f"{where}: {path}: must be a non-empty array of {{ from = \"YYYY-MM-DD\", rate = N }}, "
                          f"got {_kind(entries)}")
        periods: dict[date, float] = {}
        for i, entry in enumerate(entries):
            at = f"{path}[{i}]"
            if not isinstance(entry, Mapping):
                raise FxError(f"{where}: {at}: must be a table {{ from = \"YYYY-MM-DD\", rate = N }}, "
                              f"got {_kind(entry)}")
            extra = sorted(set(entry) - {"from", "rate"})
            if extra:
                raise FxError(f"{where}: {at}: unknown key {extra[0]!r} (an entry has only from and rate)")
            for key in ("from", "rate"):
                if key not in entry:
                    raise FxError(f"{where}: {at}.{key}: missing")
            start = _date(entry["from"], f"{where}: {at}.from")
            rate = entry["rate"]
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
                raise FxError(f"{where}: {at}.rate: must be a number > 0 (reporting currency per 1 {code}), "
                              f"got {rate!r}")
            if start in periods:
                raise FxError(f"{where}: {at}.from: {start.isoformat()} is given twice for {code}")
            periods[start] = float(rate)
        rates[code] = tuple(sorted(periods.items()))
    return FxTable(reporting, rates)


def load_fx(path: Path, reporting: str) -> FxTable:
    """The `[fx]` table of the TOML file at `path`."""
    where = f"LEADLEDGER_FX_FILE {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FxError(f"{where}: cannot be read: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FxError(f"{where}: not valid TOML: {exc}") from None
    if "fx" not in document:
        raise FxError(f"{where}: has no [fx] table (e.g. [fx] then USD = [{{ from = \"2026-01-01\", rate = 0.92 }}])")
    return parse_fx(document["fx"], reporting, where)


def fx_table(settings: Settings) -> FxTable:
    """The reporting currency and the rates the settings name (no file: no rates)."""
    if settings.fx_file is None:
        return FxTable(settings.reporting_currency)
    return load_fx(settings.fx_file, settings.reporting_currency)


def _date(value: Any, at: str) -> date:
    if isinstance(value, datetime):  # a TOML date-time: a rate starts on a day
        raise FxError(f"{at}: must be a date like 2026-01-01 (no time of day), got {value.isoformat()}")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            if len(value) == 10:
                return date.fromisoformat(value)
        except ValueError:
            pass
    raise FxError(f"{at}: must be a date like 2026-01-01, got {value!r}")


def _kind(value: Any) -> str:
    names: dict[type, str] = {dict: "a table", list: "an array", str: "a string"}
    return names.get(type(value), type(value).__name__)
