"""Handlers of the subjects the execution service consumes: one function per subject.

``cmd.order.<shard>.*`` carries three commands: ``SubmitOrder`` (``on_submit_order``), ``CancelOrder``
(``on_cancel_order``) and ``ReplaceOrder`` (``on_replace_order``), handled in stream order by
``on_order_commands``. The shard's market data (``md.*.<shard>.*``, followed by ``rrr.execution.market``) is
matched against the orders the venue holds by ``on_market_data``. Each turns what the venue reports into order
events, statuses and positions (``emit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import msgspec
import nats.errors
from nats.js.kv import KeyValue

from rrr.execution import lockstep, market
from rrr.execution.instruments import Instruments
from rrr.execution.lockstep import Gates, MarkerRefusedError
from rrr.execution.market import Cache, MarketCopy, NoPrice, Price, Raw, new_cache, prices, touch_of, touches
from rrr.execution.matching import (
    Accepted,
    At,
    Canceled,
    Expired,
    Fill,
    Rejected,
    Replaced,
    Report,
    Touch,
    Triggered,
    WorkingOrder,
    invalid,
)
from rrr.execution.metrics import count_rejection
from rrr.execution.orders import TERMINAL, IllegalTransitionError, Orders, is_open
from rrr.execution.positions import Position, to_decimal
from rrr.execution.risk import OtherShard, Risk, RiskLimits, in_scope
from rrr.execution.snapshots import Saver
from rrr.execution.venue import Venue
from rrr.shared import subjects
from rrr.shared.bus import Bus, Delivery, Outgoing
from rrr.shared.bus import Rejected as RejectedDelivery
from rrr.shared.clock import Clock, wall_clock
from rrr.shared.counters import Counters
from rrr.shared.errors import InvalidSubjectError, MisroutedMessageError, RRRError
from rrr.shared.messages import (
    QUOTE_BATCH_MAX,
    CancelOrder,
    Command,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
    PositionUpdated,
    ReplaceOrder,
    StrategyAt,
    SubmitOrder,
    TradingStateApplied,
    check_subject,
    shard_risk_decoder,
    trading_state_decoder,
)
from rrr.shared.universe import SymbolRefusedError, Universe
from rrr.shared.watermark import Watermark

_log = logging.getLogger(__name__)


class ExecutionCounters(Counters, kw_only=True):
    """What execution counts, reported in its heartbeats."""

    orders_filled: int = 0
    orders_rejected: int = 0
    # Fills that leave part of their order open.
    partial_fills: int = 0
    orders_canceled: int = 0
    orders_expired: int = 0
    orders_replaced: int = 0
    orders_triggered: int = 0
    # Cancels and replaces refused (an unknown or finished order, another strategy's, a change it cannot take).
    commands_refused: int = 0
    # Commands for orders already finished, or cancels and replaces already handled (redeliveries after a
    # crash): never sent to the venue again.
    duplicate_orders: int = 0
    duplicate_commands: int = 0
    # Orders accepted before a crash whose fill is completed now.
    orders_resumed: int = 0
    # Orders that arrived after later quotes of their symbol were matched: matched against those first.
    orders_caught_up: int = 0
    # Unknown orders at or before the newest one handled for their strategy and symbol: a command sent
    # again at any later time, or out of order. Never filled.
    stale_orders: int = 0
    # Orders of a symbol outside the universe (--symbols, --max-symbols): dead-lettered, never handled.
    symbols_refused: int = 0
    # Events of this shard read back from the event stream at start: those after the snapshot.
    restored_events: int = 0
    # Positions published again at start: the crash came between a fill and the position it made.
    positions_republished: int = 0
    snapshots: int = 0
    # Orders rejected because their quote is not in the market-data stream, or is not what they say.
    unpriced_orders: int = 0
    # Market-data messages matched against the orders the venue holds, and quotes among them.
    market_messages: int = 0
    quotes_matched: int = 0
    # Trading states applied (from the bucket every shard watches), and values there that are not one.
    trading_states: int = 0
    control_malformed: int = 0
    # Times the day's loss broke its limit and this shard halted the account.
    daily_loss_halts: int = 0
    # The lockstep of closed-loop strategies (rrr.execution.lockstep): markers applied, those at or behind their
    # gate already (sent again), those refused (dead-lettered with the reason), progress events published, quotes
    # at which a gated strategy's orders were matched, and walks stopped by a stream that did not answer.
    lockstep_markers: int = 0
    lockstep_markers_stale: int = 0
    lockstep_markers_refused: int = 0
    lockstep_progress: int = 0
    lockstep_quotes_matched: int = 0
    lockstep_read_failures: int = 0
    # Chunks of market data read back from the stream for a strategy behind what the matcher still holds.
    lockstep_read_back: int = 0


class UnpricedFillError(RRRError):
    """An order accepted before a restart cannot be filled now: its quote is gone from the market-data stream."""

    def __init__(self, client_order_id: str, reason: str) -> None:
        super().__init__(f"order {client_order_id} was accepted but cannot be filled: expected its quote, but {reason}")


class HandledCommands:
    """The ids of the cancels and replaces handled (each has an event that says so), least recent first;
    bounded like the order statuses."""

    def __init__(self, max_commands: int = 1_000_000) -> None:
        self._max = max_commands
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def ids(self) -> list[str]:
        """Every id held, least recent first (for a snapshot)."""
        return list(self._ids)

    def add(self, command_id: str) -> None:
        """Record ``command_id`` as handled."""
        if not command_id:
            return
        self._ids[command_id] = None
        self._ids.move_to_end(command_id)
        if len(self._ids) > self._max:
            self._ids.popitem(last=False)


@dataclass(slots=True)
class Book:
    """Everything execution knows: order statuses, positions, limits and the venue with its open orders."""

    limits: RiskLimits
    venue: Venue
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
    # consumers and the matcher take turns, so events reach the event stream in the order they were applied.
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
    # This instance's shard: its market data is what its open orders are matched against.
    shard: int = 0
    # The last market-data message matched against the open orders: all of its quotes, (seq, QUOTE_BATCH_MAX).
    market_at: At = (0, 0)
    # Cancels and replaces handled, so that one redelivered is not handled twice.
    commands: HandledCommands = field(default_factory=HandledCommands)
    # Tick, lot and quote currency per symbol, and the state the pre-trade checks read (``rrr.execution.risk``).
    instruments: Instruments = field(default_factory=Instruments)
    risk: Risk = field(init=False)
    # Set when the risk state changed: the account view is told, and the day's loss checked.
    risk_changed: asyncio.Event = field(default_factory=asyncio.Event)
    # The largest age of another shard's holdings when read (ns), since the last heartbeat; and the newest
    # revision of the account view read.
    risk_lag_max: int = 0
    risk_view_revision: int = 0
    # Market orders accepted before a restart whose fill is not on the stream yet, with their strategy.
    resuming: dict[str, str] = field(default_factory=dict)
    # Lockstep strategies: how far their orders may be, and were, matched (rrr.execution.lockstep).
    gates: Gates = field(default_factory=Gates)

    def __post_init__(self) -> None:
        self.risk = Risk(self.limits, self.instruments)

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

    def net(self, symbol: str) -> Fraction:
        """The symbol's signed position quantity (0 if it never traded), without creating one."""
        position = self.positions.get(symbol)
        return Fraction(0) if position is None else position.qty

    def watermark(self, strategy: str, symbol: str) -> Watermark:
        """The watermark of a strategy's orders on a symbol, created empty on first use."""
        mark = self.watermarks.get((strategy, symbol))
        if mark is None:
            mark = self.watermarks[(strategy, symbol)] = Watermark()
            self.symbols.add(symbol)
        return mark


