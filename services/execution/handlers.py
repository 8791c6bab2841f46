"""Handlers of the subjects the execution service consumes: one function per subject."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from rrr.execution.market import Cache, MarketCopy, NoPrice, Price, new_cache, prices
from rrr.execution.metrics import count_rejection
from rrr.execution.orders import IllegalTransitionError, Orders
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.positions import Position, to_decimal
from rrr.execution.risk import RiskLimits, check_order
from rrr.execution.snapshots import Saver
from rrr.shared import subjects
from rrr.shared.bus import Bus, Delivery, Outgoing, Rejected
from rrr.shared.clock import Clock, wall_clock
from rrr.shared.counters import Counters
from rrr.shared.errors import RRRError
from rrr.shared.messages import (
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    PositionUpdated,
    SubmitOrder,
)
from rrr.shared.universe import SymbolRefusedError, Universe
from rrr.shared.watermark import Watermark


class ExecutionCounters(Counters, kw_only=True):
    """What execution counts, reported in its heartbeats."""

    orders_filled: int = 0
    orders_rejected: int = 0
    # Commands for orders already filled or rejected (redeliveries after a crash): never sent again.
    duplicate_orders: int = 0
    # Orders accepted before a crash whose fill is completed now.
    orders_resumed: int = 0
    # Unknown orders at or before the newest one handled for their strategy and symbol: a command sent
    # again at any later time, or out of order. Never filled.
    stale_orders: int = 0
    # Orders of a symbol outside the universe (--symbols, --max-symbols): dead-lettered, never handled.
    symbols_refused: int = 0
    # Events of this shard read back from the event stream at start: those after the snapshot.
    restored_events: int = 0
    snapshots: int = 0
    # Orders rejected because their quote is not in the market-data stream, or is not what they say.
    unpriced_orders: int = 0


class UnpricedFillError(RRRError):
    """An order accepted before a restart cannot be filled now: its quote is gone from the market-data stream."""

    def __init__(self, client_order_id: str, reason: str) -> None:
        super().__init__(f"order {client_order_id} was accepted but cannot be filled: expected its quote, but {reason}")


@dataclass(slots=True)
class Book:
    """Everything execution knows: order statuses, positions, limits and the venue."""

    limits: RiskLimits
    venue: PaperVenue
    shards: int
    orders: Orders = field(default_factory=Orders)
    positions: dict[str, Position] = field(default_factory=dict)
    counters: ExecutionCounters = field(default_factory=ExecutionCounters)
    # Per (strategy, symbol): the newest order handled, by event time (see rrr.shared.watermark).
    watermarks: dict[tuple[str, str], Watermark] = field(default_factory=dict)
    # What this service stamps its own events with.
    clock: Clock = wall_clock
    # The symbols it may keep state for, and those it does (with a position or a watermark).
    universe: Universe = field(default_factory=Universe)
    symbols: set[str] = field(default_factory=set)
    # Held from the first state change of a batch until its events are stored: the command and retry
    # consumers take turns, so fills reach the event stream in the order they were applied.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The last RRR_EVT sequence whose events of this shard the state holds (what a snapshot covers).
    seq: int = 0
    # False from a batch's first state change until its events are stored: a snapshot taken in between
    # would claim events that are not on the stream.
    published: bool = True
    # The last RRR_CMD sequence whose events are stored: where the command consumer resumes (a snapshot
    # holds it).
    command_seq: int = 0
    # True from a batch that refused commands until the bus has stored them as dead letters or retries
    # (``settled``): no snapshot may claim a refused command before that.
    refusals_pending: bool = False
    # Rejected orders by kind of reason (rrr.execution.metrics), for the metrics.
    rejections: dict[str, int] = field(default_factory=dict)
    # Market-data messages read to price orders, decoded (see rrr.execution.market).
    quotes: Cache = field(default_factory=new_cache)
    # This shard's newest market-data messages, raw, as execution follows the stream.
    market: MarketCopy = field(default_factory=MarketCopy)

    def settled(self) -> None:
        """The bus stored the refusals of the last batch."""
        self.refusals_pending = False

    def position(self, symbol: str) -> Position:
        """The symbol's position, flat if it never traded."""
        position = self.positions.get(symbol)
        if position is None:
            position = self.positions[symbol] = Position(symbol)
            self.symbols.add(symbol)
        return position

    def watermark(self, strategy: str, symbol: str) -> Watermark:
        """The watermark of a strategy's orders on a symbol, created empty on first use."""
        mark = self.watermarks.get((strategy, symbol))
        if mark is None:
            mark = self.watermarks[(strategy, symbol)] = Watermark()
            self.symbols.add(symbol)
        return mark

    def replay_fill(self, fill: OrderFilled) -> None:
        """Apply a fill read back from the event stream (rebuilding state at start-up).

        An order fills once: a second copy of its fill on the stream (stored again after the
        de-duplication window) is not applied again.
        """
        if self.orders.status(fill.client_order_id) == "filled":
            return
        self.position(fill.symbol).apply_fill(fill.side, fill.qty, fill.price, fill.fee)
        self.orders.restore(fill.client_order_id, "filled")


