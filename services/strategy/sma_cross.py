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

# Sums of a few thousand prices of up to ~20 digits, times window lengths: far inside 60 digits. If that
# were ever exceeded, Inexact raises instead of rounding.
_EXACT = decimal.Context(prec=60, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
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
        """Feed one quote; return the crossing it makes, if any."""
        p = self.params
        ctx = _EXACT
        mid2 = ctx.add(bid, ask)
        window = self._window
        if len(window) == p.slow:
            self._sum_slow = ctx.subtract(self._sum_slow, window[0])
        if len(window) >= p.fast:
            self._sum_fast = ctx.subtract(self._sum_fast, window[-p.fast])
        window.append(mid2)
        self._sum_slow = ctx.add(self._sum_slow, mid2)
        self._sum_fast = ctx.add(self._sum_fast, mid2)
        self.quotes_seen += 1
        if len(window) < p.slow:
            return None

        # sign(fast_mean - slow_mean) == sign(sum_fast * slow - sum_slow * fast): both counts are positive.
        diff = ctx.subtract(ctx.multiply(self._sum_fast, p.slow), ctx.multiply(self._sum_slow, p.fast))
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
