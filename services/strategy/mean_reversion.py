"""The ``mean_reversion`` strategy: trade the z-score of the quote mid over a window, in exact arithmetic.

Per symbol, over the last ``window`` mids m_1..m_N (the current one included, defined once N quotes were
seen): mean = S / N with S = sum m_i, population variance V = Q / N - mean**2 with Q = sum m_i**2, and
z = (m_N - mean) / sqrt(V). Rules, in this order, at each quote where V > 0:

- z >= entry: target -qty (the mid is far above its mean: sell it);
- z <= -entry: target +qty;
- holding short and z <= exit, or holding long and z >= -exit: target 0 (back near the mean).

A change of target makes a signal (``up`` when the target rises, ``down`` when it falls; ``fast`` is the
mid, ``slow`` the mean, both rounded for display) and an order for the difference.

Exact, never float: the mids are ``bid + ask`` in integer units (twice the mid, 10**-places each: both
factors cancel in z), and with d = N * m_N - S and W = N * Q - S**2 (= N**2 * V, >= 0), z = d / sqrt(W).
z is compared with a threshold k = a / b (a Decimal, taken exactly as a fraction) by comparing squares in
integers: z >= k for k >= 0 is d >= 0 and d**2 * b**2 >= a**2 * W; for k < 0, z >= k is d >= 0 or
d**2 * b**2 <= a**2 * W. No square root is ever taken and nothing rounds.
"""

from __future__ import annotations

import decimal
from collections import deque
from decimal import Decimal
from fractions import Fraction
from typing import Annotated

import msgspec

from rrr.shared.messages import QuoteRow
from rrr.strategy.api import Params, Strategy

_DISPLAY = Decimal("1e-10")
# Wide enough to show any mean to 10 places (as sma_cross's display context).
_DISPLAY_CONTEXT = decimal.Context(prec=40)


class MeanReversionParams(Params, frozen=True, kw_only=True):
    """Parameters of ``mean_reversion``."""

    window: Annotated[int, msgspec.Meta(ge=2, le=1_000_000, description="mids in the z-score's window")] = 50
    entry: Annotated[Decimal, msgspec.Meta(description="|z| at which a position opens, > 0")] = Decimal(2)
    exit: Annotated[Decimal, msgspec.Meta(description="z (towards the mean) at which it closes, 0 <= exit < entry")] = (
        Decimal("0.5")
    )
    qty: Annotated[Decimal, msgspec.Meta(description="position size, > 0")] = Decimal(1)

    def __post_init__(self) -> None:
        for name in ("entry", "exit", "qty"):
            if not getattr(self, name).is_finite():
                raise ValueError(f"mean_reversion needs a finite {name}")
        if not self.entry > 0:
            raise ValueError(f"mean_reversion needs entry > 0, got {self.entry}")
        if not 0 <= self.exit < self.entry:
            raise ValueError(f"mean_reversion needs 0 <= exit < entry, got exit={self.exit} entry={self.entry}")
        if not self.qty > 0:
            raise ValueError(f"mean_reversion needs qty > 0, got {self.qty}")


class ZState(msgspec.Struct, array_like=True):
    """One symbol's window (mids doubled, in units of 10**-places) and target: all ``mean_reversion`` keeps."""

    window: list[int] = msgspec.field(default_factory=list)
    places: int = 0
    target: Decimal = Decimal(0)


def z_compare(d: int, w: int, k: Fraction) -> int:
    """The sign of z - k where z = d / sqrt(w) (w > 0), exactly, comparing squares in integers."""
    a, b = k.numerator, k.denominator
    if k >= 0:
        if d < 0:
            return -1
        lhs, rhs = d * d * b * b, a * a * w
        return (lhs > rhs) - (lhs < rhs)
    if d >= 0:
        return 1
    lhs, rhs = a * a * w, d * d * b * b  # both negative: z > k when |z| < |k|
    return (lhs > rhs) - (lhs < rhs)


class MeanReversion(Strategy[MeanReversionParams]):
    """``mean_reversion``: see the module's docstring."""

    def on_start(self) -> None:
        self.books: dict[str, tuple[ZState, deque[int], list[int]]] = {}
        p = self.params
        self._entry, self._exit = Fraction(p.entry), Fraction(p.exit)

    def _book(self, symbol: str) -> tuple[ZState, deque[int], list[int]]:
        book = self.books.get(symbol)
        if book is None:
            state = ZState()
            book = self.books[symbol] = (state, deque(maxlen=self.params.window), [0, 0])
        return book

    def on_quote(self, quote: QuoteRow) -> None:
        state, window, sums = self._book(quote.symbol)
        mid2 = quote.bid + quote.ask
        if quote.places > state.places:
            factor = 10 ** (quote.places - state.places)
            window = deque((m * factor for m in window), maxlen=window.maxlen)
            self.books[quote.symbol] = (state, window, sums)
            sums[0] *= factor
            sums[1] *= factor * factor
            state.places = quote.places
        elif quote.places < state.places:
            mid2 *= 10 ** (state.places - quote.places)
        n = self.params.window
        if len(window) == n:
            old = window[0]
            sums[0] -= old
            sums[1] -= old * old
        window.append(mid2)
        sums[0] += mid2
        sums[1] += mid2 * mid2
        if len(window) < n:
            return
        s, q = sums
        w = n * q - s * s
        if w <= 0:
            return  # every mid equal: no z-score
        d = n * mid2 - s
        target = state.target
        qty = self.params.qty
        if z_compare(d, w, self._entry) >= 0:
            new = -qty
        elif z_compare(d, w, -self._entry) <= 0:
            new = qty
        elif (target < 0 and z_compare(d, w, self._exit) <= 0) or (target > 0 and z_compare(d, w, -self._exit) >= 0):
            new = Decimal(0)
        else:
            return
        if new == target:
            return
        state.target = new
        ctx, scale = _DISPLAY_CONTEXT, 2 * 10**state.places
        self.ctx.signal(
            "up" if new > target else "down",
            new,
            fast=ctx.divide(Decimal(mid2), scale).quantize(_DISPLAY, context=ctx),
            slow=ctx.divide(Decimal(s), n * scale).quantize(_DISPLAY, context=ctx),
        )
        self.ctx.submit("buy" if new > target else "sell", abs(new - target))

    def snapshot(self) -> dict[str, ZState]:
        return {
            symbol: ZState(window=list(window), places=state.places, target=state.target)
            for symbol, (state, window, _) in self.books.items()
        }

    def restore(self, state: dict[str, ZState]) -> None:
        self.books = {}
        for symbol, saved in state.items():
            window = deque(saved.window, maxlen=self.params.window)
            sums = [sum(window), sum(m * m for m in window)]
            self.books[symbol] = (ZState(places=saved.places, target=saved.target), window, sums)

    state_type = dict[str, ZState]