# The price of an order that turns out to be a duplicate: never used, on_submit_order returns first.
_DUPLICATE = NoPrice("a duplicate of an order already finished")
# A whole market-data message matched: every index of a batch is at or below it.
_WHOLE = QUOTE_BATCH_MAX


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


def working_order(order: SubmitOrder, at: At) -> WorkingOrder:
    """``order`` as the venue holds it, placed at the quote at ``at``."""
    return WorkingOrder(
        id=order.id,
        strategy=order.strategy,
        symbol=order.symbol,
        side=order.side,
        qty=order.qty,
        order_type=order.order_type,
        limit_price=order.limit_price,
        stop_price=order.stop_price,
        tif=order.tif,
        expire_ts=order.expire_ts,
        post_only=order.post_only,
        reduce_only=order.reduce_only,
        ts_event=order.ts_event,
        placed_at=at,
        matched_to=at,
    )


def _named(report_at: At, order: WorkingOrder) -> At:
    """Where a report happened, as events say it: (0, 0) at the order's placement."""
    return (0, 0) if report_at == order.placed_at else report_at


def emit(
    book: Book,
    bus: Bus,
    reports: Sequence[Report],
    *,
    now: int,
    ts: int | None = None,
    command_id: str = "",
) -> list[Outgoing]:
    """Apply what the venue reported to statuses and positions; return the events that say so.

    An event's time is ``ts`` when given (a cancel or replace: the command's), else the order's own at its
    placement and the quote's at a later quote.

    Raises:
        IllegalTransitionError: a report would move an order's status backwards (a broken invariant).
    """
    out: list[Outgoing] = []
    for report in reports:
        order = report.order
        subject = subjects.order_event(order.symbol, book.shards)
        if isinstance(report, Accepted):
            book.orders.transition(order.id, "accepted")
            # A market order fills where it is placed and never rests: its acceptance is what it always was.
            placed = order.placed_at if order.order_type != "market" else (0, 0)
            accepted = OrderAccepted(
                id=f"{order.id}:accepted", ts_event=order.ts_event if ts is None else ts, ts_init=now,
                client_order_id=order.id, strategy=order.strategy, symbol=order.symbol, side=order.side,
                qty=order.qty, order_type=order.order_type, limit_price=order.limit_price,
                stop_price=order.stop_price, tif=order.tif, expire_ts=order.expire_ts, post_only=order.post_only,
                reduce_only=order.reduce_only, quote_seq=placed[0], quote_index=placed[1],
            )  # fmt: skip
            out.append(bus.prepare(subject, accepted))
            book.risk.on_accepted(order.strategy, order.ts_event)
            continue
        if isinstance(report, Rejected):
            if book.orders.status(order.id) is None:
                out.append(_rejected(book, bus, order, report.reason, now, order.ts_event if ts is None else ts))
            else:  # a replace the venue refused: the order stays as it was
                book.counters.commands_refused += 1
                out.append(
                    bus.prepare(subject, _cancel_rejected(order, command_id, "replace", report.reason, ts or now, now))
                )
            continue
        at = _named(report.at, order) if not isinstance(report, Replaced) else (0, 0)
        when = ts if ts is not None else order.ts_event if at == (0, 0) else report.ts_event
        if isinstance(report, Fill):
            done = report.leaves_qty == 0
            book.orders.transition(order.id, "filled" if done else "partially_filled")
            if done:
                book.counters.orders_filled += 1
            else:
                book.counters.partial_fills += 1
            book.risk.at(when)
            position = book.position(order.symbol)
            position.apply_fill(order.side, report.qty, report.price, report.fee)
            book.risk.on_fill(order.strategy, order.symbol, order.side, report.qty)
            book.resuming.pop(order.id, None)
            book.risk.revalue(position)
            filled = OrderFilled(
                id=f"{order.id}:{report.number}", ts_event=when, ts_init=now, client_order_id=order.id,
                symbol=order.symbol, side=order.side, qty=report.qty, price=report.price, fee=report.fee,
                venue=book.venue.name, leaves_qty=report.leaves_qty or None,
                cum_qty=None if report.cum_qty == report.qty else report.cum_qty,
                liquidity="taker" if report.taker else "maker", quote_seq=at[0], quote_index=at[1],
            )  # fmt: skip
            out.append(bus.prepare(subject, filled))
            out.append(
                bus.prepare(
                    subjects.position(order.symbol, book.shards), position_updated(book, order.symbol, when, now)
                )
            )
        elif isinstance(report, Triggered):
            book.counters.orders_triggered += 1
            assert order.stop_price is not None
            triggered = OrderTriggered(
                id=f"{order.id}:triggered", ts_event=when, ts_init=now, client_order_id=order.id,
                strategy=order.strategy, symbol=order.symbol, side=order.side, qty=order.qty,
                order_type=order.order_type, stop_price=order.stop_price, quote_seq=at[0], quote_index=at[1],
            )  # fmt: skip
            out.append(bus.prepare(subject, triggered))
        elif isinstance(report, Canceled):
            book.orders.transition(order.id, "canceled")
            book.counters.orders_canceled += 1
            canceled = OrderCanceled(
                id=f"{order.id}:canceled", ts_event=when, ts_init=now, client_order_id=order.id,
                strategy=order.strategy, symbol=order.symbol, side=order.side, qty=order.qty,
                filled_qty=order.filled, reason=report.reason, command_id=command_id,
            )  # fmt: skip
            out.append(bus.prepare(subject, canceled))
        elif isinstance(report, Expired):
            book.orders.transition(order.id, "expired")
            book.counters.orders_expired += 1
            expired = OrderExpired(
                id=f"{order.id}:expired", ts_event=when, ts_init=now, client_order_id=order.id,
                strategy=order.strategy, symbol=order.symbol, side=order.side, qty=order.qty,
                filled_qty=order.filled, expire_ts=order.expire_ts,
            )  # fmt: skip
            out.append(bus.prepare(subject, expired))
        else:
            book.counters.orders_replaced += 1
            replaced = OrderReplaced(
                id=f"{order.id}:replaced:{order.replaces}", ts_event=when, ts_init=now, client_order_id=order.id,
                strategy=order.strategy, symbol=order.symbol, side=order.side, qty=order.qty,
                limit_price=order.limit_price, stop_price=order.stop_price, replaces=order.replaces,
                command_id=command_id,
            )  # fmt: skip
            out.append(bus.prepare(subject, replaced))
    return out


