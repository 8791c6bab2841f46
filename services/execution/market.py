"""The market the paper venue fills at: quotes execution reads itself from the market-data stream.

An order names the quote that triggered it by its sequence in ``RRR_MD`` (``quote_seq``), its place in
the quote batch stored there (``quote_index``; 0 for a single quote) and its time (``quote_ts``).
Execution fetches that message from the stream, checks it is a quote of the order's
symbol at that time, and prices the order there: the bid and ask an order carries are never a price. A
replay therefore fills every order at the very quote that triggered it, however fast it runs, and an
order cannot choose its own price: only market data (published by market-data and the replay tool, by
their NATS permissions) ever sets one. An order without ``quote_seq`` (an older client) is priced at the
symbol's latest quote in the stream, as a market order would be.

One request to JetStream per order, all the orders of a batch in flight together (``bench/micro.py``,
``venue_price``, measures it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors

from rrr.shared import subjects
from rrr.shared.bus import MARKET_DATA_STREAM, Bus
from rrr.shared.errors import MisroutedMessageError, TransientError
from rrr.shared.messages import Quote, QuoteBatch, SubmitOrder, check_subject, market_data_decoder


@dataclass(frozen=True, slots=True)
class NoPrice:
    """Why an order has no price: its quote is not in the market-data stream, or is not what it says."""

    reason: str


Price = Quote | NoPrice


async def price(bus: Bus, order: SubmitOrder, shards: int) -> Price:
    """The quote ``order`` fills at, read from ``RRR_MD``, or why there is none.

    Raises:
        TransientError: JetStream did not answer (a broker restart): nothing was decided, ask again later.
    """
    subject = subjects.quote(order.symbol, shards)
    shard = subjects.shard_of(order.symbol, shards)
    try:
        if order.quote_seq:
            raw = await bus.js.get_msg(MARKET_DATA_STREAM.name, seq=order.quote_seq)
        else:
            raw = await bus.js.get_msg(MARKET_DATA_STREAM.name, subject=subject)
    except nats.js.errors.NotFoundError:
        where = f"at sequence {order.quote_seq}" if order.quote_seq else f"on {subject}"
        return NoPrice(f"no quote {where} in {MARKET_DATA_STREAM.name} (expired, or never published)")
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransientError(f"could not read the quote of order {order.id}: {exc}") from exc
    batch_prefix = f"{subjects.QUOTE_BATCH}.{shard}."
    if raw.subject != subject and not (order.quote_seq and (raw.subject or "").startswith(batch_prefix)):
        return NoPrice(f"{MARKET_DATA_STREAM.name} sequence {order.quote_seq} is on {raw.subject}, not {subject}")
    try:
        message = market_data_decoder.decode(raw.data or b"")
        check_subject(raw.subject or "", message, shards)
    except (msgspec.DecodeError, msgspec.ValidationError, MisroutedMessageError) as exc:
        return NoPrice(f"{MARKET_DATA_STREAM.name} sequence {raw.seq} is not a valid quote: {exc}")
    quote: object = message
    if isinstance(message, QuoteBatch):
        if order.quote_index >= len(message.quotes):
            return NoPrice(
                f"{MARKET_DATA_STREAM.name} sequence {raw.seq} holds {len(message.quotes)} quotes, "
                f"not one at index {order.quote_index}"
            )
        quote = message.quote(order.quote_index)
    if not isinstance(quote, Quote) or quote.symbol != order.symbol:
        return NoPrice(f"{MARKET_DATA_STREAM.name} sequence {raw.seq} is not a quote of {order.symbol}")
    if order.quote_seq and quote.ts_event != order.quote_ts:
        return NoPrice(
            f"the order's quote is at {order.quote_ts}, but {MARKET_DATA_STREAM.name} sequence {raw.seq} "
            f"is a quote at {quote.ts_event}"
        )
    return quote


async def prices(bus: Bus, orders: Sequence[SubmitOrder], shards: int) -> dict[str, Price]:
    """The price of each order by its id, every request in flight together.

    Raises:
        TransientError: JetStream did not answer for one of them.
    """
    found = await asyncio.gather(*(price(bus, order, shards) for order in orders), return_exceptions=True)
    out: dict[str, Price] = {}
    for order, result in zip(orders, found, strict=True):
        if isinstance(result, BaseException):
            raise result
        out[order.id] = result
    return out
