"""A service instance's symbol universe: the symbols it may keep state for, listed or capped.

A strategy or execution instance keeps state per symbol for as long as it runs (and in its snapshot), so a
flood of distinct symbols would grow it without end. Its universe bounds it: a message for a symbol outside
it is refused on its own (dead-lettered with the reason) and counted, and the state never grows past it.
State restored at start-up (a snapshot, the event stream) is kept whole, even beyond a lowered cap: it is
what happened, and only new symbols are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec

from rrr.shared import subjects
from rrr.shared.errors import ConfigError, InvalidSymbolError, RRRError

DEFAULT_MAX_SYMBOLS = 10_000
MAX_MAX_SYMBOLS = 1_000_000

# The two settings of a universe, as fields of a service's config (strategy, execution).
MaxSymbols = Annotated[
    int,
    msgspec.Meta(
        ge=1,
        le=MAX_MAX_SYMBOLS,
        description="most symbols this instance keeps state for; a message for one more is dead-lettered",
    ),
]
SymbolList = Annotated[
    tuple[str, ...], msgspec.Meta(description="the only symbols this instance admits, comma-separated (default: any)")
]


class SymbolRefusedError(RRRError):
    """A message for a symbol outside the instance's universe."""

    def __init__(self, symbol: str, expected: str, seen: str) -> None:
        self.symbol = symbol
        super().__init__(f"symbol {symbol} refused: expected {expected}, {seen}")


@dataclass(frozen=True, slots=True)
class Universe:
    """The symbols one instance admits: those listed (if any are), at most ``max_symbols`` of them."""

    max_symbols: int = DEFAULT_MAX_SYMBOLS
    symbols: frozenset[str] = frozenset()
    # Names the settings in refusals: ``strategy`` gives --max-symbols / RRR_STRATEGY_MAX_SYMBOLS.
    service: str = "service"

    def admit(self, symbol: str, held: int) -> None:
        """Check that a symbol the instance holds no state for may join the ``held`` ones it has.

        Raises:
            SymbolRefusedError: it is not listed, or the instance holds ``max_symbols`` already.
        """
        prefix = f"RRR_{self.service.upper()}_"
        if self.symbols and symbol not in self.symbols:
            raise SymbolRefusedError(
                symbol,
                f"one of the {len(self.symbols)} symbols of --symbols ({prefix}SYMBOLS)",
                "and it is not one of them",
            )
        if held >= self.max_symbols:
            raise SymbolRefusedError(
                symbol,
                f"at most {self.max_symbols} symbols per instance (--max-symbols, {prefix}MAX_SYMBOLS)",
                f"and this instance holds {held} already",
            )


def configured(service: str, max_symbols: int, symbols: tuple[str, ...], shard: int, shards: int) -> Universe:
    """The universe that a service's ``--max-symbols`` and ``--symbols`` describe, for one shard.

    Raises:
        ConfigError: a listed symbol is invalid, or this shard's share of the list exceeds the cap.
    """
    for symbol in symbols:
        try:
            subjects.check_symbol(symbol)
        except InvalidSymbolError as exc:
            raise ConfigError("symbols", "valid symbols (A-Z, 0-9, '_', '-')", symbol) from exc
    owned = sum(1 for symbol in set(symbols) if subjects.shard_of(symbol, shards) == shard)
    if owned > max_symbols:
        raise ConfigError("symbols", f"at most --max-symbols={max_symbols} symbols of shard {shard}", owned)
    return Universe(max_symbols=max_symbols, symbols=frozenset(symbols), service=service)
