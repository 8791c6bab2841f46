"""Pre-trade risk: per-order quantity and notional limits."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest

from rrr.execution.risk import RiskLimits
from rrr.execution.risk import check_order as _check_at
from rrr.shared.messages import SubmitOrder

LIMITS = RiskLimits(max_order_qty=Decimal(10), max_notional_quote=Decimal(1000))


def _order(**overrides: Any) -> SubmitOrder:
    fields: dict[str, Any] = {
        "id": "sma_cross:BTCUSDT:1",
        "ts_event": 1,
        "ts_init": 1,
        "strategy": "sma_cross",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": Decimal(1),
        "quote_ts": 1,
        "quote_bid": Decimal(99),
        "quote_ask": Decimal(101),
    }
    return SubmitOrder(**(fields | overrides))


def check_order(order: SubmitOrder, limits: RiskLimits) -> str | None:
    """Check ``order`` priced where the venue would fill it when the market is what the order says it saw."""
    return _check_at(order, limits, order.quote_ask if order.side == "buy" else order.quote_bid)


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_order_within_both_limits_passes(side):
    assert check_order(_order(side=side, qty=Decimal(2)), LIMITS) is None


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_order_over_the_qty_limit_is_rejected_saying_by_what(side):
    reason = check_order(_order(side=side, qty=Decimal("10.0001"), quote_bid=Decimal(1), quote_ask=Decimal(1)), LIMITS)
    assert reason == "qty 10.0001 exceeds max_order_qty 10"


def test_order_at_exactly_the_qty_limit_passes():
    assert check_order(_order(qty=Decimal(10), quote_bid=Decimal(1), quote_ask=Decimal(1)), LIMITS) is None


def test_buy_notional_is_valued_at_the_ask():
    # 9.95 * 101 = 1004.95 breaks the limit at the ask, though 9.95 * 99 = 985.05 would not at the bid.
    reason = check_order(_order(side="buy", qty=Decimal("9.95")), LIMITS)
    assert reason == "notional 1004.95 exceeds max_notional_quote 1000"


def test_sell_notional_is_valued_at_the_bid():
    # 10 * 99 = 990 passes at the bid, though 10 * 101 = 1010 would break the limit at the ask.
    assert check_order(_order(side="sell", qty=Decimal(10)), LIMITS) is None


def test_sell_over_the_notional_limit_at_the_bid_is_rejected():
    reason = check_order(_order(side="sell", qty=Decimal("10"), quote_bid=Decimal("100.01")), LIMITS)
    assert reason == "notional 1000.10 exceeds max_notional_quote 1000"


@pytest.mark.parametrize(
    ("side", "bid", "ask"),
    [("buy", Decimal(1), Decimal(125)), ("sell", Decimal(125), Decimal(130))],
)
def test_order_at_exactly_the_notional_limit_passes(side, bid, ask):
    assert check_order(_order(side=side, qty=Decimal(8), quote_bid=bid, quote_ask=ask), LIMITS) is None


def test_notional_is_computed_exactly_in_decimal():
    # 0.1 * 3 is 0.30000000000000004 in binary floats; a limit of exactly 0.3 must still pass.
    limits = RiskLimits(max_order_qty=Decimal(1), max_notional_quote=Decimal("0.3"))
    assert check_order(_order(qty=Decimal("0.1"), quote_bid=Decimal(2), quote_ask=Decimal(3)), limits) is None


def test_qty_limit_is_checked_before_notional():
    reason = check_order(_order(qty=Decimal(11), quote_ask=Decimal(1000)), LIMITS)
    assert reason is not None
    assert reason.startswith("qty ")


def test_notional_is_valued_at_the_price_given_never_at_the_one_the_order_carries():
    # The order says the ask was 0.000000000001; the venue read 200: 10 * 200 breaks the limit.
    order = _order(qty=Decimal(10), quote_bid=Decimal("0.000000000001"), quote_ask=Decimal("0.000000000001"))
    assert _check_at(order, LIMITS, Decimal(200)) == "notional 2000 exceeds max_notional_quote 1000"


# -- the pre-trade checks that read state ----------------------------------------------------------------

from collections.abc import Sequence  # noqa: E402
from fractions import Fraction  # noqa: E402

from rrr.execution.instruments import Instrument, Instruments  # noqa: E402
from rrr.execution.matching import Touch, WorkingOrder  # noqa: E402
from rrr.execution.positions import Position  # noqa: E402
from rrr.execution.risk import DAY_NS, OtherShard, Risk, TradingStates, reducible  # noqa: E402

D = Decimal
WIDE = RiskLimits(max_order_qty=D(10**6), max_notional_quote=D(10**12))
TOUCH = Touch(ts_event=1_000, bid=D(99), ask=D(101), at=(1, 0))


def _working(**fields: Any) -> WorkingOrder:
    base: dict[str, Any] = {"id": "o1", "strategy": "s", "symbol": "X", "side": "buy", "qty": D(1), "ts_event": 1_000}
    return WorkingOrder(**(base | fields))


def _risk(limits: RiskLimits = WIDE, **fields: Any) -> Risk:
    return Risk(dataclasses.replace(limits, **fields))


def _check(
    risk: Risk, order: WorkingOrder, net: Fraction = Fraction(0), open_orders: Sequence[WorkingOrder] = ()
) -> str | None:
    reason, _ = risk.check_submit(order, TOUCH, net, open_orders)
    return reason


def test_an_order_passes_every_check_when_no_limit_is_set():
    assert _check(_risk(), _working(qty=D(999))) is None


@pytest.mark.parametrize(
    ("key", "strategy", "symbol"),
    [("account", "s", "X"), ("strategy.s", "s", "X"), ("symbol.X", "s", "X"), ("pair.s.X", "s", "X")],
)
def test_a_halted_scope_refuses_every_order_in_it_saying_which_and_why(key, strategy, symbol):
    risk = _risk()
    risk.trading.set(key, "halted", "fat finger on desk 2", 3)
    assert _check(risk, _working(strategy=strategy, symbol=symbol)) == f"trading halted ({key}): fat finger on desk 2"
    elsewhere = _check(risk, _working(strategy="other", symbol="Y"))
    assert elsewhere == (f"trading halted ({key}): fat finger on desk 2" if key == "account" else None)


def test_the_most_restrictive_scope_wins_and_a_resume_clears_only_its_own():
    states = TradingStates()
    states.set("account", "reducing", "desk", 1)
    states.set("symbol.X", "halted", "news", 2)
    assert states.effective(("account", "symbol.X")) == ("halted", "symbol.X", "news")
    states.set("symbol.X", "active", "", 4)
    assert states.effective(("account", "symbol.X")) == ("reducing", "account", "desk")
    # An older revision arriving late changes nothing.
    assert not states.set("symbol.X", "halted", "news", 2)
    assert states.effective(("symbol.X",)) == ("active", "", "")


def test_reducing_lets_through_only_what_reduces_both_positions_and_makes_it_reduce_only():
    risk = _risk()
    risk.trading.set("strategy.s", "reducing", "end of day", 1)
    risk.strategy_positions[("s", "X")] = Fraction(3)
    sell = _working(side="sell", qty=D(2))
    assert risk.check_submit(sell, TOUCH, Fraction(5), ()) == (None, True)
    too_much = _working(side="sell", qty=D(4))  # more than the strategy's 3
    reason, _ = risk.check_submit(too_much, TOUCH, Fraction(5), ())
    assert reason == (
        "trading reducing (strategy.s): a sell of 4 does not reduce the position (X 5, strategy s 3): end of day"
    )
    assert _check(risk, _working(side="buy"), Fraction(5)) is not None


def test_prices_on_the_tick_and_quantities_in_whole_lots():
    risk = Risk(WIDE, Instruments([Instrument("X", tick=D("0.5"), lot=D(10))]))
    assert _check(risk, _working(qty=D(20), order_type="limit", limit_price=D("100.5"))) is None
    assert _check(risk, _working(qty=D(20), order_type="limit", limit_price=D("100.25"))) == (
        "limit_price 100.25 is not a multiple of X's tick 0.5"
    )
    assert _check(risk, _working(qty=D(20), order_type="stop_market", stop_price=D("99.1"))) == (
        "stop_price 99.1 is not a multiple of X's tick 0.5"
    )
    assert _check(risk, _working(qty=D(15))) == "qty 15 is not a whole number of X's lots of 10"


def test_reduce_only_must_reduce_the_symbols_position():
    risk = _risk()
    assert _check(risk, _working(side="sell", reduce_only=True), Fraction(2)) is None
    assert _check(risk, _working(side="buy", reduce_only=True), Fraction(2)) == (
        "reduce-only buy: the position in X is 2, nothing to reduce"
    )
    assert _check(risk, _working(side="sell", reduce_only=True), Fraction(0)) == (
        "reduce-only sell: the position in X is 0, nothing to reduce"
    )


def test_a_limit_or_stop_price_beyond_the_band_around_its_quotes_mid_is_refused():
    risk = _risk(price_band_bps=D(500))  # 5 % of the mid, 100
    assert _check(risk, _working(order_type="limit", limit_price=D(105))) is None
    assert _check(risk, _working(order_type="limit", limit_price=D("105.01"))) == (
        "price band: limit_price 105.01 is 501 bps from the mid 100 of its quote, beyond price_band_bps 500"
    )
    assert _check(risk, _working(side="sell", order_type="stop_market", stop_price=D(90))) == (
        "price band: stop_price 90 is 1000 bps from the mid 100 of its quote, beyond price_band_bps 500"
    )
    assert _check(risk, _working()) is None  # a market order has no price of its own


def test_a_strategy_gets_at_most_max_orders_per_s_accepted_in_any_second_of_event_time():
    risk = _risk(max_orders_per_s=2)
    risk.on_accepted("s", 1_000)
    risk.on_accepted("s", 500_000_000)
    assert _check(risk, _working(ts_event=999_999_999)) == (
        "order rate: strategy s had 2 orders accepted in the second up to 999999999, max_orders_per_s 2"
    )
    assert _check(risk, _working(strategy="t", ts_event=999_999_999)) is None
    assert _check(risk, _working(ts_event=1_000_001_000)) is None  # the first one is a second old


def test_position_limits_count_this_order_and_the_open_orders_of_its_side():
    risk = _risk(max_position_qty=D(10), max_strategy_position_qty=D(6))
    resting = [_working(id="r1", qty=D(3), order_type="limit", limit_price=D(99))]
    assert _check(risk, _working(qty=D(3)), Fraction(4), resting) is None
    assert _check(risk, _working(qty=D(4)), Fraction(4), resting) == (
        "position in X would be 11 with this and its open orders filled, beyond max_position_qty 10"
    )
    risk.strategy_positions[("s", "X")] = Fraction(1)
    assert _check(risk, _working(qty=D(3)), Fraction(0), resting) == (
        "strategy s position in X would be 7 with this and its open orders filled, beyond max_strategy_position_qty 6"
    )
    # An order that reduces the positions passes whatever the limits; one that flips the strategy's does not.
    assert _check(risk, _working(side="sell", qty=D(8)), Fraction(40), resting) == (
        "strategy s position in X would be -7 with this and its open orders filled, beyond max_strategy_position_qty 6"
    )
    risk.strategy_positions[("s", "X")] = Fraction(40)
    assert _check(risk, _working(side="sell", qty=D(8)), Fraction(40), resting) is None


def test_position_notional_limits_value_the_position_at_the_orders_price():
    risk = _risk(max_position_notional_quote=D(1000))
    assert _check(risk, _working(qty=D(9))) is None  # 9 x 101 (the ask)
    assert _check(risk, _working(qty=D(10))) == (
        "position in X would be worth 1010 at 101, beyond max_position_notional_quote 1000"
    )


def _shard(currencies: dict[str, tuple[int, int, int]], day: int = 0) -> OtherShard:
    return OtherShard(day, {c: tuple(Fraction(v) for v in row) for c, row in currencies.items()}, 0)  # type: ignore[misc]


def test_account_gross_and_net_exposure_count_every_shard_in_each_currency():
    risk = Risk(dataclasses.replace(WIDE, max_gross_exposure_quote=D(1000), max_net_exposure_quote=D(600)),
                Instruments([Instrument("X", quote_currency="USD")]))  # fmt: skip
    risk.others[1] = _shard({"USD": (700, 400, 0), "EUR": (5000, 5000, 0)})
    assert _check(risk, _working(qty=D(1))) is None  # 700 + 101 gross, 400 + 101 net
    assert _check(risk, _working(qty=D(3))) == (
        "account gross exposure would be 1003 USD across 2 shards, beyond max_gross_exposure_quote 1000"
    )
    risk.others[1] = _shard({"USD": (100, 500, 0)})
    assert _check(risk, _working(qty=D(1), symbol="X"), Fraction(0)) == (
        "account net exposure would be 601 USD across 2 shards, beyond max_net_exposure_quote 600"
    )
    assert _check(risk, _working(side="sell", qty=D(3))) is None  # it lowers the net


def test_marks_fills_and_the_day_give_each_currencys_exposure_and_pnl_today():
    risk = Risk(WIDE, Instruments([Instrument("X", quote_currency="USD")]))
    position = Position("X")
    risk.at(DAY_NS * 10 + 5)
    position.apply_fill("buy", D(2), D(100))
    risk.revalue(position)
    risk.mark("X", Touch(ts_event=1, bid=D(98), ask=D(99)), position)  # mid 98.5: 2 x -1.5
    assert (risk.totals["USD"].gross, risk.totals["USD"].net, risk.pnl_today("USD")) == (197, 197, -3)
    # A new day: the PnL counts from where it stands.
    risk.at(DAY_NS * 11)
    assert risk.pnl_today("USD") == 0
    position.apply_fill("sell", D(2), D(97))
    risk.revalue(position)
    assert (risk.totals["USD"].gross, risk.pnl_today("USD")) == (0, -3)


def test_the_days_loss_is_the_sum_of_every_shard_of_the_same_day():
    risk = _risk(max_daily_loss_quote=D(100))
    risk.day = 7
    risk.others[1] = _shard({"": (0, 0, -60)}, day=7)
    risk.others[2] = _shard({"": (0, 0, -50)}, day=6)  # yesterday's: not counted
    assert risk.daily_loss_breach() is None
    risk.others[3] = _shard({"": (0, 0, -41)}, day=7)
    assert risk.daily_loss_breach() == "daily loss 101 quote exceeds max_daily_loss_quote 100 (day 7, across 4 shards)"


def test_strategy_positions_follow_their_fills_and_vanish_when_flat():
    risk = _risk()
    risk.on_fill("s", "X", "buy", D(2))
    risk.on_fill("s", "X", "sell", D("0.5"))
    assert risk.strategy_positions == {("s", "X"): Fraction(3, 2)}
    risk.on_fill("s", "X", "sell", D("1.5"))
    assert risk.strategy_positions == {}


@pytest.mark.parametrize(("side", "net", "room"), [("sell", 3, 3), ("buy", -2, 2), ("buy", 3, 0), ("sell", 0, 0)])
def test_what_an_order_may_reduce(side, net, room):
    assert reducible(side, Fraction(net)) == room


def test_a_replace_is_held_to_the_same_limits_with_its_new_values():
    risk = _risk(max_position_qty=D(5), price_band_bps=D(100))
    order = _working(qty=D(2), order_type="limit", limit_price=D(100))
    assert risk.check_replace(order, D(4), D(100), None, TOUCH, Fraction(0), [order]) is None
    assert risk.check_replace(order, D(6), D(100), None, TOUCH, Fraction(0), [order]) == (
        "position in X would be 6 with this and its open orders filled, beyond max_position_qty 5"
    )
    assert risk.check_replace(order, D(2), D(102), None, TOUCH, Fraction(0), [order]) == (
        "price band: limit_price 102 is 200 bps from the mid 100 of its quote, beyond price_band_bps 100"
    )
    risk.trading.set("account", "halted", "stop", 1)
    assert (
        risk.check_replace(order, D(1), D(100), None, TOUCH, Fraction(0), [order]) == "trading halted (account): stop"
    )


def test_a_position_is_marked_by_the_newest_quote_of_the_stream_whatever_quote_an_order_names():
    risk = _risk()
    position = Position("X")
    position.apply_fill("buy", D(1), D(100))
    risk.mark("X", Touch(ts_event=2, bid=D(90), ask=D(90), at=(5, 0)), position)
    risk.mark("X", Touch(ts_event=1, bid=D(100), ask=D(100), at=(3, 2)), position)  # an order's older quote
    assert risk.marks["X"] == 90
    risk.mark("X", Touch(ts_event=3, bid=D(95), ask=D(95), at=(5, 1)), position)
    assert risk.marks["X"] == 95


def test_a_replace_after_a_restart_is_checked_against_the_mark_when_no_quote_was_matched_since():
    risk = _risk(price_band_bps=D(100))
    assert risk.marked("X") is None
    risk.mark("X", Touch(ts_event=1, bid=D(99), ask=D(101), at=(4, 0)), None)
    touch = risk.marked("X")
    assert touch is not None
    assert (touch.bid, touch.ask, touch.at) == (D(100), D(100), (4, 0))
    order = _working(order_type="limit", limit_price=D(100))
    assert risk.check_replace(order, D(1), D(102), None, touch, Fraction(0), [order]) == (
        "price band: limit_price 102 is 200 bps from the mid 100 of its quote, beyond price_band_bps 100"
    )
