"""Fixed-point units (rrr.shared.fixed): exact both ways, and every value outside the bounds refused clearly."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrr.shared.errors import RRRError
from rrr.shared.fixed import MAX_PLACES, MAX_UNITS, FixedPointError, rescale, to_decimal, to_units

units = st.integers(min_value=-MAX_UNITS, max_value=MAX_UNITS)
places = st.integers(min_value=0, max_value=MAX_PLACES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.1215", (11215, 4)),
        ("1.10", (110, 2)),  # the places as written
        ("0", (0, 0)),
        ("-0", (0, 0)),
        ("0.000000000000000001", (1, 18)),
        ("1000000000000000000", (MAX_UNITS, 0)),
        ("1.000000000000000000", (MAX_UNITS, 18)),
        ("1E+3", (1000, 0)),  # an exponent: str() is not plain notation
        ("1.5E+3", (1500, 0)),
        ("1E-7", (1, 7)),
        ("1.0E-7", (10, 8)),
        ("0.25000000000000000000", (25 * 10**16, 18)),  # 20 places: the zeros past 18 dropped
        ("1.50000000000000000000", (15 * 10**16, 17)),  # and then as many as 10**18 units need
        ("100.00000000000000000", (MAX_UNITS, 16)),
        ("0E-30", (0, 28)),
    ],
)
def test_to_units_gives_the_exact_units_and_places_of_a_value_within_the_bounds(
    text: str, expected: tuple[int, int]
) -> None:
    assert to_units(Decimal(text)) == expected


def test_to_units_takes_negative_values_only_when_signed() -> None:
    assert to_units(Decimal("-1.25"), signed=True) == (-125, 2)
    assert to_units(Decimal("-1E+18"), signed=True) == (-MAX_UNITS, 0)
    with pytest.raises(FixedPointError, match=r"^price: expected a number >= 0, got -1.25$"):
        to_units(Decimal("-1.25"), name="price")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NaN", "a finite number"),
        ("sNaN", "a finite number"),
        ("-Infinity", "a finite number"),
        ("1E+19", "a magnitude of at most 10\\*\\*18"),
        ("1E+100000", "a magnitude of at most 10\\*\\*18"),
        ("1000000000000000001", "at most 10\\*\\*18 units of 10\\*\\*-0"),
        ("12345678901234567.89", "at most 10\\*\\*18 units of 10\\*\\*-2"),
        ("1E-29", "at most 28 decimal places"),
        ("1E-100000", "at most 28 decimal places"),
        ("1.0000000000000000001", "at most 10\\*\\*18 units of 10\\*\\*-19"),
        ("0." + "1" * 100_000, "at most 28 decimal places"),  # more digits than int() reads from text
    ],
)
def test_to_units_refuses_a_value_outside_the_bounds_saying_what_it_expected(text: str, expected: str) -> None:
    with pytest.raises(FixedPointError, match=f"^bid: expected {expected}, got ") as info:
        to_units(Decimal(text), signed=True, name="bid")
    assert len(str(info.value)) < 200  # a value of 100,000 digits is quoted in 80


def test_fixed_point_errors_are_value_errors_of_the_project() -> None:
    # ValueError: msgspec reports one raised while decoding as a validation error of the message.
    assert issubclass(FixedPointError, ValueError)
    assert issubclass(FixedPointError, RRRError)


@given(units, places)
def test_to_units_reads_back_exactly_what_to_decimal_wrote(value_units: int, value_places: int) -> None:
    value = to_decimal(value_units, value_places)
    assert Fraction(value) == Fraction(value_units, 10**value_places)
    got_units, got_places = to_units(value, signed=True)
    assert Fraction(got_units, 10**got_places) == Fraction(value)
    assert got_places == value_places


# Any decimal, and many near the bounds: up to 22 digits with up to 24 places, trailing zeros included.
decimals = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    st.builds(lambda c, e: Decimal(f"{c}E{e}"), st.integers(-(10**22), 10**22), st.integers(-24, 4)),
)


@given(decimals)
def test_to_units_is_exact_or_refuses_whatever_the_decimal(value: Decimal) -> None:
    exact = Fraction(value)
    # Independently: the fewest places that hold the value exactly, and its units there.
    fewest = next((p for p in range(MAX_PLACES + 1) if (exact * 10**p).denominator == 1), None)
    fits = fewest is not None and abs(exact * 10**fewest) <= MAX_UNITS
    if not fits:
        with pytest.raises(FixedPointError):
            to_units(value, signed=True)
        return
    got_units, got_places = to_units(value, signed=True)
    assert Fraction(got_units, 10**got_places) == exact
    assert got_places <= MAX_PLACES
    assert abs(got_units) <= MAX_UNITS


def test_to_decimal_never_rounds_however_many_digits() -> None:
    # scaleb() would round this to the context's 28 digits.
    big = 12345678901234567890123456789012345678901
    assert to_decimal(big, 18) == Decimal("12345678901234567890123.456789012345678901")
    assert to_decimal(5, 0) == Decimal(5)


@settings(deadline=None)
@given(units, places, places)
def test_rescale_up_keeps_the_value_exactly(value_units: int, a: int, b: int) -> None:
    low, high = min(a, b), max(a, b)
    assert Fraction(rescale(value_units, low, high), 10**high) == Fraction(value_units, 10**low)


def test_rescale_down_is_refused() -> None:
    with pytest.raises(FixedPointError, match=r"^new_places: expected at least places \(4\)"):
        rescale(11215, 4, 3)