# The span each command is handled in: ``execution.on_submit_order`` ...
_SPANS = {
    SubmitOrder: "execution.on_submit_order",
    CancelOrder: "execution.on_cancel_order",
    ReplaceOrder: "execution.on_replace_order",
    StrategyAt: "execution.on_strategy_at",
}


def _rejected(book: Book, bus: Bus, order: WorkingOrder | SubmitOrder, reason: str, now: int, ts: int) -> Outgoing:
    book.orders.transition(order.id, "rejected")
    book.counters.orders_rejected += 1
    count_rejection(book.rejections, reason)
    rejected = OrderRejected(
        id=f"{order.id}:rejected", ts_event=ts, ts_init=now, client_order_id=order.id, strategy=order.strategy,
        symbol=order.symbol, side=order.side, qty=order.qty, order_type=order.order_type, reason=reason,
    )  # fmt: skip
    return bus.prepare(subjects.order_event(order.symbol, book.shards), rejected)


def _cancel_rejected(
    order: WorkingOrder | CancelOrder | ReplaceOrder,
    command_id: str,
    response_to: str,
    reason: str,
    ts: int,
    now: int,
) -> OrderCancelRejected:
    client_order_id = order.id if isinstance(order, WorkingOrder) else order.client_order_id
    return OrderCancelRejected(
        id=f"{command_id}:refused", ts_event=ts, ts_init=now, client_order_id=client_order_id,
        strategy=order.strategy, symbol=order.symbol, command_id=command_id,
        response_to="cancel" if response_to == "cancel" else "replace", reason=reason,
    )  # fmt: skip


