"""Rebuilding execution's state at start-up, before it trades: its snapshot, then the events after it."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from nats.aio.msg import Msg

from rrr.execution import handlers, market, snapshots
from rrr.execution.matching import WorkingOrder
from rrr.shared import subjects
from rrr.shared.bus import EVENT_STREAM, Bus, payloads
from rrr.shared.errors import FatalError
from rrr.shared.messages import (
    MatchedThrough,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
    PositionUpdated,
    order_event_decoder,
)

_log = logging.getLogger(__name__)


class _Fold:
    """The events after the snapshot, applied in stream order to the book and to the open orders."""

    def __init__(self, book: handlers.Book) -> None:
        self.book = book
        self.held = {order.id: order for order in book.venue.working()}
        # Orders placed after the snapshot that saw no later quote yet: their arrival may be cut short.
        self.placed: set[str] = set()
        self.last_fill_ts: dict[str, int] = {}
        # The strategy of each order accepted since the snapshot, for the fills of those not at the venue.
        self.strategy_of: dict[str, str] = {}

    def _advance(self, order: WorkingOrder, seq: int, index: int) -> None:
        # An event at a quote after the order's placement: the order saw that quote, and its arrival is whole.
        if seq:
            order.matched_to = max(order.matched_to, (seq, index))
            self.placed.discard(order.id)

    def apply(self, event: OrderEvent) -> None:
        book, held = self.book, self.held
        if isinstance(event, OrderAccepted | OrderRejected):
            book.orders.restore(event.client_order_id, "accepted" if isinstance(event, OrderAccepted) else "rejected")
            book.watermark(event.strategy, event.symbol).advance(event.ts_event, event.client_order_id)
            if isinstance(event, OrderAccepted):
                book.risk.on_accepted(event.strategy, event.ts_event)
                self.strategy_of[event.client_order_id] = event.strategy
                if event.order_type == "market":
                    book.resuming[event.client_order_id] = event.strategy
            if isinstance(event, OrderAccepted) and event.order_type != "market":
                at = (event.quote_seq, event.quote_index)
                held[event.client_order_id] = WorkingOrder(
                    id=event.client_order_id, strategy=event.strategy, symbol=event.symbol, side=event.side,
                    qty=event.qty, order_type=event.order_type, limit_price=event.limit_price,
                    stop_price=event.stop_price, tif=event.tif, expire_ts=event.expire_ts,
                    post_only=event.post_only, reduce_only=event.reduce_only, ts_event=event.ts_event,
                    placed_at=at, matched_to=at,
                )  # fmt: skip
                self.placed.add(event.client_order_id)
        elif isinstance(event, OrderFilled):
            self._fill(event)
        elif isinstance(event, OrderTriggered):
            order = held.get(event.client_order_id)
            if order is not None:
                order.triggered = True
                self._advance(order, event.quote_seq, event.quote_index)
        elif isinstance(event, OrderCanceled | OrderExpired):
            book.orders.restore(event.client_order_id, "canceled" if isinstance(event, OrderCanceled) else "expired")
            held.pop(event.client_order_id, None)
            if isinstance(event, OrderCanceled):
                book.commands.add(event.command_id)
        elif isinstance(event, OrderReplaced):
            book.commands.add(event.command_id)
            order = held.get(event.client_order_id)
            if order is not None and event.replaces > order.replaces:
                order.qty, order.limit_price = event.qty, event.limit_price
                order.stop_price, order.replaces = event.stop_price, event.replaces
                order.arriving = not order.post_only
        elif isinstance(event, OrderCancelRejected):
            book.commands.add(event.command_id)
        elif isinstance(event, MatchedThrough):
            book.gates.restore(event.strategy, event.marker, event.through, event.ts_event)

    def _fill(self, fill: OrderFilled) -> None:
        """A fill read back: applied once, whatever copies of it the stream holds (stored again after the
        de-duplication window)."""
        book = self.book
        number = int(fill.id.rsplit(":", 1)[1])
        order = self.held.get(fill.client_order_id)
        status = book.orders.status(fill.client_order_id)
        if status == "filled" or (order is not None and number <= order.fills):
            return
        book.risk.at(fill.ts_event)
        position = book.position(fill.symbol)
        position.apply_fill(fill.side, fill.qty, fill.price, fill.fee)
        book.orders.restore(fill.client_order_id, "filled" if fill.leaves_qty is None else "partially_filled")
        self.last_fill_ts[fill.symbol] = fill.ts_event
        strategy = (
            order.strategy
            if order is not None
            else self.strategy_of.get(fill.client_order_id) or book.resuming.get(fill.client_order_id)
        )
        if strategy is None:
            _log.warning("fill %s: its order's strategy is unknown, its strategy position is not moved", fill.id)
        else:
            book.risk.on_fill(strategy, fill.symbol, fill.side, fill.qty)
        book.risk.revalue(position)
        if fill.leaves_qty is None:
            book.resuming.pop(fill.client_order_id, None)
            self.strategy_of.pop(fill.client_order_id, None)
        if order is not None:
            order.filled, order.fills = fill.filled_qty, number
            self._advance(order, fill.quote_seq, fill.quote_index)
            if fill.leaves_qty is None:
                del self.held[fill.client_order_id]


async def restore(book: handlers.Book, bus: Bus, shard: int, stop: asyncio.Event) -> int:
    """Rebuild order statuses, positions, watermarks and the open orders of this shard from its snapshot and
    the events after it, before trading; return the stream sequence the snapshot covered (0 without one).

    The events on the stream are the truth: positions are the fold of the fills, in stream order, with the
    same exact arithmetic as live trading, and an open order is its acceptance, fills, trigger and replaces;
    the snapshot is that fold up to a sequence, and only the events after it are read, one fetch at a time.
    The watermarks of each strategy's orders come back from the accepted and rejected events, whose event
    time is the order's. Then the venue takes the open orders (reconciliation), an order whose arrival a
    crash may have cut short (accepted, nothing after) is taken to the venue again at its quote and what
    is missing of its events published, and a position whose last published update misses a fill (a
    crash between publishing the fill and the update) is published again, so downstream catches up.

    Raises:
        FatalError: an event on this shard's subjects does not decode; skipping it would lose its state.
    """
    snapshot_seq = await snapshots.load(bus, snapshots.name(shard, book.shards), book)
    # A snapshot is saved only once its batch's events are stored, the positions they made among them.
    published = {symbol: position.fills for symbol, position in book.positions.items()}
    fold = _Fold(book)
    read = 0
    last: Msg | None = None
    async with contextlib.aclosing(
        bus.iter_stream(
            EVENT_STREAM.name, subjects.shard_filter(subjects.ORDER_EVENT, shard), start_seq=snapshot_seq + 1
        )
    ) as events:
        async for msg in events:
            last = msg
            if subjects.parse_step(msg.subject) is not None:
                progress = _progress(msg, shard)
                if progress is not None:
                    read += 1
                    fold.apply(progress)
                continue
            for data in _payloads(msg):
                read += 1
                fold.apply(_decode(msg, data))
    if last is not None:
        # Read once, at the end: parsing every message's metadata costs a tenth of the whole read.
        book.seq = int(last.metadata.sequence.stream)
    book.counters.restored_events = read
    arrivals = {}
    for order_id in fold.placed:
        order = fold.held.get(order_id)
        if order is None:
            continue
        touch = await market.quote_at(bus, order.placed_at, order.symbol, book.shards, book.quotes, book.market)
        if touch is None:
            _log.warning("order %s: its quote at %s is gone from the market-data stream", order_id, order.placed_at)
        else:
            arrivals[order_id] = touch
    now = book.clock()
    out = handlers.emit(book, bus, book.venue.reconcile(fold.held.values(), arrivals, book.net), now=now)
    # The positions published since the snapshot, alone or in envelopes.
    async with contextlib.aclosing(
        bus.iter_stream(EVENT_STREAM.name, subjects.shard_filter(subjects.POSITION, shard), start_seq=snapshot_seq + 1)
    ) as updates:
        async for msg in updates:
            for data in _payloads(msg):
                update = _decode(msg, data)
                if isinstance(update, PositionUpdated):
                    published[update.symbol] = max(published.get(update.symbol, 0), update.version)
    settled = {o.subject for o in out}
    stale = [
        bus.prepare(
            subjects.position(symbol, book.shards),
            handlers.position_updated(book, symbol, fold.last_fill_ts.get(symbol, now), now),
        )
        for symbol, position in book.positions.items()
        if published.get(symbol, 0) < position.fills and subjects.position(symbol, book.shards) not in settled
    ]
    book.counters.positions_republished = len(stale)
    if out or stale:
        book.seq = max(book.seq, await bus.publish_state_output([*out, *stale], stop, "restored order events"))
    _log.info(
        "restored %d orders (%d open at the venue, %d taken to it again) and %d positions from %s and %d events "
        "after it; republished %d stale position updates",
        len(book.orders),
        sum(1 for _ in book.venue.working()),
        len(fold.placed),
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


def _progress(msg: Msg, shard: int) -> MatchedThrough | None:
    """A lockstep progress event on this shard's ``evt.order.<shard>._step``, or None (with a warning) when it is
    not one of this shard's: unlike a fill, it is no state that would be lost (a gate it would have moved goes on
    from where the snapshot and the progress before it left it, matching again what yields nothing new)."""
    try:
        event = order_event_decoder.decode(msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        event = None
        why = str(exc)
    else:
        why = f"a {type(event).__name__}" if not isinstance(event, MatchedThrough) else f"shard {event.shard}'s"
    if isinstance(event, MatchedThrough) and event.shard == shard:
        return event
    _log.warning(
        "restore: skipped %s (stream %s sequence %s): expected this shard's lockstep progress, got %s",
        msg.subject, EVENT_STREAM.name, msg.metadata.sequence.stream, why,
    )  # fmt: skip
    return None


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
