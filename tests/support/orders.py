"""Sending orders as the strategy does: the quote an order names is in the market-data stream first.

Execution prices an order at the quote it reads from ``RRR_MD`` at the order's ``quote_seq``; a test that
sends orders puts that quote there (at the bid and ask the order says it saw), then the order naming it.
"""

from __future__ import annotations

import msgspec

from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import Quote, SubmitOrder
from tests.support.factories import unique_id


async def publish_quote_of(bus: Bus, order: SubmitOrder, *, shards: int = 1) -> SubmitOrder:
    """Store the quote ``order`` says it saw on the market-data stream; return the order naming it."""
    quote = Quote(
        id=unique_id("q"),
        ts_event=order.quote_ts,
        ts_init=order.quote_ts,
        symbol=order.symbol,
        bid=order.quote_bid,
        ask=order.quote_ask,
    )
    ack = await bus.publish_persistent(subjects.quote(order.symbol, shards), quote)
    return msgspec.structs.replace(order, quote_seq=ack.seq)


async def submit_priced(bus: Bus, *orders: SubmitOrder, shards: int = 1) -> list[SubmitOrder]:
    """Publish each order's quote, then the order naming it; return the orders as sent."""
    sent = []
    for order in orders:
        named = await publish_quote_of(bus, order, shards=shards)
        ack = await bus.publish_persistent(subjects.order_command(order.symbol, shards), named)
        assert not ack.duplicate
        sent.append(named)
    return sent