def on_submit_order(book: Book, bus: Bus, order: SubmitOrder, price: Price) -> list[Outgoing]:
    """Take one order through the venue's rules and pre-trade risk (``rrr.execution.risk``) to the venue; return
    the events to publish.

    ``price`` is the quote the order was sent at, read from the market-data stream (``rrr.execution.market``),
    or why there is none: then the order is rejected. Resumable: a market order whose acceptance is already
    on the event stream but whose fill is not (a crash between the two) continues with the fill. One that
    is finished, or that the venue holds already, is a duplicate: it never reaches the venue again.

    Raises:
        SymbolRefusedError: the order's symbol is new and outside the universe; nothing changed.
        UnpricedFillError: an accepted order's quote is gone; it cannot be filled nor rejected.
    """
    status = book.orders.status(order.id)
    if status in TERMINAL or (status is not None and book.venue.get(order.symbol, order.id) is not None):
        book.counters.duplicate_orders += 1
        return []
    if order.symbol not in book.symbols:
        book.universe.admit(order.symbol, len(book.symbols))
    # Event time is the order's (the quote that caused it); ts_init is when this service handled it.
    now = book.clock()
    at: At = (order.quote_seq, order.quote_index) if order.quote_seq else (book.market_at[0], _WHOLE)
    if status is None:
        mark = book.watermark(order.strategy, order.symbol)
        if mark.seen(order.ts_event, order.id):
            book.counters.stale_orders += 1
            return []
        mark.advance(order.ts_event, order.id)
        working = working_order(order, at)
        reason = invalid(working)
        if reason is None and order.order_type != "market" and not order.quote_seq:
            reason = f"a {order.order_type} order names the quote it was sent at (quote_seq): it is matched from there"
        if reason is None and isinstance(price, NoPrice):
            book.counters.unpriced_orders += 1
            reason = f"no market price: {price.reason}"
        if reason is not None:
            return [_rejected(book, bus, order, reason, now, order.ts_event)]
        assert not isinstance(price, NoPrice)
        touch = touch_of(price, at)
        net = book.net(order.symbol)
        book.risk.mark(order.symbol, touch, book.positions.get(order.symbol))
        reason, reduce_only = book.risk.check_submit(working, touch, net, book.venue.working(order.symbol))
        if reason is not None:
            return [_rejected(book, bus, order, reason, now, order.ts_event)]
        # A reducing trading state lets an order through that reduces exposure, as reduce-only.
        working.reduce_only = working.reduce_only or reduce_only
        return emit(book, bus, book.venue.submit(working, touch, net), now=now)
    # Accepted before a restart, its fill not on the stream: the venue takes it again from the start, and
    # the events already stored (its acceptance) are not published twice.
    if isinstance(price, NoPrice):
        raise UnpricedFillError(order.id, price.reason)
    book.counters.orders_resumed += 1
    reports = book.venue.submit(working_order(order, at), touch_of(price, at), book.net(order.symbol))
    return emit(book, bus, [r for r in reports if not isinstance(r, Accepted)], now=now)


