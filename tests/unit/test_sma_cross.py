"""The sma_cross semantics, checked against the independent exact reference (tests.support.reference)."""

from __future__ import annotations

import csv
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrr.shared.fixed import MAX_PLACES, MAX_UNITS, FixedPointError, to_decimal
from rrr.strategy.sma_cross import Cross, SmaCross, SmaCrossParams, SmaCrossState
from tests.support.reference import sma_cross, sma_means

DATA = Path(__file__).parents[1] / "data"


def _quotes(name: str) -> list[tuple[str, str]]:
    with (DATA / name).open(newline="") as fh:
        return [(row["bid"], row["ask"]) for row in csv.DictReader(fh)]


def _exact(prices: list[tuple[str, str]]) -> list[tuple[Fraction, Fraction]]:
    return [(Fraction(bid), Fraction(ask)) for bid, ask in prices]


def _reference(quotes: list[tuple[Fraction, Fraction]], fast: int = 5, slow: int = 20) -> list[tuple[int, str]]:
    return [(cross.index, cross.direction) for cross in sma_cross(quotes, fast=fast, slow=slow)]


def _display(value: Fraction) -> Decimal:
    # The exact mean rounded half-even to 10 places (round() on a Fraction is half-even).
    return Decimal(round(value * 10**10)).scaleb(-10)


def _equal_means(mids: list[Fraction] | list[float]) -> list[bool]:
    """At each quote where both means are defined, whether fast == slow."""
    return [means[0] == means[1] for means in sma_means(mids, fast=5, slow=20) if means is not None]


def _run(prices: list[tuple[str, str]], params: SmaCrossParams) -> list[tuple[int, str]]:
    strategy = SmaCross(params)
    out = []
    for i, (bid, ask) in enumerate(prices):
        cross = strategy.on_decimal_quote(Decimal(bid), Decimal(ask))
        if cross is not None:
            out.append((i, cross.direction))
    return out


def _units(bid: str, ask: str) -> tuple[int, int, int]:
    """The quote in units of 10**-places, places being the longer of the two as written (via Fraction)."""
    places = max(len(text.partition(".")[2]) for text in (bid, ask))
    scaled = [Fraction(text) * 10**places for text in (bid, ask)]
    assert all(value.denominator == 1 for value in scaled)
    return int(scaled[0]), int(scaled[1]), places


def _crosses(prices: list[tuple[str, str]], params: SmaCrossParams) -> list[tuple[int, Cross]]:
    """Every cross of the integer path, with its index."""
    strategy = SmaCross(params)
    out = []
    for i, (bid, ask) in enumerate(prices):
        cross = strategy.on_quote(*_units(bid, ask))
        if cross is not None:
            out.append((i, cross))
    return out


def _flat(mids: list[str]) -> list[tuple[str, str]]:
    return [(m, m) for m in mids]


FILES = ["eurusd_quotes_2020-01-01.csv", "usdjpy_quotes_2013-01-01.csv", "btcusdt_quotes_2021-01-08.csv"]


@pytest.mark.parametrize("name", FILES)
def test_sma_cross_on_real_quotes_matches_the_exact_reference(name: str) -> None:
    prices = _quotes(name)
    assert _run(prices, SmaCrossParams()) == _reference(_exact(prices))


@pytest.mark.parametrize("name", FILES)
def test_sma_cross_on_integer_units_makes_exactly_the_crosses_of_decimal_prices(name: str) -> None:
    # BTC/USDT mixes prices of 1 and 2 places (39433.6 and 39433.62): both paths scale them alike.
    prices = _quotes(name)
    strategy = SmaCross(SmaCrossParams())
    from_decimals = [(i, strategy.on_decimal_quote(Decimal(bid), Decimal(ask))) for i, (bid, ask) in enumerate(prices)]
    assert _crosses(prices, SmaCrossParams()) == [(i, cross) for i, cross in from_decimals if cross is not None]
    assert [(i, cross.direction) for i, cross in _crosses(prices, SmaCrossParams())] == _reference(_exact(prices))


