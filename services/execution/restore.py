"""Rebuilding execution's state at start-up from the event stream, before it trades."""

from __future__ import annotations

import asyncio
import logging

import msgspec
from nats.aio.msg import Msg

from rrr.execution import handlers
from rrr.shared import subjects
from rrr.shared.bus import EVENT_STREAM, Bus
from rrr.shared.errors import FatalError
from rrr.shared.messages import (
    OrderAccepted,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    PositionUpdated,
    order_event_decoder,
)

_log = logging.getLogger(__name__)


async def restore(book: handlers.Book, bus: Bus, shard: int, stop: asyncio.Event) -> None:
    """Rebuild order statuses and positions of this shard from the event stream, before trading.

    The fills on the stream are the truth: positions are their fold, in stream order, with the same
    exact arithmetic as live trading. The watermarks of each strategy's orders come back from the
    accepted and rejected events, whose event time is the order's. A position whose last published
    update misses a fill (a crash between publishing the fill and the update) is published again, so
    downstream catches up.

    Raises:
        FatalError: an event on this shard's subjects does not decode; skipping it would lose its state.
    """
    last_fill_ts: dict[str, int] = {}
    for msg in await bus.read_stream(EVENT_STREAM.name, subjects.shard_filter(subjects.ORDER_EVENT, shard)):
        event = _decode(msg)
        if isinstance(event, OrderAccepted | OrderRejected):
            book.orders.restore(event.client_order_id, "accepted" if isinstance(event, OrderAccepted) else "rejected")
            book.watermark(event.strategy, event.symbol).advance(event.ts_event, event.client_order_id)
        elif isinstance(event, OrderFilled):
            book.replay_fill(event)
            last_fill_ts[event.symbol] = event.ts_event
    published: dict[str, int] = {}
    for msg in await bus.read_stream(
        EVENT_STREAM.name, subjects.shard_filter(subjects.POSITION, shard), last_per_subject=True
    ):
        event = _decode(msg)
        if isinstance(event, PositionUpdated):
            published[event.symbol] = event.version
    now = book.clock()
    stale = [
        bus.prepare(
            subjects.position(symbol, book.shards),
            handlers.position_updated(book, symbol, last_fill_ts.get(symbol, now), now),
        )
        for symbol, position in book.positions.items()
        if published.get(symbol, 0) < position.fills
    ]
    if stale:
        await bus.publish_persistent_many(stale, retry_until=stop)
    open_orders = sum(1 for order_id in book.orders if book.orders.status(order_id) == "accepted")
    _log.info(
        "restored %d orders (%d accepted without a fill yet, completed when redelivered) and %d positions; "
        "republished %d stale position updates",
        len(book.orders),
        open_orders,
        len(book.positions),
        len(stale),
    )


def _decode(msg: Msg) -> OrderEvent:
    # These are execution's own events: one that does not decode is state that would be lost (its fill,
    # its position) and ids that would be issued again. Stop rather than trade on a partial history.
    try:
        return order_event_decoder.decode(msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FatalError(
            f"restore: expected execution's own event on {msg.subject!r} (stream {EVENT_STREAM.name} sequence "
            f"{msg.metadata.sequence.stream}) to decode, got: {exc}"
        ) from exc
