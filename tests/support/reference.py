"""An independent, deliberately plain reference of what the system must compute from a quote file.

Written from the definitions alone, with ``fractions.Fraction`` and no code shared with the services, so
that a test comparing the two catches a mistake in either.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ExpectedOrder:
    """An order the strategy must send and the fill the paper venue must give it."""

    line: int  # physical line of the triggering quote in the file
    side: str
    qty: Fraction
    price: Fraction


@dataclass(slots=True)
class ExpectedPosition:
    """Average-cost position after all fills."""

    qty: Fraction = Fraction(0)
    avg_price: Fraction = Fraction(0)
    realized_pnl: Fraction = Fraction(0)
    fills: int = 0


@dataclass(slots=True)
class Expected:
    """Everything a replay of one single-symbol file must produce."""

    quotes: int = 0
    crosses: int = 0
    quote_lines: list[int] = field(default_factory=list)
    cross_lines: list[int] = field(default_factory=list)
    orders: list[ExpectedOrder] = field(default_factory=list)
    position: ExpectedPosition = field(default_factory=ExpectedPosition)


def sma_cross_expectations(path: Path, fast: int = 5, slow: int = 20, qty: Fraction = Fraction(1)) -> Expected:
    """Crosses, orders, fills and the final position for ``sma_cross`` on a one-symbol quote file."""
    expected = Expected()
    mids: list[Fraction] = []
    prev: tuple[Fraction, Fraction] | None = None
    target = Fraction(0)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            line = reader.line_num
            bid, ask = Fraction(row["bid"]), Fraction(row["ask"])
            expected.quotes += 1
            expected.quote_lines.append(line)
            mids.append((bid + ask) / 2)
            if len(mids) < slow:
                continue
            now = (sum(mids[-fast:], Fraction(0)) / fast, sum(mids[-slow:], Fraction(0)) / slow)
            if prev is not None:
                new_target = None
                if prev[0] <= prev[1] and now[0] > now[1]:
                    new_target = qty
                elif prev[0] >= prev[1] and now[0] < now[1]:
                    new_target = -qty
                if new_target is not None:
                    expected.crosses += 1
                    expected.cross_lines.append(line)
                    change = new_target - target
                    target = new_target
                    if change:
                        side = "buy" if change > 0 else "sell"
                        price = ask if side == "buy" else bid
                        expected.orders.append(ExpectedOrder(line, side, abs(change), price))
                        _apply(expected.position, change, price)
            prev = now
    return expected


def _apply(position: ExpectedPosition, signed_qty: Fraction, price: Fraction) -> None:
    position.fills += 1
    old = position.qty
    new = old + signed_qty
    if old == 0 or (old > 0) == (signed_qty > 0):
        position.avg_price = (position.avg_price * abs(old) + price * abs(signed_qty)) / abs(new)
    else:
        closed = min(abs(old), abs(signed_qty))
        position.realized_pnl += (price - position.avg_price) * closed * (1 if old > 0 else -1)
        if new == 0:
            position.avg_price = Fraction(0)
        elif (new > 0) != (old > 0):
            position.avg_price = price
    position.qty = new