def _refuse(book: Book, bus: Bus, command: CancelOrder | ReplaceOrder, reason: str, now: int) -> list[Outgoing]:
    book.counters.commands_refused += 1
    response = "cancel" if isinstance(command, CancelOrder) else "replace"
    refused = _cancel_rejected(command, command.id, response, reason, command.ts_event, now)
    return [bus.prepare(subjects.order_event(command.symbol, book.shards), refused)]


def _open_order(book: Book, command: CancelOrder | ReplaceOrder) -> WorkingOrder | str:
    """The open order a cancel or replace is for, or why there is none it may change."""
    order_id = command.client_order_id
    status = book.orders.status(order_id)
    if status is None:
        return f"unknown order {order_id}"
    if not is_open(status):
        return f"order {order_id} is {status.replace('_', ' ')}"
    held = book.venue.get(command.symbol, order_id)
    if held is None:
        return f"order {order_id} is not open at the venue"
    if held.strategy != command.strategy:
        return f"order {order_id} is strategy {held.strategy}'s, not {command.strategy}'s"
    return held


def on_cancel_order(book: Book, bus: Bus, command: CancelOrder) -> list[Outgoing]:
    """Cancel what is open of an order; return the events (canceled, or the refusal and why)."""
    if command.id in book.commands:
        book.counters.duplicate_commands += 1
        return []
    book.commands.add(command.id)
    now = book.clock()
    held = _open_order(book, command)
    if isinstance(held, str):
        return _refuse(book, bus, command, held, now)
    reports = book.venue.cancel(held.symbol, held.id, "canceled by request", command.ts_event)
    return emit(book, bus, reports, now=now, ts=command.ts_event, command_id=command.id)