@pytest.mark.parametrize("name", FILES)
def test_a_cross_shows_the_exact_means_rounded_half_even_and_orders_the_change_of_target(name: str) -> None:
    prices = _quotes(name)
    assert [
        (i, cross.fast, cross.slow, Fraction(cross.target), Fraction(cross.order_qty))
        for i, cross in _crosses(prices, SmaCrossParams())
    ] == [
        (cross.index, _display(cross.fast), _display(cross.slow), cross.target, cross.order_qty)
        for cross in sma_cross(_exact(prices), fast=5, slow=20)
    ]


def test_float_means_would_decide_crosses_differently_at_equal_averages_on_eurusd() -> None:
    # The reason the strategy is exact: on this file, float arithmetic gets "fast == slow" wrong at dozens
    # of quotes, and a cross depends on exactly that comparison.
    prices = _quotes("eurusd_quotes_2020-01-01.csv")
    exact = [(Fraction(b) + Fraction(a)) / 2 for b, a in prices]
    floats = [(float(b) + float(a)) / 2 for b, a in prices]
    disagree = sum(e != f for e, f in zip(_equal_means(exact), _equal_means(floats), strict=True))
    assert disagree >= 24
    assert _run(prices, SmaCrossParams()) == _reference(_exact(prices))


def test_no_cross_before_the_slow_mean_is_defined_at_the_previous_quote() -> None:
    params = SmaCrossParams(fast=2, slow=3)
    # Quote 3 (index 2) is the first with both means defined: it cannot be a cross, even though fast > slow.
    strategy = SmaCross(params)
    assert [strategy.on_quote(m, m, 0) for m in (1, 1, 5)] == [None, None, None]
    # Index 3: fast (5+1)/2 = 3 and slow 7/3, above as before: still no cross.
    assert strategy.on_quote(1, 1, 0) is None


def test_cross_up_from_equal_averages_counts_and_equal_now_does_not() -> None:
    params = SmaCrossParams(fast=1, slow=2)
    # mids 1,1 -> means equal (1 == 1); then 2: fast 2 > slow 1.5: a cross up from equality.
    assert _run(_flat(["1", "1", "2"]), params) == [(2, "up")]
    # Rising to equality is not a cross: 2,1 (fast 1 < slow 1.5), then 1 (fast 1 == slow 1).
    assert _run(_flat(["2", "1", "1"]), params) == []
    # Touching equality and going back down is no cross; going through it is.
    assert _run(_flat(["2", "1", "1", "0.5"]), params) == [(3, "down")]


def test_targets_and_order_quantities_follow_the_crosses() -> None:
    strategy = SmaCross(SmaCrossParams(fast=1, slow=2, qty=Decimal(3)))
    results = [strategy.on_quote(m, m, 0) for m in (1, 1, 2, 1, 3)]
    crosses = [(r.direction, r.target, r.order_qty) for r in results if r is not None]
    # up from flat: buy 3; down: sell 6 (from +3 to -3); up again: buy 6.
    assert crosses == [
        ("up", Decimal(3), Decimal(3)),
        ("down", Decimal(-3), Decimal(-6)),
        ("up", Decimal(3), Decimal(6)),
    ]


def test_repeated_cross_in_the_same_direction_orders_nothing() -> None:
    strategy = SmaCross(SmaCrossParams(fast=1, slow=2))
    # up at 2; back to equality (2,2)... fast 2 == slow 2; up again at 3: a cross up with the target already +1.
    results = [strategy.on_quote(m, m, 0) for m in (1, 1, 2, 2, 3)]
    crosses = [(r.direction, r.order_qty) for r in results if r is not None]
    assert crosses == [("up", Decimal(1)), ("up", Decimal(0))]


@pytest.mark.parametrize(("fast", "slow"), [(0, 5), (5, 5), (6, 5)])
def test_parameters_need_one_to_fast_below_slow(fast: int, slow: int) -> None:
    with pytest.raises(ValueError, match="fast < slow"):
        SmaCrossParams(fast=fast, slow=slow)


