"""A paper venue: fills market orders at the touch of a quote read from the market-data stream."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from rrr.execution.matching import Costs
from rrr.shared.messages import Quote, Side, SubmitOrder


@dataclass(frozen=True, slots=True)
class PaperFill:
    """The venue's answer to one order."""

    fill_id: str
    price: Decimal
    qty: Decimal
    fee: Decimal


@dataclass(frozen=True, slots=True)
class PaperVenue:
    """Fills every market order in full, at once, at the touch of the quote it is given.

    That quote is the order's trigger as the market-data stream holds it (``rrr.execution.market``), never
    the prices the order carries; the fill depends only on it, never on when the order is processed, so a
    replay gives the same fills however fast it runs. ``slippage_bps`` moves the price against the order;
    ``fee_bps`` charges a fee on the notional. Both default to zero.
    """

    name: str = "paper"
    slippage_bps: Decimal = Decimal(0)
    fee_bps: Decimal = Decimal(0)

    @staticmethod
    def touch(side: Side, quote: Quote) -> Decimal:
        """What an order of ``side`` takes at ``quote``: the ask for a buy, the bid for a sell."""
        return quote.ask if side == "buy" else quote.bid

    @property
    def costs(self) -> Costs:
        """Its slippage and fees, as every fill of the venue pays them (``rrr.execution.matching``)."""
        return Costs(self.slippage_bps, self.fee_bps)

    def execute(self, order: SubmitOrder, quote: Quote) -> PaperFill:
        """Fill ``order`` in full at ``quote``'s touch."""
        costs = self.costs
        price = costs.taker_price(order.side, self.touch(order.side, quote))
        fee = costs.fee(price, order.qty)
        # One fill per order: its id derives from the client order id, so a retried order maps to the
        # same fill id and a redelivery can never store a second fill.
        return PaperFill(fill_id=f"{order.id}:1", price=price, qty=order.qty, fee=fee)
