"""The outcomes of closed-loop strategies' orders, delivered at a point that does not depend on timing.

A closed-loop strategy (one that overrides ``on_order_event``, see ``rrr.strategy.engine.closed_loop``) decides
on what happened to its orders. In the service the events come back from execution on ``evt.order.<shard>.*``
at whatever moment the round trip ends, while the quotes go on arriving: delivered as they come, they would fall
between other quotes from one run to the next, and a restarted strategy would not send the orders of an
uninterrupted run. So the point is fixed: after a quote on which closed-loop strategies sent orders, the
service publishes them and applies no further quote until each of them is settled (filled or rejected); then
their events go to the strategies, order by order in the order sent, each order's in the order execution
published them. The backtest delivers the venue's events at that same point, so the two agree. The price is
one round trip to execution per closed-loop order, paid by the shard's quotes; orders of other strategies
never wait.

Events of other orders are dropped as they arrive. Those of closed-loop orders are held until delivered: after
a restart they may come before the quote that sends their order again (the order was sent, and settled, before
the crash). An event is dropped as stale once its order's quote is behind the symbol's watermark without the
order awaiting it (a repeat of an order delivered already). The position kept in the strategy's snapshot is the
sequence before the oldest event held, else the last one received: a restart reads the events again from there,
so nothing a re-sent order needs is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import msgspec

from rrr.shared.messages import OrderCanceled, OrderExpired, OrderFilled, OrderRejected
from rrr.strategy.api import OrderEvent
from rrr.strategy.engine import Engine

_log = logging.getLogger(__name__)
# Events held at once before the event consumer stops taking more (the server holds the rest). Only a
# restart holds many: the events of the orders sent again since the snapshot.
MAX_HELD = 65_536
# How often a wait that goes on is reported, naming the orders.
_REPORT_EVERY_S = 10.0
# What ``evt.order.<shard>.*`` carries.
decoder = msgspec.msgpack.Decoder(OrderEvent)


def settles(event: OrderEvent) -> bool:
    """Whether ``event`` is the last of its order's: a rejection, a cancel or expiry, or the fill that leaves
    nothing open."""
    if isinstance(event, OrderFilled):
        return event.open_qty == 0
    return isinstance(event, OrderRejected | OrderCanceled | OrderExpired)


class Outcomes:
    """The order events of one engine's closed-loop strategies, held until their orders are delivered."""

    def __init__(self, engine: Engine, *, max_held: int = MAX_HELD) -> None:
        self._engine = engine
        self._max_held = max_held
        # Per order id: its events in stream order, with their sequences.
        self._held: dict[str, list[tuple[int, OrderEvent]]] = {}
        self._events_held = 0
        # The sequence of the last event received (held or not).
        self._received = 0
        self._changed = asyncio.Event()
        # Events handed to the strategies, and events dropped as repeats of what was delivered.
        self.delivered = 0
        self.stale = 0
        # Waits for outcomes and the time they took (what closed-loop orders cost the shard's quotes).
        self.waits = 0
        self.waited_s = 0.0

    def start_at(self, seq: int) -> None:
        """Set the sequence before the first event to come (the snapshot's)."""
        self._received = seq

    @property
    def position(self) -> int:
        """The event sequence a snapshot may claim: every event after it is still to be read or held."""
        if not self._held:
            return self._received
        return min(events[0][0] for events in self._held.values()) - 1

    @property
    def held(self) -> int:
        """How many events are held."""
        return self._events_held

    def receive(self, seq: int, event: OrderEvent) -> None:
        """Take the event at stream sequence ``seq``: held if a closed-loop strategy of the engine may need it."""
        self._received = seq
        if self._engine.closed_loop_runner(event.client_order_id) is None:
            return
        if self._stale(event.client_order_id, event):
            self.stale += 1
            return
        events = self._held.setdefault(event.client_order_id, [])
        if any(held.id == event.id for _, held in events):
            return  # the same event published twice (a restarted execution): delivered once
        events.append((seq, event))
        self._events_held += 1
        self._changed.set()

    def settled(self) -> bool:
        """Whether every order the engine awaits has its last event held."""
        for order in self._engine.awaiting:
            events = self._held.get(order.id)
            if not events or not any(settles(event) for _, event in events):
                return False
        return True

    def deliver(self) -> None:
        """Hand the events of the awaited orders to the strategies, order by order; the engine awaits none after.

        Call only when ``settled()``; then drop the held events that turned stale.
        """
        for order in self._engine.awaiting:
            events = self._held.pop(order.id, [])
            self._events_held -= len(events)
            for _, event in events:
                self._engine.on_order_event(event)
            self.delivered += len(events)
        self._engine.awaiting.clear()
        self._prune()
        self._changed.set()

    async def wait(self, stop: asyncio.Event) -> bool:
        """Wait until the awaited orders are settled; False if ``stop`` came first."""
        started = reported = time.monotonic()
        self.waits += 1
        try:
            return await self._wait(stop, started, reported)
        finally:
            self.waited_s += time.monotonic() - started

    async def _wait(self, stop: asyncio.Event, started: float, reported: float) -> bool:
        while not self.settled():
            if stop.is_set():
                return False
            self._changed.clear()
            waiter = asyncio.ensure_future(self._changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, timeout=_REPORT_EVERY_S, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()
            if time.monotonic() - reported >= _REPORT_EVERY_S:
                reported = time.monotonic()
                _log.warning(
                    "no outcome yet, after %.0f s, for orders %s: quotes wait (is execution running for this shard?)",
                    reported - started,
                    ", ".join(order.id for order in self._engine.awaiting if not self._has_outcome(order.id)),
                )
        return True

    async def room(self, stop: asyncio.Event) -> None:
        """Wait while the held events are at their bound (or until ``stop``): the consumer takes no more."""
        while self._events_held >= self._max_held and not stop.is_set():
            self._changed.clear()
            waiter = asyncio.ensure_future(self._changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()

    def _has_outcome(self, order_id: str) -> bool:
        return any(settles(event) for _, event in self._held.get(order_id, ()))

    def _stale(self, order_id: str, event: OrderEvent) -> bool:
        """Whether the order's quote is behind its symbol's watermark and the engine does not await the order."""
        mark = self._engine.watermarks.get(event.symbol)
        if mark is None or not mark.seen(event.ts_event, order_id.partition("-")[2]):
            return False
        return not any(order.id == order_id for order in self._engine.awaiting)

    def _prune(self) -> None:
        stale: Sequence[str] = [
            order_id for order_id, events in self._held.items() if self._stale(order_id, events[0][1])
        ]
        for order_id in stale:
            dropped = len(self._held.pop(order_id))
            self._events_held -= dropped
            self.stale += dropped
