"""The backtest (rrr.deploy.backtest): the same orders and fills as the services, by the independent reference."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from rrr.deploy import backtest
from rrr.deploy.backtest_report import build_report, drawdown
from rrr.market_data.replay import source_id
from rrr.strategy import loading
from tests.support import lockstep
from tests.support.lockstep import RESTS_PARAMS
from tests.support.reference import (
    Expected,
    follows_fills_expectations,
    sma_cross_expectations,
    timed_momentum_expectations,
)

DATA = Path(__file__).parents[1] / "data"
EURUSD = DATA / "eurusd_quotes_2020-01-01.csv"
USDJPY = DATA / "usdjpy_quotes_2013-01-01.csv"
BTCUSDT = DATA / "btcusdt_quotes_2021-01-08.csv"


def _check(result: backtest.Result, expected: Expected, path: Path, strategy: str) -> None:
    source = source_id(path)
    orders = [f"{strategy}-{source}:{o.line}" for o in expected.orders]
    assert [o.id for o in result.orders] == orders
    assert [(f.client_order_id, f.id, f.side, Fraction(f.qty), Fraction(f.price)) for f in result.fills] == [
        (order, f"{order}:1", o.side, o.qty, o.price)
        for order, o in zip(orders, expected.orders, strict=True)
        if not o.rejected
    ]
    assert [r.client_order_id for r in result.rejections] == [
        order for order, o in zip(orders, expected.orders, strict=True) if o.rejected
    ]
    assert [s.id for s in result.signals] == [f"{strategy}:{source}:{line}" for line in expected.cross_lines]
    (position,) = result.positions.values()
    ref = expected.position
    assert (Fraction(position.exact_avg_price), Fraction(position.exact_realized_pnl), Fraction(position.qty)) == (
        ref.avg_price, ref.realized_pnl, ref.qty,
    )  # fmt: skip
    assert position.version == ref.fills
    assert not result.stopped


def test_the_backtest_of_eurusd_with_sma_cross_gives_exactly_the_orders_and_fills_of_the_reference() -> None:
    result = backtest.run([EURUSD], [loading.spec("sma_cross", "sma_cross")])

    expected = sma_cross_expectations(EURUSD)
    _check(result, expected, EURUSD, "sma_cross")
    # What the README promises of the services on this file.
    assert (result.quotes, len(result.signals), len(result.orders), len(result.fills)) == (9500, 821, 757, 757)
    (position,) = result.positions.values()
    assert (str(position.qty), str(position.avg_price), str(position.realized_pnl)) == ("-1", "1.12134", "-0.04529")


def test_the_backtest_of_a_user_strategy_with_timers_gives_exactly_what_its_reference_implies() -> None:
    for path in (EURUSD, USDJPY):
        result = backtest.run(
            [path], [loading.spec("momentum", "tests.support.strategies:TimedMomentum", {"every_ms": 30_000})]
        )
        _check(result, timed_momentum_expectations(path, every_ms=30_000), path, "momentum")
        assert len(result.orders) > 20


def test_the_backtest_of_a_closed_loop_strategy_delivers_each_outcome_before_the_next_quote() -> None:
    # FollowsFills decides on its real fills and rejections (every third order is beyond the order limit), and
    # stops if an order is still open at a quote.
    for path in (EURUSD, USDJPY):
        result = backtest.run([path], [loading.spec("follows", "tests.support.strategies:FollowsFills", {"every": 25})])
        expected = follows_fills_expectations(path, every=25)
        _check(result, expected, path, "follows")
        assert len(result.rejections) >= 10
        assert len(result.fills) >= 2 * len(result.rejections)


def test_the_report_has_every_strategys_figures_and_writes_an_svg_without_any_dependency(tmp_path: Path) -> None:
    specs = [loading.spec("sma_cross", "sma_cross"), loading.spec("mr", "mean_reversion")]
    result = backtest.run([EURUSD], specs, backtest.VenueSettings(fee_bps=Decimal("0.1")))
    report = build_report(result)

    table = report.table("EURUSD")
    assert "sma_cross" in table
    assert "mr" in table
    assert "Sharpe per quote" in table
    sma = report.figures[0]
    assert (sma.orders, sma.fills) == (757, 757)
    assert sma.fees > 0
    assert sma.max_drawdown == min(drawdown(result.equity["sma_cross"].pnl)) < 0
    report.write(tmp_path / "report.svg")
    assert (tmp_path / "report.svg").read_text().startswith("<svg")


def test_the_backtest_command_says_in_one_line_what_was_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    assert backtest.main([str(EURUSD), "--strategy", "sma_cross", "--params", '{"slow": 1}']) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "at `$.slow`" in err
    assert backtest.main([str(DATA / "missing.csv"), "--strategy", "sma_cross"]) == 2
    assert "missing.csv" in capsys.readouterr().err


@pytest.mark.parametrize("path", [BTCUSDT, EURUSD], ids=["btcusdt", "eurusd"])
def test_the_backtest_of_a_strategy_resting_moving_and_canceling_orders_equals_its_reference_exactly(
    path: Path,
) -> None:
    spec = loading.spec("rests", "tests.support.strategies:RestsLimits", RESTS_PARAMS[path.name])
    result = backtest.run([path], [spec])
    expected = lockstep.reference(path)
    lockstep.check_against_reference(result, expected, path)
    # It did what it is for: orders rested and filled later, were moved, canceled, triggered.
    assert len(expected.cancels) >= 15
    assert len(expected.replaces) >= 15
    assert len(expected.triggered) >= 4
    assert sum(f.liquidity == "maker" for f in expected.fills) >= 20
    if path == BTCUSDT:  # displayed sizes: fills in parts, and reduce-only sells cut to the position
        assert sum(1 for f in result.fills if f.leaves_qty is not None) >= 10
        assert "reduce-only" in expected.ends.values()


def test_the_backtest_of_resting_orders_charges_fees_and_slippage_as_the_rules_say() -> None:
    spec = loading.spec("rests", "tests.support.strategies:RestsLimits", RESTS_PARAMS[BTCUSDT.name])
    result = backtest.run([BTCUSDT], [spec], backtest.VenueSettings(fee_bps=Decimal("7.5"), slippage_bps=Decimal(1)))
    lockstep.check_against_reference(result, lockstep.reference(BTCUSDT, fee_bps="7.5", slippage_bps="1"), BTCUSDT)
