"""Positions: the average-cost method in exact arithmetic, checked against an independent reference."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrr.execution.positions import WIRE_PLACES, Position, to_decimal

D = Decimal
F = Fraction


def _position(*fills: tuple[str, str, str] | tuple[str, str, str, str]) -> Position:
    position = Position("BTCUSDT")
    for side, qty, price, *fee in fills:
        position.apply_fill(side, D(qty), D(price), D(fee[0]) if fee else D(0))  # type: ignore[arg-type]
    return position


# -- worked examples -----------------------------------------------------------------------------------


def test_new_position_is_flat_with_nothing_realized():
    position = Position("BTCUSDT")
    assert (position.qty, position.avg_price, position.realized_pnl, position.fills) == (0, 0, 0, 0)
    assert position.unrealized_pnl(D(123)) == 0


def test_first_buy_opens_long_at_the_fill_price():
    position = _position(("buy", "2", "100"))
    assert (position.qty, position.avg_price, position.realized_pnl) == (2, 100, 0)


def test_second_buy_moves_the_average_to_the_quantity_weighted_mean():
    position = _position(("buy", "1", "100"), ("buy", "3", "104"))
    assert position.qty == 4
    assert position.avg_price == 103  # (1 * 100 + 3 * 104) / 4
    assert position.realized_pnl == 0


def test_average_price_is_an_exact_fraction_not_a_rounded_decimal():
    position = _position(("buy", "1", "100"), ("buy", "2", "101"))
    assert position.avg_price == F(302, 3)


def test_partial_close_realizes_pnl_at_the_average_and_keeps_the_average():
    position = _position(("buy", "1", "100"), ("buy", "3", "104"), ("sell", "1", "110"))
    assert position.qty == 3
    assert position.avg_price == 103
    assert position.realized_pnl == 7  # (110 - 103) * 1


def test_full_close_realizes_everything_and_resets_the_average():
    position = _position(("buy", "2", "100"), ("sell", "2", "95"))
    assert (position.qty, position.avg_price, position.realized_pnl) == (0, 0, -10)


def test_fill_through_zero_closes_the_long_and_opens_the_rest_short_at_the_fill_price():
    position = _position(("buy", "2", "100"), ("sell", "5", "110"))
    assert position.qty == -3
    assert position.avg_price == 110
    assert position.realized_pnl == 20  # only the 2 closed realize


def test_short_side_mirrors_the_long_side():
    position = _position(("sell", "1", "100"), ("sell", "3", "104"), ("buy", "1", "98"))
    assert position.qty == -3
    assert position.avg_price == 103
    assert position.realized_pnl == 5  # (103 - 98) * 1: a short gains when the price falls


def test_short_flipped_long_opens_the_rest_at_the_fill_price():
    position = _position(("sell", "2", "100"), ("buy", "3", "105"))
    assert (position.qty, position.avg_price, position.realized_pnl) == (1, 105, -10)


def test_fees_reduce_realized_pnl_on_opening_and_closing_fills():
    position = _position(("buy", "2", "100", "0.2"), ("sell", "2", "101", "0.202"))
    assert position.realized_pnl == D("1.598")  # 2 - 0.2 - 0.202
    assert position.qty == 0


def test_fee_on_an_opening_fill_does_not_move_the_average():
    position = _position(("buy", "2", "100", "5"))
    assert position.avg_price == 100
    assert position.realized_pnl == -5


def test_unrealized_pnl_of_long_and_short_at_a_mark():
    assert _position(("buy", "2", "100")).unrealized_pnl(D("101.5")) == 3
    assert _position(("sell", "2", "100")).unrealized_pnl(D("101.5")) == -3


def test_fills_are_counted():
    assert _position(("buy", "1", "1"), ("sell", "2", "1"), ("buy", "1", "1")).fills == 3


@pytest.mark.parametrize("qty", ["0", "-1"])
def test_fill_with_non_positive_qty_raises_and_changes_nothing(qty):
    position = _position(("buy", "1", "100"))
    with pytest.raises(ValueError, match="fill qty must be > 0"):
        position.apply_fill("buy", D(qty), D(100))
    assert (position.qty, position.avg_price, position.fills) == (1, 100, 1)


def test_decimal_prices_are_taken_exactly():
    position = _position(("buy", "0.1", "0.1"), ("buy", "0.2", "0.2"), ("sell", "0.3", "0.3"))
    assert position.qty == 0
    assert position.avg_price == 0
    assert position.realized_pnl == D("0.04")  # -0.01 - 0.04 + 0.09, with no binary-float residue


# -- property: same answers as an independent reference ------------------------------------------------


@dataclass
class _Reference:
    """Average cost kept as a signed cost basis (qty * avg) rather than as an average price."""

    qty: Fraction = Fraction(0)
    cost: Fraction = Fraction(0)
    realized: Fraction = Fraction(0)

    def fill(self, signed: Fraction, price: Fraction, fee: Fraction) -> None:
        self.realized -= fee
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            self.qty += signed
            self.cost += signed * price
            return
        average = self.cost / self.qty
        closing = min(abs(signed), abs(self.qty)) * (1 if signed > 0 else -1)
        self.realized -= closing * (price - average)
        self.qty += closing
        self.cost = average * self.qty
        rest = signed - closing
        if rest:
            self.qty, self.cost = rest, rest * price

    @property
    def average(self) -> Fraction:
        return self.cost / self.qty if self.qty else Fraction(0)


decimals = st.decimals(min_value=D("0.001"), max_value=D(1000), places=3, allow_nan=False, allow_infinity=False)
fees = st.decimals(min_value=D(0), max_value=D(5), places=4, allow_nan=False, allow_infinity=False)
fills = st.lists(st.tuples(st.sampled_from(["buy", "sell"]), decimals, decimals, fees), max_size=30)


@settings(deadline=None)
@given(fills=fills, mark=decimals)
def test_position_agrees_with_a_reference_implementation_over_any_fills(fills, mark):
    position, reference = Position("BTCUSDT"), _Reference()
    for side, qty, price, fee in fills:
        position.apply_fill(side, qty, price, fee)
        reference.fill(F(qty) if side == "buy" else -F(qty), F(price), F(fee))
        assert position.qty == reference.qty
        assert position.avg_price == reference.average
        assert position.realized_pnl == reference.realized
    assert position.fills == len(fills)


@settings(deadline=None)
@given(fills=fills, mark=decimals)
def test_realized_plus_unrealized_equals_the_cash_flow_marked_to_market(fills, mark):
    position = Position("BTCUSDT")
    for side, qty, price, fee in fills:
        position.apply_fill(side, qty, price, fee)
    signed = [(F(q) if side == "buy" else -F(q), F(p), F(fee)) for side, q, p, fee in fills]
    cash = sum((-s * p - fee for s, p, fee in signed), F(0))
    net_qty = sum((s for s, _, _ in signed), F(0))
    assert position.qty == net_qty
    assert position.realized_pnl + position.unrealized_pnl(mark) == cash + net_qty * F(mark)


@settings(deadline=None)
@given(fills=fills)
def test_average_price_of_an_open_position_lies_within_its_fill_prices(fills):
    position = Position("BTCUSDT")
    for side, qty, price, fee in fills:
        position.apply_fill(side, qty, price, fee)
    if position.qty:
        prices = [F(p) for _, _, p, _ in fills]
        assert min(prices) <= position.avg_price <= max(prices)
    else:
        assert position.avg_price == 0


# -- to_decimal ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (F(0), "0"),
        (F(7), "7"),
        (F(-7), "-7"),
        (F(1, 2), "0.5"),
        (F(1, 8), "0.125"),
        (F(-3, 4), "-0.75"),
        (F(302, 3) * 3, "302"),
        (F(1, 10**12), "1E-12"),
        (F(123456789, 10**12), "0.000123456789"),
        (F(10**40 + 1), str(10**40 + 1)),
        (F(D("0.031035000000000004")), "0.031035000000"),  # 18 places: rounded, at 12
    ],
)
def test_to_decimal_uses_the_fewest_places_that_hold_the_value(value, expected):
    assert to_decimal(value) == D(expected)
    assert str(to_decimal(value)) == str(D(expected))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (F(1, 3), "0.333333333333"),
        (F(2, 3), "0.666666666667"),
        (F(-2, 3), "-0.666666666667"),
        (F(5, 10**13), "0E-12"),  # exactly half a unit: to even (0)
        (F(15, 10**13), "2E-12"),  # 1.5 units: to even (2)
        (F(25, 10**13), "2E-12"),  # 2.5 units: to even (2)
        (F(-25, 10**13), "-2E-12"),
        (F(35, 10**13), "4E-12"),
    ],
)
def test_to_decimal_of_a_value_needing_more_places_rounds_half_even_at_twelve(value, expected):
    assert WIRE_PLACES == 12
    result = to_decimal(value)
    assert result == D(expected)
    assert result.as_tuple().exponent == -12


@given(st.decimals(min_value=D("-1e15"), max_value=D("1e15"), places=12, allow_nan=False, allow_infinity=False))
def test_to_decimal_of_any_value_with_at_most_twelve_places_is_exact(value):
    assert to_decimal(F(value)) == value


@given(st.fractions(max_denominator=10**6))
def test_to_decimal_is_within_half_a_unit_of_the_twelfth_place(value):
    assert abs(F(to_decimal(value)) - value) <= F(1, 2 * 10**12)


def _to_decimal_by_definition(value: Fraction) -> Decimal:
    """The fewest places, tried one after the other; else rounded half-even at WIRE_PLACES."""
    for places in range(WIRE_PLACES + 1):
        scaled = value * 10**places
        if scaled.denominator == 1:
            break
    return D(f"{round(scaled)}E-{places}")


@given(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=0, max_value=16),
    st.integers(min_value=0, max_value=16),
    st.sampled_from([1, 1, 1, 3, 7, 9, 11, 10**6 + 3]),
)
def test_to_decimal_gives_the_same_digits_and_places_as_trying_each_number_of_places(numerator, twos, fives, other):
    value = F(numerator, 2**twos * 5**fives * other)
    expected = _to_decimal_by_definition(value)
    assert to_decimal(value).as_tuple() == expected.as_tuple()