# The price of an order that turns out to be a duplicate: never used, on_submit_order returns first.
_DUPLICATE = NoPrice("a duplicate of an order already finished")


def position_updated(book: Book, symbol: str, ts_event: int, now: int) -> PositionUpdated:
    """The event that reports a symbol's current position, as of the fill at ``ts_event``; its id is unique
    per fill count."""
    position = book.position(symbol)
    return PositionUpdated(
        id=f"{symbol}:{position.fills}",
        ts_event=ts_event,
        ts_init=now,
        symbol=symbol,
        qty=to_decimal(position.qty),
        avg_price=to_decimal(position.avg_price),
        realized_pnl=to_decimal(position.realized_pnl),
        version=position.fills,
        exact_avg_price=str(position.avg_price),
        exact_realized_pnl=str(position.realized_pnl),
    )


def on_submit_order(book: Book, bus: Bus, order: SubmitOrder, price: Price) -> list[Outgoing]:
    """Take one order through risk, the venue and the position; return the events to publish.

    ``price`` is the quote the venue fills at, read from the market-data stream (``rrr.execution.market``),
    or why there is none: then the order is rejected. Resumable: an order whose acceptance is already on
    the event stream but whose fill is not (a crash between the two) continues with the fill. One that is
    filled or rejected is a duplicate: it never reaches the venue again.

    Raises:
        SymbolRefusedError: the order's symbol is new and outside the universe; nothing changed.
        UnpricedFillError: an accepted order's quote is gone; it cannot be filled nor rejected.
    """
    status = book.orders.status(order.id)
    if status in ("filled", "rejected"):
        book.counters.duplicate_orders += 1
        return []
    if order.symbol not in book.symbols:
        book.universe.admit(order.symbol, len(book.symbols))
    # Event time is the order's (the quote that caused it); ts_init is when this service handled it.
    ts, now = order.ts_event, book.clock()
    event_subject = subjects.order_event(order.symbol, book.shards)
    out: list[Outgoing] = []
    if status is None:
        mark = book.watermark(order.strategy, order.symbol)
        if mark.seen(order.ts_event, order.id):
            book.counters.stale_orders += 1
            return []
        mark.advance(order.ts_event, order.id)
        if isinstance(price, NoPrice):
            book.counters.unpriced_orders += 1
            reason: str | None = f"no market price: {price.reason}"
        else:
            reason = check_order(order, book.limits, book.venue.touch(order.side, price))
        if reason is not None:
            book.orders.transition(order.id, "rejected")
            book.counters.orders_rejected += 1
            count_rejection(book.rejections, reason)
            rejected = OrderRejected(
                id=f"{order.id}:rejected",
                ts_event=ts,
                ts_init=now,
                client_order_id=order.id,
                strategy=order.strategy,
                symbol=order.symbol,
                side=order.side,
                qty=order.qty,
                order_type=order.order_type,
                reason=reason,
            )
            return [bus.prepare(event_subject, rejected)]
        book.orders.transition(order.id, "accepted")
        accepted = OrderAccepted(
            id=f"{order.id}:accepted",
            ts_event=ts,
            ts_init=now,
            client_order_id=order.id,
            strategy=order.strategy,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            order_type=order.order_type,
        )
        out.append(bus.prepare(event_subject, accepted))
    else:
        if isinstance(price, NoPrice):
            raise UnpricedFillError(order.id, price.reason)
        book.counters.orders_resumed += 1

    assert not isinstance(price, NoPrice)  # rejected above when new, raised when resumed
    fill = book.venue.execute(order, price)
    book.orders.transition(order.id, "filled")
    book.position(order.symbol).apply_fill(order.side, fill.qty, fill.price, fill.fee)
    book.counters.orders_filled += 1
    filled = OrderFilled(
        id=fill.fill_id,
        ts_event=ts,
        ts_init=now,
        client_order_id=order.id,
        symbol=order.symbol,
        side=order.side,
        qty=fill.qty,
        price=fill.price,
        fee=fill.fee,
        venue=book.venue.name,
    )
    out.append(bus.prepare(event_subject, filled))
    out.append(bus.prepare(subjects.position(order.symbol, book.shards), position_updated(book, order.symbol, ts, now)))
    return out


