"""The ``sma_cross`` strategy: exact moving-average crossings of the quote mid.

Semantics, per symbol: mid = (bid + ask) / 2; fast and slow are the plain means of the last ``fast`` and
``slow`` mids, defined once ``slow`` quotes were seen. A cross up happens at a quote where both means were
defined at the previous quote with fast <= slow there, and fast > slow now; a cross down mirrors it. A
cross up sets the target position to +qty, a cross down to -qty, and an order is due for the change.

All arithmetic is exact. Prices come in as fixed-point integers (rrr.shared.fixed) and stay integers: the
window holds ``bid + ask`` in units of 10**-places, and the means are never divided out: fast > slow is
decided as ``sum_fast * slow > sum_slow * fast`` on those sums (the halving and the scale cancel). Python
integers never round and never overflow, so no rounding can ever decide a cross.

``SmaCrossStrategy`` is the same on the strategy API (rrr.strategy.api): one ``SmaCross`` per symbol, a signal
at every cross and an order for every change of target, with the ids, quote sequence and place of before.
"""

from __future__ import annotations

import decimal
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Literal, NoReturn

import msgspec

from rrr.shared.fixed import MAX_PLACES, MAX_UNITS, FixedPointError, rescale, to_units
from rrr.shared.messages import QuoteRow
from rrr.strategy.api import Params, Strategy

_DISPLAY = Decimal("1e-10")
_INT64_MAX = 2**63 - 1
# A mean is at most 10**18: 29 digits at 10 places, one more than the default context's 28 (in which such a
# mean would fail to quantize). The division rounds at 40 digits, at least 11 past the 10 places shown.
_DISPLAY_CONTEXT = decimal.Context(prec=40)


class SmaCrossParams(Params, frozen=True, kw_only=True):
    """Parameters of ``sma_cross``."""

    fast: Annotated[int, msgspec.Meta(ge=1, description="quotes in the fast mean")] = 5
    slow: Annotated[int, msgspec.Meta(ge=2, le=1_000_000, description="quotes in the slow mean")] = 20
    qty: Annotated[Decimal, msgspec.Meta(description="target position size, > 0")] = Decimal(1)

    def __post_init__(self) -> None:
        if not 1 <= self.fast < self.slow:
            raise ValueError(f"sma_cross needs 1 <= fast < slow, got fast={self.fast} slow={self.slow}")
        if not (self.qty.is_finite() and self.qty > 0):
            raise ValueError(f"sma_cross needs qty > 0, got {self.qty}")


class Cross(msgspec.Struct, frozen=True, kw_only=True):
    """A crossing at one quote and the order it calls for."""

    direction: Literal["up", "down"]
    fast: Decimal  # mean, rounded for display
    slow: Decimal
    target: Decimal
    order_qty: Decimal  # signed: > 0 buy, < 0 sell, 0 nothing to do