def on_replace_order(book: Book, bus: Bus, command: ReplaceOrder, touch: Touch | str | None = None) -> list[Outgoing]:
    """Change an open order's quantity or prices; return the events (replaced, or the refusal and why).

    ``touch`` is the quote the replace names (``quote_seq``), read from the market-data stream, or why it has
    none; None when it names none: then it is judged at the newest quote the venue matched.
    """
    if command.id in book.commands:
        book.counters.duplicate_commands += 1
        return []
    book.commands.add(command.id)
    now = book.clock()
    held = _open_order(book, command)
    if isinstance(held, str):
        return _refuse(book, bus, command, held, now)
    if isinstance(touch, str):
        return _refuse(book, bus, command, f"no market price: {touch}", now)
    reason = book.risk.check_replace(
        held,
        held.qty if command.qty is None else command.qty,
        held.limit_price if command.limit_price is None else command.limit_price,
        held.stop_price if command.stop_price is None else command.stop_price,
        touch or book.venue.last(held.symbol) or book.risk.marked(held.symbol),
        book.net(held.symbol),
        book.venue.working(held.symbol),
    )
    if reason is not None:
        return _refuse(book, bus, command, reason, now)
    try:
        reports = book.venue.replace(
            held.symbol, held.id, command.ts_event,
            qty=command.qty, limit_price=command.limit_price, stop_price=command.stop_price, touch=touch,
        )  # fmt: skip
    except ValueError as exc:
        return _refuse(book, bus, command, str(exc), now)
    return emit(book, bus, reports, now=now, ts=command.ts_event, command_id=command.id)


async def _catch_up(book: Book, bus: Bus, order: WorkingOrder, now: int) -> list[Outgoing]:
    """Match an order placed before the newest quote matched against the quotes of its symbol in between.

    Each order sees each quote once and on its own (``rrr.execution.matching``), so the others, past those
    quotes already, are left alone: the order fills as it would have had it arrived before them.
    """
    if book.market_at <= order.placed_at:
        return []
    book.counters.orders_caught_up += 1
    out: list[Outgoing] = []
    last = book.market_at
    async for seq, subject, data in market.between(bus, book.shard, book.market, order.placed_at[0], last[0]):
        for symbol, touch in touches(seq, subject, data, book.shards, lambda s: s == order.symbol, book.quotes):
            if touch.at <= order.placed_at or touch.at > last:
                continue
            reports = book.venue.on_quote(symbol, touch, book.net(symbol), book.gates.holds if book.gates else None)
            out.extend(emit(book, bus, reports, now=now))
            if book.venue.get(order.symbol, order.id) is None:
                return out
    return out


async def _submit(book: Book, bus: Bus, order: SubmitOrder, priced: dict[str, Price]) -> list[Outgoing]:
    """An order of the command stream: handled, then caught up on the quotes the matcher passed since its own,
    or, for a lockstep strategy's, left to its gate (``rrr.execution.lockstep``)."""
    gated = order.lockstep or order.strategy in book.gates
    fresh = book.orders.status(order.id) is None
    others = gated and fresh and any(o.strategy == order.strategy for o in book.venue.working())
    # An order finished by the other consumer meanwhile was not priced: it is a duplicate.
    out = on_submit_order(book, bus, order, priced.get(order.id, _DUPLICATE))
    held = book.venue.get(order.symbol, order.id)
    if gated and fresh:
        out.extend(await lockstep.on_placed(book, bus, order, held, others, book.clock()))
    if held is not None and not book.gates.holds(held):
        out.extend(await _catch_up(book, bus, held, book.clock()))
    return out


