"""Positions per symbol, average-cost method, in exact arithmetic (execution, the strategy context, the backtest)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from rrr.shared.messages import Side

# Average prices and PnL are exact fractions internally; on the wire they have at most this many decimal
# places, rounded half-even, which is exact whenever the true value has that many places or fewer.
WIRE_PLACES = 12


def to_decimal(value: Fraction) -> Decimal:
    """``value`` as a Decimal with the fewest places (at most WIRE_PLACES) that hold it, else rounded."""
    for places in range(WIRE_PLACES + 1):
        scaled = value * 10**places
        if scaled.denominator == 1:
            break
    return Decimal(f"{round(scaled)}E-{places}")  # from text: exact at any size


@dataclass(slots=True)
class Position:
    """A symbol's signed quantity, average entry price and realized PnL.

    Average-cost method: adding to a position moves the average price to the quantity-weighted mean;
    reducing it realizes (fill price - average) * closed quantity (negated for shorts) and leaves the
    average unchanged; a fill that crosses zero closes the old side and opens the rest at the fill price.
    """

    symbol: str
    qty: Fraction = Fraction(0)
    avg_price: Fraction = Fraction(0)
    realized_pnl: Fraction = Fraction(0)
    fills: int = 0

    def apply_fill(self, side: Side, qty: Decimal, price: Decimal, fee: Decimal = Decimal(0)) -> None:
        """Apply one fill; ``fee`` is charged to realized PnL."""
        if qty <= 0:
            raise ValueError(f"fill qty must be > 0, got {qty}")
        signed = Fraction(qty) if side == "buy" else -Fraction(qty)
        px = Fraction(price)
        self.realized_pnl -= Fraction(fee)
        self.fills += 1
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            total = self.qty + signed
            self.avg_price = (self.avg_price * abs(self.qty) + px * abs(signed)) / abs(total)
            self.qty = total
            return
        closed = min(abs(signed), abs(self.qty))
        direction = 1 if self.qty > 0 else -1
        self.realized_pnl += (px - self.avg_price) * closed * direction
        self.qty += signed
        if self.qty == 0:
            self.avg_price = Fraction(0)
        elif (self.qty > 0) != (direction > 0):
            self.avg_price = px  # flipped: the remainder opened at this fill's price

    def unrealized_pnl(self, mark: Decimal) -> Fraction:
        """PnL of the open quantity valued at ``mark``."""
        return (Fraction(mark) - self.avg_price) * self.qty