async def on_order_commands(
    book: Book,
    bus: Bus,
    saver: Saver,
    stop: asyncio.Event,
    batch: Sequence[Delivery[SubmitOrder]],
    *,
    commands: bool = True,
) -> list[Rejected]:
    """``cmd.order.<shard>.*``: handle orders in stream order, publish their events.

    Each order not yet finished is priced first, from the market-data stream (all of the batch at once).
    Every event of the batch is stored by JetStream before anything claims the batch as handled: a broker
    outage is waited out, publishing the same events (same ids) again until they are stored. Then
    ``commands`` (the command consumer, not the retries) moves execution's position in RRR_CMD past the
    batch, and when due the state is snapshotted as covering those events and that position.
    """
    out: list[Outgoing] = []
    rejected: list[Rejected] = []
    # Read before any state changes: a broker outage here (TransientError) leaves nothing half-done.
    pending = [d.message for d in batch if book.orders.status(d.message.id) not in ("filled", "rejected")]
    priced = await prices(bus, pending, book.shards, book.quotes, book.market)
    async with book.lock:
        book.published = False
        for delivery in batch:
            with bus.handling("execution.on_submit_order", delivery.msg):
                order = delivery.message
                try:
                    # An order finished by the other consumer meanwhile was not priced: it is a duplicate.
                    out.extend(on_submit_order(book, bus, order, priced.get(order.id, _DUPLICATE)))
                except (IllegalTransitionError, UnpricedFillError) as exc:
                    rejected.append(Rejected(delivery, f"execution: {exc}", retry=False))
                except SymbolRefusedError as exc:
                    book.counters.symbols_refused += 1
                    rejected.append(Rejected(delivery, f"execution: {exc}", retry=False))
        if out:
            # On a stop during an outage: the event stream says on restart what really happened, and the
            # commands after the snapshot's position, handled again, complete the rest.
            book.seq = max(book.seq, await bus.publish_state_output(out, stop, "order events"))
        if commands and batch:
            # Only now, with the batch's events stored, may a snapshot claim its commands as handled.
            book.command_seq = max(book.command_seq, batch[-1].seq)
        book.published = True
        if rejected and commands:
            # Refused commands behind the position: no snapshot until their dead letters are stored.
            book.refusals_pending = True
        elif not book.refusals_pending:
            await saver.maybe_save(book)
    return rejected
