"""Handlers of the subjects the execution service consumes: one function per subject."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import nats.errors
from opentelemetry import trace

from rrr.execution.orders import Orders
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.positions import Position, to_decimal
from rrr.execution.risk import RiskLimits, check_order
from rrr.shared import subjects
from rrr.shared.bus import Bus, Delivery, Outgoing
from rrr.shared.errors import FatalError
from rrr.shared.messages import (
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    PositionUpdated,
    SubmitOrder,
)
from rrr.shared.runner import now_ns


@dataclass(slots=True)
class Book:
    """Everything execution knows: order statuses, positions, limits and the venue."""

    limits: RiskLimits
    venue: PaperVenue
    shards: int
    orders: Orders = field(default_factory=Orders)
    positions: dict[str, Position] = field(default_factory=dict)

    def position(self, symbol: str) -> Position:
        """The symbol's position, flat if it never traded."""
        position = self.positions.get(symbol)
        if position is None:
            position = self.positions[symbol] = Position(symbol)
        return position

    def restore_position(self, update: PositionUpdated) -> None:
        """Take a position read back from the event stream."""
        self.positions[update.symbol] = Position(
            update.symbol,
            qty=Fraction(update.qty),
            avg_price=Fraction(update.exact_avg_price or update.avg_price),
            realized_pnl=Fraction(update.exact_realized_pnl or update.realized_pnl),
            fills=update.version,
        )


def on_submit_order(book: Book, bus: Bus, order: SubmitOrder) -> list[Outgoing]:
    """Risk-check one order, fill it on the venue, update the position; return the events to publish."""
    if order.id in book.orders:
        # The stream's de-duplication window has passed, or a command was redelivered: never trade twice.
        bus.counters["duplicate_orders"] += 1
        return []
    now = now_ns()
    event_subject = subjects.order_event(order.symbol, book.shards)
    reason = check_order(order, book.limits)
    if reason is not None:
        book.orders.transition(order.id, "rejected")
        bus.counters["orders_rejected"] += 1
        rejected = OrderRejected(
            id=f"{order.id}:rejected",
            ts_event=now,
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
    fill = book.venue.execute(order)
    book.orders.transition(order.id, "filled")
    position = book.position(order.symbol)
    position.apply_fill(order.side, fill.qty, fill.price, fill.fee)
    bus.counters["orders_filled"] += 1
    return [
        bus.prepare(
            event_subject,
            OrderAccepted(
                id=f"{order.id}:accepted",
                ts_event=now,
                ts_init=now,
                client_order_id=order.id,
                strategy=order.strategy,
                symbol=order.symbol,
                side=order.side,
                qty=order.qty,
                order_type=order.order_type,
            ),
        ),
        bus.prepare(
            event_subject,
            OrderFilled(
                id=fill.fill_id,
                ts_event=now,
                ts_init=now,
                client_order_id=order.id,
                symbol=order.symbol,
                side=order.side,
                qty=fill.qty,
                price=fill.price,
                fee=fill.fee,
                venue=book.venue.name,
            ),
        ),
        bus.prepare(
            subjects.position(order.symbol, book.shards),
            PositionUpdated(
                id=f"{order.symbol}:{position.fills}",
                ts_event=now,
                ts_init=now,
                symbol=order.symbol,
                qty=to_decimal(position.qty),
                avg_price=to_decimal(position.avg_price),
                realized_pnl=to_decimal(position.realized_pnl),
                version=position.fills,
                exact_avg_price=str(position.avg_price),
                exact_realized_pnl=str(position.realized_pnl),
            ),
        ),
    ]


async def on_order_commands(book: Book, bus: Bus, batch: Sequence[Delivery[SubmitOrder]]) -> None:
    """``cmd.order.<shard>.*`` (durable consumer): handle orders in stream order, publish their events.

    The bus acknowledges the commands only after every event of the batch was stored by JetStream.
    """
    out: list[Outgoing] = []
    for delivery in batch:
        with trace.use_span(bus.span("execution.on_submit_order", delivery.msg), end_on_exit=True):
            out.extend(on_submit_order(book, bus, delivery.message))
    if out:
        try:
            await bus.publish_persistent_many(out)
        except (nats.errors.Error, TimeoutError) as exc:
            # The state above already moved on; redelivering the batch would apply it twice. Stop, and
            # rebuild from the streams on restart.
            raise FatalError(f"could not publish order events: {type(exc).__name__}: {exc}") from exc
