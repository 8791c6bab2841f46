"""The instruments table: tick, lot and quote currency per symbol, read from a file with clear errors."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from rrr.execution.config import ExecutionConfig
from rrr.execution.instruments import Instrument, Instruments, InstrumentsError, load
from rrr.shared.errors import ConfigError

D = Decimal


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "instruments.toml"
    path.write_text(text)
    return path


def test_a_symbol_not_listed_gets_the_default_with_no_tick_no_lot_so_anything_passes():
    table = Instruments()
    instrument = table.get("EURUSD")
    assert instrument == Instrument("EURUSD")
    assert not instrument.off_tick(D("1.1234567890123"))
    assert not instrument.off_lot(D("0.0000001"))
    assert "EURUSD" not in table


def test_the_file_lists_instruments_and_a_default(tmp_path):
    path = _write(
        tmp_path,
        """
[default]
quote_currency = "USD"

[[instrument]]
symbol = "EURUSD"
tick = "0.00001"
lot = 1000
quote_currency = "USD"

[[instrument]]
symbol = "BTCUSDT"
tick = "0.01"
lot = "0.00001"
quote_currency = "USDT"
""",
    )
    table = load(path)
    assert len(table) == 2
    assert table.get("EURUSD") == Instrument("EURUSD", D("0.00001"), D(1000), "USD")
    assert table.get("BTCUSDT").quote_currency == "USDT"
    assert table.get("USDJPY") == Instrument("USDJPY", None, None, "USD")


@pytest.mark.parametrize(
    ("price", "off"), [("1.12345", False), ("1.123450", False), ("1.123455", True), ("0.00001", False)]
)
def test_a_price_is_on_the_tick_when_it_is_a_whole_multiple_of_it(price, off):
    assert Instrument("EURUSD", tick=D("0.00001")).off_tick(D(price)) is off


@pytest.mark.parametrize(("qty", "off"), [("1000", False), ("3000", False), ("1500", True), ("500", True)])
def test_a_quantity_is_whole_lots_and_at_least_one(qty, off):
    assert Instrument("EURUSD", lot=D(1000)).off_lot(D(qty)) is off


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[instrument]]\nsymbol = "EURUSD"\ntick = 0.1\n',
            "numbers as text, '0.01', or integers: TOML floats are binary",
        ),
        (
            '[[instrument]]\nsymbol = "EURUSD"\ntick = "-1"\n',
            "instrument 1 (EURUSD) tick: expected a number > 0, got '-1'",
        ),
        (
            '[[instrument]]\nsymbol = "EURUSD"\nlot = "abc"\n',
            "lot: expected a decimal number such as '0.01', got 'abc'",
        ),
        ('[[instrument]]\nsymbol = "eur.usd"\n', "instrument 1 symbol: expected 1-32 characters"),
        (
            '[[instrument]]\nsymbol = "EURUSD"\n[[instrument]]\nsymbol = "EURUSD"\n',
            "instrument 2 (EURUSD): expected each symbol listed once, got 'EURUSD again'",
        ),
        ('[[instrument]]\nsymbol = "EURUSD"\nticks = "1"\n', "unknown field `ticks`"),
        ('[[instrument]]\nsymbol = "EURUSD"\nquote_currency = "usd"\n', "quote_currency"),
        ("[[instrument]\n", "TOML"),
        ('[default]\ntick = "1E+30"\n', "[default] tick: expected at most 18 digits before the point"),
    ],
)
def test_a_bad_file_is_one_error_naming_where_and_what(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(InstrumentsError) as info:
        load(path)
    assert str(info.value).startswith(f"instruments file {path}: ")
    assert message in str(info.value)


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(InstrumentsError, match="expected a readable file"):
        load(tmp_path / "nowhere.toml")


def test_execution_refuses_to_start_with_a_bad_instruments_file(tmp_path):
    path = _write(tmp_path, '[[instrument]]\nsymbol = "EURUSD"\nlot = "0"\n')
    with pytest.raises(ConfigError) as info:
        ExecutionConfig(instruments=str(path))
    assert str(info.value) == (f"instruments: expected a number > 0 at instrument 1 (EURUSD) lot of {path}, got '0'")


def test_execution_reads_the_instruments_file_it_is_given(tmp_path):
    path = _write(tmp_path, '[[instrument]]\nsymbol = "EURUSD"\ntick = "0.00001"\n')
    assert ExecutionConfig(instruments=str(path)).instrument_table().get("EURUSD").tick == D("0.00001")
    assert len(ExecutionConfig().instrument_table()) == 0