def test_a_strategy_rebuilt_from_its_snapshot_continues_exactly_like_the_original() -> None:
    prices = _quotes("eurusd_quotes_2020-01-01.csv")
    params = SmaCrossParams()
    original = SmaCross(params)
    for bid, ask in prices[:1234]:
        original.on_quote(*_units(bid, ask))
    restored = SmaCross.from_state(params, original.state())
    for bid, ask in prices[1234:]:
        assert restored.on_quote(*_units(bid, ask)) == original.on_quote(*_units(bid, ask))
    assert restored.state() == original.state()


def test_a_decimal_quote_beyond_the_fixed_point_bounds_raises_and_leaves_the_state_untouched() -> None:
    strategy = SmaCross(SmaCrossParams(fast=1, slow=2))
    strategy.on_decimal_quote(Decimal("1.1"), Decimal("1.2"))
    before = strategy.state()
    with pytest.raises(FixedPointError, match=r"^bid: expected a magnitude of at most 10\*\*18, got 1E\+100000$"):
        strategy.on_decimal_quote(Decimal("1E+100000"), Decimal("1E+100000"))
    too_many_digits = r"^ask: expected at most 10\*\*18 units of 10\*\*-19, got 1\.0000000000000000001$"
    with pytest.raises(FixedPointError, match=too_many_digits):
        strategy.on_decimal_quote(Decimal("1.1"), Decimal("1.0000000000000000001"))
    assert strategy.state() == before


def test_a_quote_with_more_places_scales_the_window_up_and_one_with_fewer_is_scaled_up_to_it() -> None:
    strategy = SmaCross(SmaCrossParams(fast=1, slow=3))
    strategy.on_quote(11, 11, 1)  # 1.1
    assert (strategy.state().window, strategy.state().places) == ([22], 1)
    strategy.on_quote(115, 115, 2)  # 1.15: the window moves to 2 places
    assert (strategy.state().window, strategy.state().places) == ([220, 230], 2)
    strategy.on_quote(1, 1, 0)  # 1: scaled up to the window's 2 places
    assert (strategy.state().window, strategy.state().places) == ([220, 230, 200], 2)


def test_crosses_over_prices_whose_places_change_mid_stream_match_the_exact_reference() -> None:
    mids = ["1.1", "1.15", "1.1", "1.2", "1.125", "1.1", "1.3", "1", "1.25", "1.25", "1.2", "1.3"]
    params = SmaCrossParams(fast=1, slow=2)
    crosses = [(i, cross.direction) for i, cross in _crosses(_flat(mids), params)]
    assert crosses == _reference(_exact(_flat(mids)), fast=1, slow=2)
    assert len(crosses) >= 4


@pytest.mark.parametrize(
    ("bid", "ask", "places", "message"),
    [
        (10**18 + 1, 10**18, 0, r"^bid: expected 1 to 10\*\*18 units, got 1000000000000000001 units of 10\*\*-0$"),
        (11, 10**30, 2, r"^ask: expected 1 to 10\*\*18 units, got 10{30} units of 10\*\*-2$"),
        (0, 1, 0, r"^bid: expected 1 to 10\*\*18 units, got 0 units"),
        (-11, 12, 1, r"^bid: expected 1 to 10\*\*18 units, got -11 units"),
        (11, 12, 29, r"^places: expected 0 to 28, got 29$"),
        (11, 12, -1, r"^places: expected 0 to 28, got -1$"),
    ],
)
def test_a_quote_beyond_the_bounds_is_refused_before_any_state_changed(
    bid: int, ask: int, places: int, message: str
) -> None:
    strategy, untouched = SmaCross(SmaCrossParams(fast=1, slow=2)), SmaCross(SmaCrossParams(fast=1, slow=2))
    for book in (strategy, untouched):
        book.on_quote(11, 12, 1)
    with pytest.raises(FixedPointError, match=message):
        strategy.on_quote(bid, ask, places)
    assert strategy.state() == untouched.state()
    # And it goes on as if the quote had never come.
    for quote in [(13, 14, 1), (9, 10, 1), (125, 126, 2)]:
        assert strategy.on_quote(*quote) == untouched.on_quote(*quote)


