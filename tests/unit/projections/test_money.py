"""The `[fx]` table: loaded from TOML, checked with errors naming the file and the key path, and
the rate in effect on a date (the latest on or before it; the reporting currency at 1)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from lifecycle.settings import Settings, SettingsError
from projections.money import FxError, FxTable, day_start_us, fx_table, load_fx, parse_fx

GOOD = """
# 1 USD = 0.92 reporting currency from that date
[fx]
USD = [{ from = "2026-01-01", rate = 0.92 }, { from = 2026-03-01, rate = 0.8 }]
gbp = [{ from = "2026-02-01", rate = 1 }]

[other]   # the future policy file has more tables: they are not the FX table's business
x = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fx.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_table_gives_the_rate_in_effect_on_each_date(tmp_path: Path) -> None:
    fx = load_fx(write(tmp_path, GOOD), "EUR")
    assert fx.reporting == "EUR"
    assert fx.rates == {"USD": ((date(2026, 1, 1), 0.92), (date(2026, 3, 1), 0.8)), "GBP": ((date(2026, 2, 1), 1.0),)}
    assert fx.rate("USD", date(2025, 12, 31)) is None  # before its first rate: no rate
    assert fx.rate("USD", date(2026, 1, 1)) == 0.92  # on the date itself
    assert fx.rate("USD", date(2026, 2, 28)) == 0.92
    assert fx.rate("USD", date(2026, 3, 1)) == 0.8
    assert fx.rate("USD", date(2030, 1, 1)) == 0.8
    assert fx.rate("EUR", date(1999, 1, 1)) == 1.0  # the reporting currency
    assert fx.rate("SGD", date(2026, 6, 1)) is None  # not in the table
    assert fx.period_rate("USD", 0) is None and fx.period_rate("USD", 1) == 0.92 and fx.period_rate("USD", 2) == 0.8
    assert fx.period_rate("EUR", 0) == 1.0 and fx.period_rate(None, 1) is None
    assert fx.period_starts()["USD"] == [day_start_us(date(2026, 1, 1)), day_start_us(date(2026, 3, 1))]
    assert day_start_us(date(1970, 1, 2)) == 86_400_000_000


def test_entries_may_come_in_any_order(tmp_path: Path) -> None:
    fx = load_fx(write(tmp_path, '[fx]\nUSD = [{ from = "2026-03-01", rate = 0.8 }, '
                                 '{ from = "2026-01-01", rate = 0.9 }]\n'), "EUR")
    assert fx.rates["USD"] == ((date(2026, 1, 1), 0.9), (date(2026, 3, 1), 0.8))


def test_no_file_means_only_the_reporting_currency_converts(tmp_path: Path) -> None:
    fx = fx_table(Settings(home=tmp_path, reporting_currency="chf"))
    assert fx == FxTable("CHF") and fx.rate("CHF", date(2026, 1, 1)) == 1.0 and fx.rate("EUR", date(2026, 1, 1)) is None
    assert fx_table(Settings(home=tmp_path, fx_file=write(tmp_path, GOOD))).rate("USD", date(2026, 5, 1)) == 0.8


