"""Pre-trade risk: checks an order must pass before it reaches a venue."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from rrr.shared.messages import SubmitOrder


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Per-order limits. Notional is in the symbol's quote currency (USD for EURUSD, USDT for BTCUSDT)."""

    max_order_qty: Decimal
    max_notional_quote: Decimal


def check_order(order: SubmitOrder, limits: RiskLimits, price: Decimal) -> str | None:
    """Return why ``order`` breaks a limit, or None if it passes.

    Notional is valued at ``price``, the touch the venue would fill the order at (the ask for a buy, the
    bid for a sell, of the quote the venue read itself): never at a price the order carries.
    """
    if order.qty > limits.max_order_qty:
        return f"qty {order.qty} exceeds max_order_qty {limits.max_order_qty}"
    notional = order.qty * price
    if notional > limits.max_notional_quote:
        return f"notional {notional} exceeds max_notional_quote {limits.max_notional_quote}"
    return None