def test_prices_at_the_bounds_are_handled_and_their_means_shown() -> None:
    strategy = SmaCross(SmaCrossParams(fast=1, slow=2))
    # 10**18 at 0 places, the largest price: a mean of 10**18 has 29 digits at 10 places.
    crosses = [strategy.on_quote(bid, bid, 0) for bid in (10**18, 1, 10**18)]
    assert crosses[2] is not None
    assert (crosses[2].direction, crosses[2].fast, crosses[2].slow) == (
        "up",
        Decimal("1000000000000000000.0000000000"),
        Decimal("500000000000000000.5000000000"),
    )
    # 10**-18, the smallest, mixed with it.
    crosses = [strategy.on_quote(1, 1, 18), strategy.on_quote(10**18, 10**18, 0)]
    assert crosses[0] is not None
    assert (crosses[0].direction, crosses[0].fast, crosses[0].slow) == (
        "down",
        Decimal(0),
        Decimal("500000000000000000.0000000000"),
    )
    assert crosses[1] is not None
    assert crosses[1].direction == "up"
    assert strategy.state().places == 18


# Quotes as (bid units, ask units, places): small units at few places make equal means frequent, where
# exactness decides; units and places at the bounds check the scaling.
_small = st.tuples(st.integers(1, 30), st.integers(0, 4), st.integers(0, 3))
_large = st.tuples(st.integers(MAX_UNITS - 40, MAX_UNITS - 5), st.integers(0, 5), st.integers(15, MAX_PLACES))
_unit_quotes = st.lists(st.one_of(_small, _large).map(lambda q: (q[0], q[0] + q[1], q[2])), max_size=80)
_windows = st.integers(1, 4).flatmap(lambda fast: st.tuples(st.just(fast), st.integers(fast + 1, 7)))


@settings(deadline=None, max_examples=300)
@given(quotes=_unit_quotes, windows=_windows)
def test_integer_crosses_of_any_quotes_match_the_exact_reference(
    quotes: list[tuple[int, int, int]], windows: tuple[int, int]
) -> None:
    fast, slow = windows
    params = SmaCrossParams(fast=fast, slow=slow, qty=Decimal(2))
    strategy = SmaCross(params)
    got = [(i, strategy.on_quote(*quote)) for i, quote in enumerate(quotes)]
    exact = [(Fraction(bid, 10**places), Fraction(ask, 10**places)) for bid, ask, places in quotes]
    expected = sma_cross(exact, fast=fast, slow=slow, qty=Fraction(2))
    assert [
        (i, cross.direction, cross.fast, cross.slow, Fraction(cross.target), Fraction(cross.order_qty))
        for i, cross in got
        if cross is not None
    ] == [(e.index, e.direction, _display(e.fast), _display(e.slow), e.target, e.order_qty) for e in expected]


@settings(deadline=None, max_examples=200)
@given(quotes=_unit_quotes, cut=st.integers(0, 80))
def test_a_strategy_restored_from_its_encoded_state_at_any_quote_continues_exactly_like_the_original(
    quotes: list[tuple[int, int, int]], cut: int
) -> None:
    params = SmaCrossParams(fast=2, slow=4)
    original = SmaCross(params)
    for quote in quotes[:cut]:
        original.on_quote(*quote)
    encoded = msgspec.msgpack.encode(original.state())
    restored = SmaCross.from_state(params, msgspec.msgpack.decode(encoded, type=SmaCrossState))
    for quote in quotes[cut:]:
        assert restored.on_quote(*quote) == original.on_quote(*quote)
    assert restored.state() == original.state()


@settings(deadline=None)
@given(quotes=_unit_quotes)
def test_decimal_prices_make_the_crosses_of_their_units(quotes: list[tuple[int, int, int]]) -> None:
    by_units, by_decimals = SmaCross(SmaCrossParams(fast=1, slow=3)), SmaCross(SmaCrossParams(fast=1, slow=3))
    for bid, ask, places in quotes:
        assert by_decimals.on_decimal_quote(to_decimal(bid, places), to_decimal(ask, places)) == by_units.on_quote(
            bid, ask, places
        )
    assert by_decimals.state() == by_units.state()
