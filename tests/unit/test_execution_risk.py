"""Pre-trade risk: per-order quantity and notional limits."""

from __future__ import annotations

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
