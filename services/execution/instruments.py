"""The instruments table: each symbol's tick size, lot size and quote currency.

A file lists the instruments execution knows (``--instruments instruments.toml``)::

    [default]                    # optional: what a symbol not listed gets (by default: no tick, no lot)
    quote_currency = "USD"

    [[instrument]]
    symbol = "EURUSD"
    tick = "0.00001"             # prices are whole multiples of it
    lot = "1000"                 # quantities are whole multiples of it (so at least one lot)
    quote_currency = "USD"       # what prices, notionals and PnL of the symbol are counted in

Numbers are written as text or integers, never as TOML floats, which are binary: ``tick = 0.1`` is refused
with the line to write instead. A symbol listed nowhere gets the default instrument, which by default has
neither tick nor lot: any price and quantity the wire carries passes, as before there was a table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Annotated

import msgspec

from rrr.shared.errors import InvalidSymbolError, RRRError, excerpt
from rrr.shared.subjects import check_symbol

_CURRENCY = r"\A[A-Z0-9]{1,12}\Z"
# Instruments one table may list: far more than one execution instance trades (see --max-symbols).
MAX_INSTRUMENTS = 100_000


@dataclass(frozen=True, slots=True)
class Instrument:
    """What execution knows of one symbol.

    ``tick`` and ``lot`` are None when the instrument has none (any price, any quantity); ``quote_currency``
    is empty when unknown.
    """

    symbol: str
    tick: Decimal | None = None
    lot: Decimal | None = None
    quote_currency: str = ""

    def off_tick(self, price: Decimal) -> bool:
        """Whether ``price`` is not a whole multiple of the tick (never, without a tick)."""
        return self.tick is not None and (Fraction(price) / Fraction(self.tick)).denominator != 1

    def off_lot(self, qty: Decimal) -> bool:
        """Whether ``qty`` is not a whole, positive multiple of the lot (never, without a lot)."""
        if self.lot is None:
            return False
        lots = Fraction(qty) / Fraction(self.lot)
        return lots.denominator != 1 or lots < 1


class InstrumentsError(RRRError):
    """An instruments file cannot be read, or says something that is not an instrument."""

    def __init__(self, path: str, where: str, expected: str, got: object) -> None:
        self.path = path
        self.where = where
        self.expected = expected
        self.got = got
        shown = excerpt(got) if isinstance(got, str) else excerpt(repr(got), quoted=False)
        super().__init__(f"instruments file {path}: {where}: expected {expected}, got {shown}")


class Instruments:
    """The table: a listed symbol's instrument, or the default one named for the symbol."""

    def __init__(self, listed: Iterable[Instrument] = (), default: Instrument | None = None) -> None:
        self._listed = {instrument.symbol: instrument for instrument in listed}
        self.default = default or Instrument("*")

    def __len__(self) -> int:
        return len(self._listed)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._listed.values())

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._listed

    def get(self, symbol: str) -> Instrument:
        """The instrument of ``symbol``: listed, else the default under the symbol's name."""
        listed = self._listed.get(symbol)
        return listed if listed is not None else replace(self.default, symbol=symbol)

    def rules(self, symbol: str) -> Instrument:
        """The tick, lot and quote currency ``symbol`` trades with: ``get`` without naming the default for it
        (what the checks of every order read: no instrument built per order)."""
        listed = self._listed.get(symbol)
        return listed if listed is not None else self.default


# Text or an integer: a TOML float is a binary number, and a tick of 0.1 must be exactly one tenth.
_Number = str | int
_Currency = Annotated[str, msgspec.Meta(pattern=_CURRENCY)]


class _Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    symbol: str
    tick: _Number | None = None
    lot: _Number | None = None
    quote_currency: _Currency = ""


class _Default(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tick: _Number | None = None
    lot: _Number | None = None
    quote_currency: _Currency = ""


class _File(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    instrument: list[_Entry] = []
    default: _Default = _Default()


def load(path: Path) -> Instruments:
    """Read an instruments file (TOML, see the module's docstring).

    Raises:
        InstrumentsError: the file cannot be read or is not such a file: an unknown key, a float, a tick or
            lot that is not a positive number, an invalid symbol, a symbol listed twice, too many instruments.
    """
    where = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InstrumentsError(where, "the file", "a readable file", exc.strerror or str(exc)) from None
    try:
        listed = msgspec.toml.decode(data, type=_File)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        hint = " (numbers as text, '0.01', or integers: TOML floats are binary)" if "float" in str(exc) else ""
        raise InstrumentsError(
            where, "the file", f"TOML of [[instrument]] tables (symbol, tick, lot, quote_currency){hint}", str(exc)
        ) from None
    if len(listed.instrument) > MAX_INSTRUMENTS:
        raise InstrumentsError(where, "the file", f"at most {MAX_INSTRUMENTS} instruments", len(listed.instrument))
    default = Instrument(
        "*",
        _step(where, "[default] tick", listed.default.tick),
        _step(where, "[default] lot", listed.default.lot),
        listed.default.quote_currency,
    )
    instruments: list[Instrument] = []
    seen: set[str] = set()
    for number, entry in enumerate(listed.instrument, start=1):
        at = f"instrument {number}"
        try:
            symbol = check_symbol(entry.symbol)
        except InvalidSymbolError:
            raise InstrumentsError(
                where, f"{at} symbol", "1-32 characters of A-Z, 0-9, '_' or '-'", entry.symbol
            ) from None
        if symbol in seen:
            raise InstrumentsError(where, f"{at} ({symbol})", "each symbol listed once", f"{symbol} again")
        seen.add(symbol)
        instruments.append(
            Instrument(
                symbol,
                _step(where, f"{at} ({symbol}) tick", entry.tick),
                _step(where, f"{at} ({symbol}) lot", entry.lot),
                entry.quote_currency,
            )
        )
    return Instruments(instruments, default)


def _step(path: str, where: str, value: _Number | None) -> Decimal | None:
    """A tick or lot size: None when absent, else a finite number > 0 within the wire's bounds."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        number = Decimal(text)
    except ArithmeticError:
        raise InstrumentsError(path, where, "a decimal number such as '0.01'", text) from None
    if not number.is_finite() or number <= 0:
        raise InstrumentsError(path, where, "a number > 0", text)
    exponent = number.as_tuple().exponent
    if number.adjusted() >= 18 or (isinstance(exponent, int) and exponent < -28):
        raise InstrumentsError(path, where, "at most 18 digits before the point and 28 after", text)
    return number