class SmaCrossState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Everything ``SmaCross`` needs to continue exactly where it was (for snapshots)."""

    # bid + ask of the last ``slow`` quotes in units of 10**-places. msgpack's integers have 64 bits, enough
    # for any bid + ask (at most 2 * 10**18) at its own places; one scaled up by many more places (a symbol
    # quoted at 0 and at 18 places) can pass them, and is written as its decimal text.
    window: list[int | str]
    places: Annotated[int, msgspec.Meta(ge=0)]
    prev_relation: int | None
    target: Decimal
    quotes_seen: int


@dataclass(slots=True)
class SmaCross:
    """State of ``sma_cross`` for one symbol."""

    params: SmaCrossParams
    # Doubled mids (bid + ask) in units of 10**-_places: exact, and the factor 2 cancels in every comparison.
    # _places is the most any quote of the symbol had: it only grows, so scaling the window is always exact.
    _window: deque[int] = field(init=False)
    _places: int = field(init=False, default=0)
    _sum_fast: int = field(init=False, default=0)
    _sum_slow: int = field(init=False, default=0)
    _prev_relation: int | None = field(init=False, default=None)  # sign(fast - slow) at the previous quote
    target: Decimal = field(init=False, default=Decimal(0))
    quotes_seen: int = field(init=False, default=0)
    # The window lengths, read on every quote: an attribute of self is one lookup fewer than one of params.
    _fast: int = field(init=False)
    _slow: int = field(init=False)

    def __post_init__(self) -> None:
        self._fast, self._slow = self.params.fast, self.params.slow
        self._window = deque(maxlen=self._slow)

    def on_quote(self, bid_units: int, ask_units: int, places: int) -> Cross | None:
        """Feed one quote, its prices in units of 10**-``places``; return the crossing it makes, if any.

        A quote with more places than the symbol had so far scales the window up to them; one with fewer is
        scaled up to the symbol's places. Both exactly: a multiplication by a power of ten.

        Raises:
            FixedPointError: a price is not 1 to 10**18 units, or ``places`` not 0 to 18. Raised before any
                state changed, so that the quote can be rejected on its own.
        """
        if not (0 < bid_units <= MAX_UNITS and 0 < ask_units <= MAX_UNITS and 0 <= places <= MAX_PLACES):
            _refuse(bid_units, ask_units, places)
        # Nothing below can fail: integers neither round nor overflow.
        mid2 = bid_units + ask_units
        if places != self._places:
            if places < self._places:
                mid2 *= 10 ** (self._places - places)
            else:
                self._rescale(places)
        window = self._window
        fast, slow = self._fast, self._slow
        seen = len(window)
        if seen == slow:  # the steady state: one mid in, one out of each sum
            sum_slow = self._sum_slow + mid2 - window[0]
            sum_fast = self._sum_fast + mid2 - window[-fast]
        else:
            sum_slow = self._sum_slow + mid2
            sum_fast = self._sum_fast + mid2 - (window[-fast] if seen >= fast else 0)
        window.append(mid2)
        self._sum_slow = sum_slow
        self._sum_fast = sum_fast
        self.quotes_seen += 1
        if seen + 1 < slow:
            return None
        # sign(fast_mean - slow_mean) == sign(sum_fast * slow - sum_slow * fast): both counts are > 0.
        diff = sum_fast * slow - sum_slow * fast
        relation = 1 if diff > 0 else -1 if diff < 0 else 0
        prev = self._prev_relation
        self._prev_relation = relation
        if prev is None or prev == relation:
            return None
        if prev <= 0 < relation:
            direction: Literal["up", "down"] = "up"
            new_target = self.params.qty
        elif prev >= 0 > relation:
            direction = "down"
            new_target = -self.params.qty
        else:
            return None
        order_qty = new_target - self.target
        self.target = new_target
        return Cross(
            direction=direction,
            fast=self._mean(sum_fast, fast),
            slow=self._mean(sum_slow, slow),
            target=new_target,
            order_qty=order_qty,
        )

    def on_decimal_quote(self, bid: Decimal, ask: Decimal) -> Cross | None:
        """Feed one quote of Decimal prices, converted exactly to units (see ``on_quote``).

        Raises:
            FixedPointError: a price is not finite, not positive, or needs more than 18 places or 10**18
                units, at the places of the longer of the two. Raised before any state changed.
        """
        bid_units, bid_places = to_units(bid, name="bid")
        ask_units, ask_places = to_units(ask, name="ask")
        if bid_places < ask_places:
            bid_units = rescale(bid_units, bid_places, ask_places)
        elif ask_places < bid_places:
            ask_units = rescale(ask_units, ask_places, bid_places)
        return self.on_quote(bid_units, ask_units, max(bid_places, ask_places))

    def _rescale(self, places: int) -> None:
        factor = 10 ** (places - self._places)
        self._window = deque((mid2 * factor for mid2 in self._window), maxlen=self._slow)
        self._sum_fast *= factor
        self._sum_slow *= factor
        self._places = places

    def _mean(self, sum2: int, count: int) -> Decimal:
        """The mean of ``count`` mids whose doubled sum is ``sum2``, rounded for display."""
        ctx = _DISPLAY_CONTEXT
        return ctx.divide(Decimal(sum2), 2 * count * 10**self._places).quantize(_DISPLAY, context=ctx)

    def state(self) -> SmaCrossState:
        """The state, to snapshot."""
        return SmaCrossState(
            window=[mid2 if mid2 <= _INT64_MAX else str(mid2) for mid2 in self._window],
            places=self._places,
            prev_relation=self._prev_relation,
            target=self.target,
            quotes_seen=self.quotes_seen,
        )

    @classmethod
    def from_state(cls, params: SmaCrossParams, state: SmaCrossState) -> SmaCross:
        """Rebuild from a snapshot taken with the same parameters."""
        if len(state.window) > params.slow:
            raise ValueError(f"snapshot window of {len(state.window)} quotes does not fit slow={params.slow}")
        strategy = cls(params)
        window = [int(mid2) for mid2 in state.window]
        strategy._window.extend(window)
        strategy._places = state.places
        strategy._sum_slow = sum(window)
        strategy._sum_fast = sum(window[-params.fast :])
        strategy._prev_relation = state.prev_relation
        strategy.target = state.target
        strategy.quotes_seen = state.quotes_seen
        return strategy


def _refuse(bid_units: int, ask_units: int, places: int) -> NoReturn:
    if not 0 <= places <= MAX_PLACES:
        raise FixedPointError("places", f"0 to {MAX_PLACES}", places)
    for name, units in (("bid", bid_units), ("ask", ask_units)):
        if not 0 < units <= MAX_UNITS:
            raise FixedPointError(name, "1 to 10**18 units", f"{units} units of 10**-{places}")
    raise AssertionError("_refuse called on a quote within the bounds")


class SmaCrossStrategy(Strategy[SmaCrossParams]):
    """``sma_cross`` on the strategy API: per symbol, a signal at each cross and an order for each change
    of target (see the module's docstring)."""

    state_type = dict[str, SmaCrossState]

    def on_start(self) -> None:
        self.books: dict[str, SmaCross] = {}

    def on_quote(self, quote: QuoteRow) -> None:
        book = self.books.get(quote.symbol)
        if book is None:
            book = self.books[quote.symbol] = SmaCross(self.params)
        cross = book.on_quote(quote.bid, quote.ask, quote.places)
        if cross is None:
            return
        ctx = self.ctx
        ctx.signal(cross.direction, cross.target, fast=cross.fast, slow=cross.slow)
        if cross.order_qty:
            ctx.submit("buy" if cross.order_qty > 0 else "sell", abs(cross.order_qty))

    def snapshot(self) -> dict[str, SmaCrossState]:
        return {symbol: book.state() for symbol, book in self.books.items()}

    def restore(self, state: dict[str, SmaCrossState]) -> None:
        self.books = {symbol: SmaCross.from_state(self.params, saved) for symbol, saved in state.items()}
