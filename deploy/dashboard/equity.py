"""The equity curve: the PnL of each strategy and of all together after each fill, built as fills come.

Each fill moves its strategy's cash (``-qty * price - fee`` for a buy) and position, and is the newest price
of its symbol: every open position is valued at the newest fill price of its symbol, so the curve is the
book marked at the prices it traded at. The last point of the curve and the ``strategy_positions`` view
(marked at the latest mid) differ by the half spread of the open positions.

The curve holds at most ``max_points`` points: past that, every other point goes (the newest stays), so it
keeps the whole history at a coarser step. The drawdown is tracked on every fill, never on the thinned
points.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

import msgspec

__all__ = ["EquityCurve", "EquityView", "FillRow"]

_ZERO = Decimal(0)


class FillRow(NamedTuple):
    """One row of ``fills``, with its strategy (the first part of its client order id, as the view has it)."""

    ts_event: int
    fill_id: str
    strategy: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal


class EquityView(msgspec.Struct, frozen=True, kw_only=True):
    """The curve as the page draws it: one time axis (event time, seconds), a column per series."""

    ts: list[float]
    names: list[str]
    # A column per name, ``None`` before that strategy's first fill; the first is the total.
    values: list[list[float | None]]
    fills: int
    max_drawdown: float
    more_strategies: int


@dataclass(slots=True)
class _Strategy:
    cash: Decimal = _ZERO
    value: Decimal = _ZERO  # its positions at the newest fill price of each symbol
    qty: dict[str, Decimal] = field(default_factory=dict)

    @property
    def equity(self) -> Decimal:
        return self.cash + self.value


def _drawn(value: Decimal) -> float:
    """A value as the chart draws it: 8 significant digits, far finer than a pixel, and short in JSON."""
    return float(f"{value:.8g}")


class EquityCurve:
    """The curve, fed the fills in ``(ts_event, fill_id)`` order by ``apply``."""

    def __init__(self, *, max_points: int = 1000, max_series: int = 12) -> None:
        if max_points < 4:
            raise ValueError(f"max_points: expected at least 4, got {max_points}")
        self.max_points = max_points
        self.max_series = max_series
        self.reset()

    def reset(self) -> None:
        """Forget every fill: the next ``apply`` starts the curve again."""
        self.applied = 0
        # The (ts_event, fill_id) of the last fill applied: the next read starts after it.
        self.cursor: tuple[int, str] | None = None
        self._strategies: dict[str, _Strategy] = {}
        self._price: dict[str, Decimal] = {}
        # Per symbol, the strategies holding it (their quantities are in _Strategy.qty).
        self._holders: dict[str, set[str]] = {}
        self._total = _ZERO
        self._peak = _ZERO
        self._max_drawdown = _ZERO
        self._names: list[str] = []  # the strategies drawn, in order of their first fill
        self._ts: list[float] = []
        self._columns: list[list[float | None]] = [[]]

    def apply(self, fills: Iterable[FillRow]) -> None:
        """Add ``fills``, each after ``cursor``, in order."""
        for fill in fills:
            self.add(fill)

    def add(self, fill: FillRow) -> None:
        """Add one fill, after ``cursor``."""
        price, previous = fill.price, self._price.get(fill.symbol)
        if previous is not None and price != previous:
            # A new price of the symbol revalues whoever holds it.
            for name in self._holders.get(fill.symbol, ()):
                moved = self._strategies[name].qty[fill.symbol] * (price - previous)
                self._strategies[name].value += moved
                self._total += moved
        self._price[fill.symbol] = price
        strategy = self._strategies.get(fill.strategy)
        if strategy is None:
            strategy = self._strategies[fill.strategy] = _Strategy()
            if len(self._names) < self.max_series:
                self._names.append(fill.strategy)
                self._columns.append([None] * len(self._ts))
        signed = fill.qty if fill.side == "buy" else -fill.qty
        cash = -signed * price - fill.fee
        held = strategy.qty.get(fill.symbol, _ZERO) + signed
        strategy.qty[fill.symbol] = held
        holders = self._holders.setdefault(fill.symbol, set())
        if held:
            holders.add(fill.strategy)
        else:
            holders.discard(fill.strategy)
        strategy.cash += cash
        strategy.value += signed * price
        self._total += cash + signed * price
        self._peak = max(self._peak, self._total)
        self._max_drawdown = max(self._max_drawdown, self._peak - self._total)
        self.applied += 1
        self.cursor = (fill.ts_event, fill.fill_id)
        self._point(fill.ts_event / 1e9)

    def _point(self, ts: float) -> None:
        # Every strategy drawn has filled by now (it is drawn from its first fill on).
        row: list[float | None] = [_drawn(self._total), *(_drawn(self._strategies[n].equity) for n in self._names)]
        if self._ts and self._ts[-1] == ts:
            # Fills at one instant are one point: the book after all of them.
            for column, value in zip(self._columns, row, strict=True):
                column[-1] = value
            return
        self._ts.append(ts)
        for column, value in zip(self._columns, row, strict=True):
            column.append(value)
        if len(self._ts) > self.max_points:
            self._thin()

    def _thin(self) -> None:
        """Keep every other point, and the newest."""
        last = len(self._ts) - 1
        keep = [*range(0, last, 2), last]
        self._ts = [self._ts[i] for i in keep]
        self._columns = [[column[i] for i in keep] for column in self._columns]

    @property
    def total(self) -> Decimal:
        """The PnL of all strategies after the last fill."""
        return self._total

    def view(self) -> EquityView:
        """The curve to draw."""
        return EquityView(
            ts=list(self._ts),
            names=["total", *self._names],
            values=[list(column) for column in self._columns],
            fills=self.applied,
            max_drawdown=float(self._max_drawdown),
            more_strategies=len(self._strategies) - len(self._names),
        )