@pytest.mark.parametrize(("text", "names"), [
    ('[fx]\nUSD = [{ from = "2026-01-01", rate = -1 }]', ["fx.USD[0].rate", "> 0", "-1"]),
    ('[fx]\nUSD = [{ from = "2026-01-01", rate = 0 }]', ["fx.USD[0].rate"]),
    ('[fx]\nUSD = [{ from = "2026-01-01", rate = nan }]', ["fx.USD[0].rate", "nan"]),
    ('[fx]\nUSD = [{ from = "2026-01-01", rate = inf }]', ["fx.USD[0].rate", "inf"]),
    ('[fx]\nUSD = [{ from = "2026-01-01", rate = "0.9" }]', ["fx.USD[0].rate", "'0.9'"]),
    ('[fx]\nUSD = [{ from = "2026-01-01", rate = true }]', ["fx.USD[0].rate"]),
    ('[fx]\nUSD = [{ from = "2026-01-01", rate = 0.9 }, { from = "Jan 2", rate = 0.9 }]',
     ["fx.USD[1].from", "2026-01-01", "'Jan 2'"]),
    ('[fx]\nUSD = [{ from = 2026-01-01T10:00:00Z, rate = 0.9 }]', ["fx.USD[0].from", "no time of day"]),
    ('[fx]\nUSD = [{ from = "2026-01-01", rate = 0.9 }, { from = 2026-01-01, rate = 0.8 }]',
     ["fx.USD[1].from", "given twice"]),
    ('[fx]\nUSD = [{ rate = 0.9 }]', ["fx.USD[0].from", "missing"]),
    ('[fx]\nUSD = [{ from = "2026-01-01" }]', ["fx.USD[0].rate", "missing"]),
    ('[fx]\nUSD = [{ from = "2026-01-01", rate = 0.9, to = "2026-02-01" }]', ["fx.USD[0]", "'to'"]),
    ('[fx]\nUSD = 0.92', ["fx.USD", "array"]),
    ('[fx]\nUSD = []', ["fx.USD", "non-empty"]),
    ('[fx]\nUSD = [0.92]', ["fx.USD[0]", "table"]),
    ('[fx]\nDOLLAR = [{ from = "2026-01-01", rate = 0.9 }]', ["fx.DOLLAR", "ISO 4217"]),
    ('[fx]\nUSD = [{ from = "2026-01-01", rate = 0.9 }]\nusd = [{ from = "2026-01-01", rate = 0.9 }]',
     ["fx.usd", "twice"]),
    ('[fx]\nEUR = [{ from = "2026-01-01", rate = 1 }]', ["fx.EUR", "reporting currency"]),
    ('fx = 3', ["fx must be a table"]),
    ('[rates]\nUSD = 1', ["no [fx] table"]),
    ('[fx\nUSD = 1', ["not valid TOML"]),
])
def test_a_bad_table_is_refused_naming_the_file_and_the_key_path(tmp_path: Path, text: str,
                                                                  names: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(FxError) as info:
        load_fx(path, "EUR")
    message = str(info.value)
    assert message.startswith(f"LEADLEDGER_FX_FILE {path}: ")
    for name in names:
        assert name in message, message
    assert isinstance(info.value, SettingsError)  # the CLI and the server report it like any bad setting


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FxError, match=r"LEADLEDGER_FX_FILE .*nope\.toml: cannot be read"):
        fx_table(Settings(home=tmp_path, fx_file=tmp_path / "nope.toml"))


def test_parse_fx_takes_an_already_decoded_table() -> None:
    fx = parse_fx({"usd": [{"from": date(2026, 1, 1), "rate": 2}]}, "GBP", "policy.toml")
    assert fx == FxTable("GBP", {"USD": ((date(2026, 1, 1), 2.0),)})
    with pytest.raises(FxError, match=r"^policy.toml: fx.USD\[0\].rate"):
        parse_fx({"USD": [{"from": "2026-01-01", "rate": -2}]}, "GBP", "policy.toml")


@pytest.mark.parametrize("bad", ["EURO", "E1", "€€€", ""])
def test_the_reporting_currency_setting_is_an_iso_code(bad: str) -> None:
    with pytest.raises(SettingsError, match="LEADLEDGER_REPORTING_CURRENCY"):
        Settings.from_env({"LEADLEDGER_REPORTING_CURRENCY": bad or " "})
    assert Settings.from_env({"LEADLEDGER_REPORTING_CURRENCY": " usd "}).reporting_currency == "USD"
    assert Settings.from_env({}).reporting_currency == "EUR"
    assert Settings.from_env({"LEADLEDGER_FX_FILE": "/etc/fx.toml"}).fx_file == Path("/etc/fx.toml")