async def on_order_commands(
    book: Book,
    bus: Bus,
    saver: Saver,
    stop: asyncio.Event,
    batch: Sequence[Delivery[Command]],
    *,
    commands: bool = True,
) -> list[RejectedDelivery]:
    """``cmd.order.<shard>.*``: handle orders, cancels, replaces and lockstep markers in stream order, publish
    their events.

    Each order not yet finished is priced first, from the market-data stream (all of the batch at once), and so
    are the quotes the markers and replaces name (``rrr.execution.lockstep``).
    Every event of the batch is stored by JetStream before anything claims the batch as handled: a broker
    outage is waited out, publishing the same events (same ids) again until they are stored. Then
    ``commands`` (the command consumer, not the retries) moves execution's position in RRR_CMD past the
    batch, and when due the state is snapshotted as covering those events and that position.
    """
    out: list[Outgoing] = []
    rejected: list[RejectedDelivery] = []
    # Read before any state changes: a broker outage here (TransientError) leaves nothing half-done.
    pending = [
        d.message
        for d in batch
        if isinstance(d.message, SubmitOrder) and book.orders.status(d.message.id) not in TERMINAL
    ]
    priced = await prices(bus, pending, book.shards, book.quotes, book.market)
    named = [
        d.message.quote_seq for d in batch if isinstance(d.message, StrategyAt | ReplaceOrder) and d.message.quote_seq
    ]
    read = await market.messages_at(bus, named, book.shards, book.quotes, book.market) if named else {}
    async with book.lock:
        book.published = False
        for delivery in batch:
            command = delivery.message
            with bus.handling(_SPANS[type(command)], delivery.msg):
                try:
                    if isinstance(command, SubmitOrder):
                        out.extend(await _submit(book, bus, command, priced))
                    elif isinstance(command, CancelOrder):
                        out.extend(on_cancel_order(book, bus, command))
                    elif isinstance(command, ReplaceOrder):
                        out.extend(on_replace_order(book, bus, command, lockstep.replace_touch(command, read)))
                    else:
                        lockstep.check_marker(book, command, read)
                        out.extend(await lockstep.on_marker(book, bus, command, book.clock()))
                except MarkerRefusedError as exc:
                    book.counters.lockstep_markers_refused += 1
                    rejected.append(RejectedDelivery(delivery, f"execution: {exc}", retry=False))
                except (IllegalTransitionError, UnpricedFillError) as exc:
                    rejected.append(RejectedDelivery(delivery, f"execution: {exc}", retry=False))
                except SymbolRefusedError as exc:
                    book.counters.symbols_refused += 1
                    rejected.append(RejectedDelivery(delivery, f"execution: {exc}", retry=False))
        if out:
            # On a stop during an outage: the event stream says on restart what really happened, and the
            # commands after the snapshot's position, handled again, complete the rest.
            book.seq = max(book.seq, await bus.publish_state_output(out, stop, "order events"))
        if commands and batch:
            # Only now, with the batch's events stored, may a snapshot claim its commands as handled.
            book.command_seq = max(book.command_seq, batch[-1].seq)
        book.published = True
        if book.risk.dirty:
            book.risk_changed.set()
        if rejected and commands:
            # Refused commands behind the position: no snapshot until their dead letters are stored.
            book.refusals_pending = True
        elif not book.refusals_pending:
            await saver.maybe_save(book)
    return rejected


async def on_market_data(book: Book, bus: Bus, saver: Saver, stop: asyncio.Event, batch: Sequence[Raw]) -> None:
    """``md.*.<shard>.*`` as execution follows it: match the quotes of symbols with open orders against them,
    in stream order, and publish what happened (fills, triggers, expiries)."""
    async with book.lock:
        book.published = False
        out: list[Outgoing] = []
        now = book.clock()
        risk = book.risk
        for seq, subject, data in batch:
            if seq <= book.market_at[0]:
                continue  # delivered again (the consumer re-created after a reconnect): matched already
            book.counters.market_messages += 1
            if book.venue.holds_any() or (risk.marks_every_quote and risk.contributions):
                # Quotes of symbols with open orders are matched; those of symbols held mark the positions.
                for symbol, touch in touches(seq, subject, data, book.shards, _wanted(book), book.quotes):
                    out.extend(match_touch(book, bus, symbol, touch, now))
            book.market_at = (seq, _WHOLE)
        if book.gates:
            # Lockstep strategies' orders, as far as their gates allow (rrr.execution.lockstep).
            out.extend(await lockstep.after_market(book, bus, now))
        if out:
            book.seq = max(book.seq, await bus.publish_state_output(out, stop, "order events"))
        book.published = True
        if risk.dirty:
            book.risk_changed.set()
        if not book.refusals_pending:
            await saver.maybe_save(book)


def match_touch(book: Book, bus: Bus, symbol: str, touch: Touch, now: int) -> list[Outgoing]:
    """One quote of the market data as the matcher follows it: it marks the symbol's position, and the venue's
    resting orders of the symbol are matched against it (but those of lockstep strategies, which their gates
    match, ``rrr.execution.lockstep``); return the events."""
    risk = book.risk
    risk.at(touch.ts_event)
    risk.mark(symbol, touch, book.positions.get(symbol))
    if not book.venue.resting(symbol):
        return []
    book.counters.quotes_matched += 1
    reports = book.venue.on_quote(symbol, touch, book.net(symbol), book.gates.holds if book.gates else None)
    return emit(book, bus, reports, now=now)


