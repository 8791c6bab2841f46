"""The dashboard's equity curve: each strategy's book after each fill, valued at its symbols' newest fill prices."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rrr.deploy.dashboard.equity import EquityCurve, FillRow

D = Decimal


def _fill(n: int, strategy: str, symbol: str, side: str, qty: str, price: str, fee: str = "0", ts: int = 0) -> FillRow:
    return FillRow(
        ts_event=ts or n * 1_000_000_000,
        fill_id=f"f{n:04d}",
        strategy=strategy,
        symbol=symbol,
        side=side,
        qty=D(qty),
        price=D(price),
        fee=D(fee),
    )


def test_a_round_trip_leaves_its_profit_less_fees_and_the_curve_has_a_point_per_fill() -> None:
    curve = EquityCurve()
    curve.apply([
        _fill(1, "a", "EURUSD", "buy", "2", "1.10", fee="0.01"),
        _fill(2, "a", "EURUSD", "sell", "2", "1.15", fee="0.01"),
    ])  # fmt: skip

    assert curve.total == D("0.08")
    view = curve.view()
    assert view.ts == [1.0, 2.0]
    assert view.names == ["total", "a"]
    assert view.values == [[-0.01, 0.08], [-0.01, 0.08]]
    assert view.fills == 2
    assert curve.cursor == (2_000_000_000, "f0002")


def test_an_open_position_is_valued_at_its_symbols_newest_fill_whoever_traded_it() -> None:
    curve = EquityCurve()
    curve.apply([
        _fill(1, "a", "BTCUSD", "buy", "1", "100"),
        # b's fill moves BTCUSD's price: a's open long is worth 10 more.
        _fill(2, "b", "BTCUSD", "sell", "1", "110"),
    ])  # fmt: skip

    view = curve.view()
    assert view.names == ["total", "a", "b"]
    assert view.values[1] == [0.0, 10.0]  # a: -100 cash + 1 at 110
    assert view.values[2] == [None, 0.0]  # b: drawn from its first fill on
    assert curve.total == D(10)


def test_fills_at_one_instant_are_one_point_the_book_after_all_of_them() -> None:
    curve = EquityCurve()
    curve.apply([
        _fill(1, "a", "X", "buy", "1", "10", ts=5),
        _fill(2, "a", "X", "sell", "1", "12", ts=5),
    ])  # fmt: skip

    assert curve.view().ts == [5e-9]
    assert curve.view().values == [[2.0], [2.0]]


def test_the_drawdown_is_the_largest_fall_from_a_peak_on_every_fill() -> None:
    curve = EquityCurve(max_points=4)
    prices = ["10", "15", "9", "12", "8", "20"]  # the long's value: 0, 5, -1, 2, -2, 10
    curve.apply(
        [_fill(1, "a", "X", "buy", "1", "10")]
        + [_fill(n + 2, "b", "X", "buy" if n % 2 else "sell", "0", p) for n, p in enumerate(prices[1:])]
    )

    assert curve.total == D(10)
    # Peak 5 then -2: a fall of 7, though the thinned curve no longer holds both points.
    assert curve.view().max_drawdown == 7.0


def test_a_long_history_is_thinned_to_every_other_point_keeping_the_first_and_the_newest() -> None:
    curve = EquityCurve(max_points=10)
    curve.apply(_fill(n, "a", "X", "buy", "1", str(n)) for n in range(1, 101))

    view = curve.view()
    assert len(view.ts) <= 10
    assert view.ts[0] == 1.0
    assert view.ts[-1] == 100.0
    assert view.ts == sorted(view.ts)
    assert all(len(column) == len(view.ts) for column in view.values)


def test_strategies_past_the_series_cap_count_in_the_total_only() -> None:
    curve = EquityCurve(max_series=2)
    curve.apply(_fill(n, f"s{n}", "X", "buy", "1", "1", fee="1") for n in range(1, 5))

    view = curve.view()
    assert view.names == ["total", "s1", "s2"]
    assert view.more_strategies == 2
    assert view.values[0][-1] == -4.0


def test_reset_forgets_every_fill() -> None:
    curve = EquityCurve()
    curve.apply([_fill(1, "a", "X", "buy", "1", "1")])
    curve.reset()

    assert curve.cursor is None
    assert curve.applied == 0
    assert curve.view().ts == []


def test_a_curve_of_fewer_than_four_points_is_refused() -> None:
    with pytest.raises(ValueError, match="max_points"):
        EquityCurve(max_points=3)
