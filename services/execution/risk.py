"""Pre-trade risk: checks an order must pass before it reaches a venue."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from rrr.execution.matching import Touch, WorkingOrder


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Per-order limits. Notional is in the symbol's quote currency (USD for EURUSD, USDT for BTCUSDT)."""

    max_order_qty: Decimal
    max_notional_quote: Decimal


class _Sized(Protocol):
    @property
    def qty(self) -> Decimal: ...


def reference_price(order: WorkingOrder, touch: Touch) -> Decimal:
    """The price an order's notional is valued at: the most it may pay or the least it may receive.

    A market order's is the touch it would take (the ask for a buy, the bid for a sell, of the quote the
    venue read itself: never a price the order carries); a limit or stop-limit order's is its limit price;
    a stop-market order's its stop price, or the touch when the market is already beyond it.
    """
    touch_price = touch.price(order.side)
    if order.limit_price is not None:
        return order.limit_price
    if order.stop_price is not None:
        beyond = touch_price > order.stop_price if order.side == "buy" else touch_price < order.stop_price
        return touch_price if beyond else order.stop_price
    return touch_price


def check_order(order: _Sized, limits: RiskLimits, price: Decimal) -> str | None:
    """Return why ``order`` breaks a limit, or None if it passes; its notional is valued at ``price``
    (``reference_price``)."""
    if order.qty > limits.max_order_qty:
        return f"qty {order.qty} exceeds max_order_qty {limits.max_order_qty}"
    notional = order.qty * price
    if notional > limits.max_notional_quote:
        return f"notional {notional} exceeds max_notional_quote {limits.max_notional_quote}"
    return None