def _wanted(book: Book) -> Callable[[str], bool]:
    """Which symbols' quotes the matcher decodes: those with open orders, and those held when an account-wide
    limit needs their marks (decoding every quote of a held symbol costs more than the rest of the matcher)."""
    resting, positions = book.venue.resting, book.positions
    if not book.risk.marks_every_quote:
        return resting

    def _wants(symbol: str) -> bool:
        if resting(symbol):
            return True
        position = positions.get(symbol)
        return position is not None and position.qty != 0

    return _wants


async def on_trading_state(book: Book, bus: Bus, saver: Saver, stop: asyncio.Event, entry: KeyValue.Entry) -> None:
    """``$KV.RRR_TRADING.<key>``: apply a scope's trading state, cancel the open orders it no longer allows
    (all of them when halted, those not reduce-only when reducing), then confirm on ``ctl.trading.<shard>``.

    Applied under the lock the commands are handled under: no order is handled between the state and its
    cancels, and the confirmation goes out once the cancels are stored.
    """
    try:
        subjects.parse_trading_key(entry.key)
        deleted = entry.operation in ("DEL", "PURGE") or not entry.value
        state = None if deleted else trading_state_decoder.decode(entry.value or b"")
        if state is not None:  # its own key, never another scope's
            check_subject(subjects.kv(subjects.TRADING_BUCKET, entry.key), state, book.shards)
    except (InvalidSubjectError, MisroutedMessageError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        book.counters.control_malformed += 1
        _log.error("trading state %s (revision %d) is not one: %s", entry.key, entry.revision, exc)
        return
    name = "active" if state is None else state.state
    reason = "" if state is None else state.reason or "no reason given"
    revision = entry.revision or 0
    canceled = 0
    async with book.lock:
        if not book.risk.trading.set(entry.key, name, reason, revision):
            return
        book.counters.trading_states += 1
        _log.warning("trading %s for %s (revision %d): %s", name, entry.key, revision, reason or "-")
        now = book.clock()
        ts = now if state is None else state.ts_event
        out: list[Outgoing] = []
        book.published = False
        for order in list(book.venue.working()):
            if in_scope(entry.key, order) and (name == "halted" or (name == "reducing" and not order.reduce_only)):
                why = f"trading {name} ({entry.key}): {reason}"
                out.extend(emit(book, bus, book.venue.cancel(order.symbol, order.id, why, ts), now=now, ts=ts))
                canceled += 1
        if out:
            book.seq = max(book.seq, await bus.publish_state_output(out, stop, "order events"))
        book.published = True
        if not book.refusals_pending:
            await saver.maybe_save(book)
    applied = TradingStateApplied(
        id=f"{book.shard}:{entry.key}:{revision}", ts_event=ts, ts_init=book.clock(), shard=book.shard,
        key=entry.key, revision=revision, state=name, canceled=canceled,
    )  # fmt: skip
    with contextlib.suppress(nats.errors.Error):  # a confirmation is a courtesy: the state is applied
        await bus.publish(subjects.trading_applied(book.shard), applied)


def on_shard_risk(book: Book, entry: KeyValue.Entry, *, measure: bool = True) -> None:
    """``$KV.RRR_RISK.shard.<k>``: another shard's holdings, for the account-wide checks; with ``measure``, how
    long it took them to arrive is counted (not for the values read at start, which may be of any age)."""
    try:
        held = shard_risk_decoder.decode(entry.value or b"")
        check_subject(subjects.kv(subjects.RISK_BUCKET, entry.key), held, book.shards)
    except (msgspec.DecodeError, msgspec.ValidationError, MisroutedMessageError) as exc:
        book.counters.control_malformed += 1
        _log.error("account view %s (revision %d) is not a shard's holdings: %s", entry.key, entry.revision, exc)
        return
    if held.shard == book.shard or held.shards != book.shards:
        return
    now = book.clock()
    if measure:
        book.risk_lag_max = max(book.risk_lag_max, now - held.ts_init)
    book.risk_view_revision = max(book.risk_view_revision, entry.revision or 0)
    book.risk.others[held.shard] = OtherShard(
        held.day,
        {row.currency: (Fraction(row.gross), Fraction(row.net), Fraction(row.pnl_today)) for row in held.currencies},
        now,
    )
    book.risk_changed.set()
