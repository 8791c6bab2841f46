"""One instrument naming across venues: a venue's symbol in, the system's symbol out.

The system names a spot pair by its base and quote currency codes run together, upper case, the way
Binance writes its symbols: ``BTCUSDT`` on Binance, ``BTC-USD`` on Coinbase and ``BTC/USD`` on Kraken give
``BTCUSDT``, ``BTCUSD`` and ``BTCUSD``. Kraken's legacy codes are mapped to the common ones (``XBT`` ->
``BTC``, ``XDG`` -> ``DOGE``), so that one instrument has one name wherever it trades.

| venue | venue symbol (as given to ``--symbols`` and as in its frames) | system symbol |
| --- | --- | --- |
| binance | ``[A-Z0-9]{2,20}``: ``BTCUSDT`` | the same |
| coinbase | ``BASE-QUOTE``, each ``[A-Z0-9]{1,12}``: ``BTC-USD`` | ``BTCUSD`` |
| kraken | ``BASE/QUOTE``, each ``[A-Z0-9]{1,12}``: ``BTC/USD`` | ``BTCUSD`` |

Since one instrument has one name, the same instrument may not be taken from two venues at once: its
quotes would interleave on one subject as if they were one market. Asking for it is refused at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from rrr.shared.errors import ConfigError, InvalidSymbolError, excerpt
from rrr.shared.subjects import check_symbol, shard_of

VENUE_SYMBOL: Final = {
    "binance": re.compile(r"([A-Z0-9]{2,20})"),
    "coinbase": re.compile(r"([A-Z0-9]{1,12})-([A-Z0-9]{1,12})"),
    "kraken": re.compile(r"([A-Z0-9]{1,12})/([A-Z0-9]{1,12})"),
}
VENUE_EXAMPLE: Final = {"binance": "BTCUSDT", "coinbase": "BTC-USD", "kraken": "BTC/USD"}
# Kraken's legacy currency codes, and the common ones they stand for.
_ALIASES: Final = {"kraken": {"XBT": "BTC", "XDG": "DOGE"}}


def system_symbol(venue: str, venue_symbol: str) -> str:
    """The system's symbol for ``venue_symbol`` of ``venue``.

    Raises:
        ConfigError: not a symbol of that venue's form, or one that gives no valid system symbol.
    """
    pattern = VENUE_SYMBOL.get(venue)
    if pattern is None:
        raise ConfigError("venue", f"one of {', '.join(VENUE_SYMBOL)}", venue)
    match = pattern.fullmatch(venue_symbol)
    if match is None:
        raise ConfigError(
            f"{venue} symbol", f"a symbol of the form {VENUE_EXAMPLE[venue]} ({pattern.pattern})", venue_symbol
        )
    aliases = _ALIASES.get(venue, {})
    joined = "".join(aliases.get(code, code) for code in match.groups())
    try:
        return check_symbol(joined)
    except InvalidSymbolError:
        raise ConfigError(
            f"{venue} symbol {excerpt(venue_symbol)}",
            "a pair that gives a system symbol of at most 32 characters",
            joined,
        ) from None


def parse_symbols(specs: Sequence[str], venues: Sequence[str]) -> dict[str, dict[str, str]]:
    """Sort ``--symbols`` by venue: each venue's symbols, mapped to the system's, in the order given.

    A spec is ``venue:SYMBOL``, or just ``SYMBOL`` when one venue runs. Repeats are taken once.

    Raises:
        ConfigError: an unknown or unasked venue, a malformed symbol, a symbol without a venue while several
            run, or one instrument asked of two venues (or twice of one under two names).
    """
    by_venue: dict[str, dict[str, str]] = {venue: {} for venue in venues}
    owner: dict[str, tuple[str, str]] = {}
    for spec in specs:
        venue, sep, venue_symbol = spec.rpartition(":") if ":" in spec else ("", "", spec)
        if not sep:
            if len(venues) != 1:
                raise ConfigError("symbols", f"venue:SYMBOL with venue one of {', '.join(venues)}", spec)
            venue = venues[0]
        if venue not in by_venue:
            raise ConfigError("symbols", f"a symbol of one of the venues {', '.join(venues)}", spec)
        symbol = system_symbol(venue, venue_symbol)
        taken = owner.get(symbol)
        if taken is not None and taken != (venue, venue_symbol):
            raise ConfigError(
                "symbols",
                f"each instrument from one venue under one name ({symbol} is {taken[0]}:{taken[1]} already)",
                spec,
            )
        owner[symbol] = (venue, venue_symbol)
        by_venue[venue][venue_symbol] = symbol
    return by_venue


def shard_symbols(symbols: Mapping[str, str], shard: int, shards: int) -> dict[str, str]:
    """The venue symbols whose system symbol belongs to ``shard`` of ``shards``."""
    return {venue: system for venue, system in symbols.items() if shard_of(system, shards) == shard}
