"""A paper venue: fills market orders at the touch of the quote that triggered them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from rrr.shared.messages import SubmitOrder


@dataclass(frozen=True, slots=True)
class PaperFill:
    """The venue's answer to one order."""

    fill_id: str
    price: Decimal
    qty: Decimal
    fee: Decimal


@dataclass(frozen=True, slots=True)
class PaperVenue:
    """Fills every market order in full, at once, at the trigger quote's touch.

    The price depends only on the order, never on when it is processed, so a replay gives the same fills
    however fast it runs. ``slippage_bps`` moves the price against the order; ``fee_bps`` charges a fee on
    the notional. Both default to zero.
    """

    name: str = "paper"
    slippage_bps: Decimal = Decimal(0)
    fee_bps: Decimal = Decimal(0)

    def execute(self, order: SubmitOrder) -> PaperFill:
        """Fill ``order`` in full."""
        touch = order.quote_ask if order.side == "buy" else order.quote_bid
        sign = 1 if order.side == "buy" else -1
        price = touch + sign * touch * self.slippage_bps / 10_000 if self.slippage_bps else touch
        fee = (price * order.qty * self.fee_bps / 10_000) if self.fee_bps else Decimal(0)
        # One fill per order: its id derives from the client order id, so a retried order maps to the
        # same fill id and a redelivery can never store a second fill.
        return PaperFill(fill_id=f"{order.id}:1", price=price, qty=order.qty, fee=fee)
