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
    numerator, denominator = value.numerator, value.denominator
    # The fewest places that hold n/d are those of the power of ten d divides: d = 2^a * 5^b needs max(a, b).
    # Counted on integers: the same answer as trying 10^0, 10^1, ... in turn, at a fraction of the cost.
    twos = (denominator & -denominator).bit_length() - 1
    rest = denominator >> twos
    fives = 0
    while rest % 5 == 0 and fives <= WIRE_PLACES:
        rest //= 5
        fives += 1
    places = max(twos, fives)
    if rest == 1 and places <= WIRE_PLACES:
        units = numerator * (10**places // denominator)
    else:  # not a decimal of WIRE_PLACES places or fewer: rounded half-even at WIRE_PLACES, as round() does
        places = WIRE_PLACES
        units, remainder = divmod(numerator * 10**places, denominator)
        if 2 * remainder > denominator or (2 * remainder == denominator and units % 2):
            units += 1
    return Decimal(f"{units}E-{places}")  # from text: exact at any size


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
        # Exact, on the integers of each fraction: a Fraction operator builds and normalises an object per
        # step, which made this the costliest part of a fill. Each field is normalised once, when stored.
        sn, sd = qty.as_integer_ratio()  # |signed|, a positive decimal
        pn, pd = price.as_integer_ratio()
        held = self.qty
        qn, qd = held.numerator, held.denominator
        if fee:
            self.realized_pnl -= Fraction(fee)
        self.fills += 1
        buy = side == "buy"
        if qn == 0 or (qn > 0) == buy:
            # Adding: the average moves to (avg * |held| + price * qty) / |held + qty|.
            avg = self.avg_price
            an, ad = avg.numerator, avg.denominator
            total = abs(qn) * sd + sn * qd  # |held + qty| * qd * sd
            self.avg_price = Fraction(an * abs(qn) * pd * sd + pn * sn * ad * qd, ad * pd * total)
            self.qty = Fraction(total if buy else -total, qd * sd)
            return
        # Reducing: (price - avg) * closed realized (negated for a short), the average kept; what crosses zero
        # opens at the fill's price.
        direction = 1 if qn > 0 else -1
        avg = self.avg_price
        an, ad = avg.numerator, avg.denominator
        closes_all = sn * qd >= abs(qn) * sd  # qty >= |held|
        cn, cd = (abs(qn), qd) if closes_all else (sn, sd)
        realized = self.realized_pnl
        rn, rd = realized.numerator, realized.denominator
        gain = (pn * ad - an * pd) * cn * direction  # / (pd * ad * cd)
        self.realized_pnl = Fraction(rn * pd * ad * cd + gain * rd, rd * pd * ad * cd)
        signed = sn if buy else -sn
        self.qty = Fraction(qn * sd + signed * qd, qd * sd)
        if self.qty == 0:
            self.avg_price = Fraction(0)
        elif (self.qty > 0) != (direction > 0):
            self.avg_price = Fraction(pn, pd)  # flipped: the remainder opened at this fill's price

    def unrealized_pnl(self, mark: Decimal) -> Fraction:
        """PnL of the open quantity valued at ``mark``."""
        return (Fraction(mark) - self.avg_price) * self.qty
