"""A seeded random-walk quote simulator: the same seed gives the same prices, run after run."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class SimQuote:
    """One simulated top of book, and a trade printed at it when ``trade_side`` is set."""

    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    trade_side: str | None
    # The same prices in fixed point: units of 10**-places (the tick's places).
    bid_units: int = 0
    ask_units: int = 0
    places: int = 0


class RandomWalk:
    """Mid prices move by -1, 0 or +1 tick per quote; spreads are 1 to 3 ticks.

    Prices are integers of ticks turned into Decimals, so they are exact and never drift off the tick grid.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        seed: int,
        tick: Decimal = Decimal("0.01"),
        start: Decimal = Decimal(100),
        trade_every: int = 10,
    ) -> None:
        if not symbols:
            raise ValueError("the simulator needs at least one symbol")
        self._rng = random.Random(seed)
        self._tick = tick
        exponent = tick.as_tuple().exponent
        if not isinstance(exponent, int) or tick <= 0:
            raise ValueError(f"the tick must be a finite positive number, got {tick}")
        # Prices are multiples of the tick: in units of 10**-places, a tick is tick_units.
        self._places = max(-exponent, 0)
        self._tick_units = int(tick.scaleb(self._places))
        self._mid_ticks = dict.fromkeys(symbols, int(start / tick))
        self._trade_every = trade_every
        self._count = 0

    def next(self, symbol: str) -> SimQuote:
        """The next quote of ``symbol``."""
        rng = self._rng
        mid = max(self._mid_ticks[symbol] + rng.choice((-1, 0, 1)), 10)
        self._mid_ticks[symbol] = mid
        half = rng.randint(1, 3)
        bid, ask = (mid - half) * self._tick, (mid + half) * self._tick
        self._count += 1
        trade = rng.choice(("buy", "sell")) if self._trade_every and self._count % self._trade_every == 0 else None
        return SimQuote(
            symbol, bid, ask, Decimal(rng.randint(1, 100)), Decimal(rng.randint(1, 100)), trade,
            (mid - half) * self._tick_units, (mid + half) * self._tick_units, self._places,
        )  # fmt: skip
