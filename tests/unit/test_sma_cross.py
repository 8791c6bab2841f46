"""The sma_cross semantics, checked against the independent exact reference (tests.support.reference)."""

from __future__ import annotations

import csv
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from rrr.strategy.sma_cross import SmaCross, SmaCrossParams
from tests.support.reference import sma_cross, sma_means

DATA = Path(__file__).parents[1] / "data"


def _quotes(name: str) -> list[tuple[str, str]]:
    with (DATA / name).open(newline="") as fh:
        return [(row["bid"], row["ask"]) for row in csv.DictReader(fh)]


def _exact(prices: list[tuple[str, str]]) -> list[tuple[Fraction, Fraction]]:
    return [(Fraction(bid), Fraction(ask)) for bid, ask in prices]


def _reference(quotes: list[tuple[Fraction, Fraction]]) -> list[tuple[int, str]]:
    return [(cross.index, cross.direction) for cross in sma_cross(quotes, fast=5, slow=20)]


def _equal_means(mids: list[Fraction] | list[float]) -> list[bool]:
    """At each quote where both means are defined, whether fast == slow."""
    return [means[0] == means[1] for means in sma_means(mids, fast=5, slow=20) if means is not None]


def _run(prices: list[tuple[str, str]], params: SmaCrossParams) -> list[tuple[int, str]]:
    strategy = SmaCross(params)
    out = []
    for i, (bid, ask) in enumerate(prices):
        cross = strategy.on_quote(Decimal(bid), Decimal(ask))
        if cross is not None:
            out.append((i, cross.direction))
    return out


def _flat(mids: list[str]) -> list[tuple[str, str]]:
    return [(m, m) for m in mids]


@pytest.mark.parametrize(
    "name", ["eurusd_quotes_2020-01-01.csv", "usdjpy_quotes_2013-01-01.csv", "btcusdt_quotes_2021-01-08.csv"]
)
def test_sma_cross_on_real_quotes_matches_the_exact_reference(name: str) -> None:
    prices = _quotes(name)
    assert _run(prices, SmaCrossParams()) == _reference(_exact(prices))


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
    assert [strategy.on_quote(Decimal(m), Decimal(m)) for m in ("1", "1", "5")] == [None, None, None]
    # Index 3: fast (5+1)/2 = 3 and slow 7/3, above as before: still no cross.
    assert strategy.on_quote(Decimal(1), Decimal(1)) is None


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
    results = [strategy.on_quote(Decimal(m), Decimal(m)) for m in ("1", "1", "2", "1", "3")]
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
    results = [strategy.on_quote(Decimal(m), Decimal(m)) for m in ("1", "1", "2", "2", "3")]
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
        original.on_quote(Decimal(bid), Decimal(ask))
    restored = SmaCross.from_state(params, original.state())
    for bid, ask in prices[1234:]:
        assert restored.on_quote(Decimal(bid), Decimal(ask)) == original.on_quote(Decimal(bid), Decimal(ask))
    assert restored.state() == original.state()


def test_a_quote_that_cannot_be_computed_exactly_raises_and_leaves_the_state_untouched() -> None:
    strategy = SmaCross(SmaCrossParams(fast=1, slow=2))
    strategy.on_quote(Decimal("1.1"), Decimal("1.2"))
    before = strategy.state()
    with pytest.raises(ArithmeticError):
        strategy.on_quote(Decimal("1E+100000"), Decimal("1E+100000"))  # 1.1 + 1E+100000 needs 100001 digits
    assert strategy.state() == before
