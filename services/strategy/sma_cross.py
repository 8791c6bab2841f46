"""The ``sma_cross`` strategy: exact moving-average crossings of the quote mid.

Semantics, per symbol: mid = (bid + ask) / 2; fast and slow are the plain means of the last ``fast`` and
``slow`` mids, defined once ``slow`` quotes were seen. A cross up happens at a quote where both means were
defined at the previous quote with fast <= slow there, and fast > slow now; a cross down mirrors it. A
cross up sets the target position to +qty, a cross down to -qty, and an order is due for the change.

All arithmetic is exact. The means are never divided out: fast > slow is decided as
``sum_fast * slow > sum_slow * fast`` on sums of ``bid + ask`` (the halving cancels), in a decimal
context that raises on any inexact step, so no rounding can ever decide a cross.
"""

from __future__ import annotations

import decimal
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import msgspec

# Prices have at most 46 significant digits (see messages): sums of a window times its length stay far
# inside 100 digits. If that were ever exceeded, Inexact raises instead of rounding.
_EXACT = decimal.Context(prec=100, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
_DISPLAY = Decimal("1e-10")


@dataclass(frozen=True, slots=True)
class SmaCrossParams:
    """Parameters of ``sma_cross``."""

    fast: int = 5
    slow: int = 20
    qty: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        if not 1 <= self.fast < self.slow:
            raise ValueError(f"sma_cross needs 1 <= fast < slow, got fast={self.fast} slow={self.slow}")
        if not (self.qty.is_finite() and self.qty > 0):
            raise ValueError(f"sma_cross needs qty > 0, got {self.qty}")


@dataclass(frozen=True, slots=True)
class Cross:
    """A crossing at one quote and the order it calls for."""

    direction: Literal["up", "down"]
    fast: Decimal  # mean, rounded for display
    slow: Decimal
    target: Decimal
    order_qty: Decimal  # signed: > 0 buy, < 0 sell, 0 nothing to do


class SmaCrossState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Everything ``SmaCross`` needs to continue exactly where it was (for snapshots)."""

    window: list[Decimal]
    prev_relation: int | None
    target: Decimal
    quotes_seen: int


@dataclass(slots=True)
class SmaCross:
    """State of ``sma_cross`` for one symbol."""

    params: SmaCrossParams
    # Doubled mids (bid + ask): exact, and the factor 2 cancels in every comparison.
    _window: deque[Decimal] = field(init=False)
    _sum_fast: Decimal = field(init=False, default=Decimal(0))
    _sum_slow: Decimal = field(init=False, default=Decimal(0))
    _prev_relation: int | None = field(init=False, default=None)  # sign(fast - slow) at the previous quote
    target: Decimal = field(init=False, default=Decimal(0))
    quotes_seen: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._window = deque(maxlen=self.params.slow)

    def on_quote(self, bid: Decimal, ask: Decimal) -> Cross | None:
        """Feed one quote; return the crossing it makes, if any.

        All or nothing: if the arithmetic cannot be exact (decimal.Inexact and friends, all
        ArithmeticError), it raises before any state changed, so the quote can be rejected on its own.
        """
        p = self.params
        ctx = _EXACT
        window = self._window
        mid2 = ctx.add(bid, ask)
        sum_slow = ctx.add(ctx.subtract(self._sum_slow, window[0]) if len(window) == p.slow else self._sum_slow, mid2)
        sum_fast = ctx.add(
            ctx.subtract(self._sum_fast, window[-p.fast]) if len(window) >= p.fast else self._sum_fast, mid2
        )
        diff = None
        if len(window) + 1 >= p.slow:
            # sign(fast_mean - slow_mean) == sign(sum_fast * slow - sum_slow * fast): both counts are > 0.
            diff = ctx.subtract(ctx.multiply(sum_fast, p.slow), ctx.multiply(sum_slow, p.fast))

        window.append(mid2)
        self._sum_slow, self._sum_fast = sum_slow, sum_fast
        self.quotes_seen += 1
        if diff is None:
            return None
        relation = (diff > 0) - (diff < 0)
        prev, self._prev_relation = self._prev_relation, relation
        if prev is None:
            return None
        if prev <= 0 < relation:
            direction: Literal["up", "down"] = "up"
            new_target = p.qty
        elif prev >= 0 > relation:
            direction = "down"
            new_target = -p.qty
        else:
            return None
        order_qty = new_target - self.target
        self.target = new_target
        return Cross(
            direction=direction,
            fast=(self._sum_fast / (2 * p.fast)).quantize(_DISPLAY),
            slow=(self._sum_slow / (2 * p.slow)).quantize(_DISPLAY),
            target=new_target,
            order_qty=order_qty,
        )

    def state(self) -> SmaCrossState:
        """The state, to snapshot."""
        return SmaCrossState(
            window=list(self._window),
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
        strategy._window.extend(state.window)
        ctx = _EXACT
        for value in state.window:
            strategy._sum_slow = ctx.add(strategy._sum_slow, value)
        for value in list(state.window)[-params.fast :]:
            strategy._sum_fast = ctx.add(strategy._sum_fast, value)
        strategy._prev_relation = state.prev_relation
        strategy.target = state.target
        strategy.quotes_seen = state.quotes_seen
        return strategy
