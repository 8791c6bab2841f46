"""Rebuilding execution's state at start-up, before it trades: its snapshot, then the events after it."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from nats.aio.msg import Msg

from rrr.execution import handlers, snapshots
from rrr.shared import subjects
from rrr.shared.bus import EVENT_STREAM, Bus, payloads
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


async def restore(book: handlers.Book, bus: Bus, shard: int, stop: asyncio.Event) -> int:
    """Rebuild order statuses, positions and watermarks of this shard from its snapshot and the events after
    it, before trading; return the stream sequence the snapshot covered (0 without one).

    The fills on the stream are the truth: positions are their fold, in stream order, with the same
    exact arithmetic as live trading; the snapshot is that fold up to a sequence, and only the events after
    it are read, one fetch at a time. The watermarks of each strategy's orders come back from the
    accepted and rejected events, whose event time is the order's. A position whose last published
    update misses a fill (a crash between publishing the fill and the update) is published again, so
    downstream catches up.

    Raises:
        FatalError: an event on this shard's subjects does not decode; skipping it would lose its state.
    """
    snapshot_seq = await snapshots.load(bus, snapshots.name(shard, book.shards), book)
    read = 0
    last_fill_ts: dict[str, int] = {}
    last: Msg | None = None
    async with contextlib.aclosing(
        bus.iter_stream(
            EVENT_STREAM.name, subjects.shard_filter(subjects.ORDER_EVENT, shard), start_seq=snapshot_seq + 1
        )
    ) as events:
        async for msg in events:
            last = msg
            for data in _payloads(msg):
                read += 1
                event = _decode(msg, data)
                if isinstance(event, OrderAccepted | OrderRejected):
                    book.orders.restore(
                        event.client_order_id, "accepted" if isinstance(event, OrderAccepted) else "rejected"
                    )
                    book.watermark(event.strategy, event.symbol).advance(event.ts_event, event.client_order_id)
                elif isinstance(event, OrderFilled):
                    book.replay_fill(event)
                    last_fill_ts[event.symbol] = event.ts_event
    if last is not None:
        # Read once, at the end: parsing every message's metadata costs a tenth of the whole read.
        book.seq = int(last.metadata.sequence.stream)
    book.counters.restored_events = read
    # One message per symbol: bounded by the universe, whatever the history.
    published: dict[str, int] = {}
    async with contextlib.aclosing(
        bus.iter_stream(EVENT_STREAM.name, subjects.shard_filter(subjects.POSITION, shard), last_per_subject=True)
    ) as updates:
        async for msg in updates:
            update = _decode(msg, msg.data)
            if isinstance(update, PositionUpdated):
                published[update.symbol] = update.version
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
        "restored %d orders (%d accepted without a fill yet, completed when redelivered) and %d positions "
        "from %s and %d events after it; republished %d stale position updates",
        len(book.orders),
        open_orders,
        len(book.positions),
        f"the snapshot at stream sequence {snapshot_seq}" if snapshot_seq else "no snapshot",
        read,
        len(stale),
    )
    return snapshot_seq


def _payloads(msg: Msg) -> list[bytes]:
    """Each event ``msg`` holds: one, or an envelope's (rrr.shared.bus.envelopes)."""
    try:
        return payloads(msg)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FatalError(
            f"restore: expected an envelope of execution's own events on {msg.subject!r} (stream "
            f"{EVENT_STREAM.name} sequence {msg.metadata.sequence.stream}) to decode, got: {exc}"
        ) from exc


def _decode(msg: Msg, data: bytes) -> OrderEvent:
    # These are execution's own events: one that does not decode is state that would be lost (its fill,
    # its position) and ids that would be issued again. Stop rather than trade on a partial history.
    try:
        return order_event_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FatalError(
            f"restore: expected execution's own event on {msg.subject!r} (stream {EVENT_STREAM.name} sequence "
            f"{msg.metadata.sequence.stream}) to decode, got: {exc}"
        ) from exc
