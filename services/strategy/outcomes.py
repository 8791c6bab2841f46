"""Closed-loop strategies' order events, delivered at the point the rule says, whatever the timing.

The rule (``rrr.execution.lockstep``, the same in the backtest, ``rrr.deploy.backtest``), at each quote q of the
shard: the venue matches the resting orders at q; the events of a closed-loop strategy's orders at q reach it
before its ``on_quote(q)``; the commands it sends at q take effect after that matching, and their outcomes reach
it right after ``on_quote(q)``, before anything else.

In the service the events come back from execution on ``evt.order.<shard>.*`` whenever the round trip ends, and
execution matches a closed-loop strategy's orders only as far as the strategy's markers allow. So the strategy
instance (``rrr.strategy.handlers``):

- before a quote of a symbol in which a closed-loop strategy holds open orders, publishes a marker "every quote
  before q handled" for it (unless one says so already) and waits until execution's progress for it
  (``MatchedThrough``) says it matched through q: every event at or before q is then on the stream, before that
  progress event; those events are delivered, then q is handled;
- after a quote at which a closed-loop strategy sent orders, cancels or replaces, publishes them with a marker
  "every quote up to q handled, commands included" and waits for the progress that says execution applied it:
  the outcomes are the strategy's events before it.

Events and progress are held per strategy, in stream order, until a wait cuts them: the events before the first
progress that meets the wait are delivered, in order, and what the strategy knows of its progress moves to it
(``Runner.marker``, ``Runner.through``, snapshotted). Other strategies' events are dropped as they arrive. A
strategy without open orders that sends nothing never waits, and a strategy that does not read its orders'
events (it sends market orders and forgets) never does: their quotes cost nothing more.

The position kept in the strategy's snapshot is the sequence before the oldest item held, else the last one
received: a restart reads the events again from there, so a quote handled again finds what it waits for. An
event that is no news (of an order not open any more, or a copy of one applied) is dropped at delivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import msgspec

from rrr.shared.messages import MatchedThrough, OrderUpdate
from rrr.strategy.engine import At3, Engine, Runner

_log = logging.getLogger(__name__)
# Events held at once before the event consumer stops taking more (the server holds the rest). Only a
# restart holds many: the events of the orders sent again since the snapshot.
MAX_HELD = 65_536
# How often a wait that goes on is reported, naming the strategies.
_REPORT_EVERY_S = 10.0
Item = OrderUpdate | MatchedThrough
# What ``evt.order.<shard>.*`` carries: order events, and execution's lockstep progress.
decoder = msgspec.msgpack.Decoder(Item)

# What a strategy waits for: execution matched its orders through a quote ((seq, index, 1): before handling it),
# or applied its marker at or past a position (after its commands, with their outcomes).
Want = tuple[str, At3]


def through_quote(seq: int, index: int) -> Want:
    """Wait until execution matched the strategy's orders at the quote (``seq``, ``index``) and before."""
    return ("through", (seq, index, 1))


def marker_applied(position: At3) -> Want:
    """Wait until execution applied the strategy's marker at ``position`` (and the commands before it)."""
    return ("marker", position)


def _meets(marker: At3, through: tuple[int, int], want: Want) -> bool:
    kind, at = want
    if kind == "through":
        return through >= at[:2]
    return marker >= at


class Outcomes:
    """The order events and progress of one engine's closed-loop strategies, held until a wait delivers them."""

    def __init__(self, engine: Engine, *, max_held: int = MAX_HELD) -> None:
        self._engine = engine
        self._max_held = max_held
        # Per strategy id: its events and progress in stream order, with their sequences.
        self._held: dict[str, list[tuple[int, Item]]] = {}
        self._events_held = 0
        # The sequence of the last item received (held or not).
        self._received = 0
        self._changed = asyncio.Event()
        # The furthest marker sent per strategy (this run): one that covers a wait already is not sent again.
        self.markers_sent: dict[str, At3] = {}
        # Events handed to the strategies, and events dropped as no news at delivery.
        self.delivered = 0
        self.stale = 0
        # Waits and the time they took (what the lockstep costs the shard's quotes).
        self.waits = 0
        self.waited_s = 0.0

    def start_at(self, seq: int) -> None:
        """Set the sequence before the first event to come (the snapshot's)."""
        self._received = seq

    @property
    def position(self) -> int:
        """The event sequence a snapshot may claim: every item after it is still to be read or held."""
        firsts = [items[0][0] for items in self._held.values() if items]
        return min(firsts) - 1 if firsts else self._received

    @property
    def held(self) -> int:
        """How many items are held."""
        return self._events_held

    def receive(self, seq: int, item: Item) -> None:
        """Take the item at stream sequence ``seq``: held if it is a closed-loop strategy's of the engine."""
        self._received = seq
        if isinstance(item, MatchedThrough):
            runner = self._engine.closed_loop_strategy(item.strategy)
        else:
            runner = self._engine.closed_loop_runner(item.client_order_id)
        if runner is None:
            return
        items = self._held.setdefault(runner.spec.id, [])
        if isinstance(item, MatchedThrough) and items and isinstance(items[-1][1], MatchedThrough):
            # Two progress events with no event between cut the same events: the later one stands for both.
            items[-1] = (items[-1][0], item)
            self._changed.set()
            return
        items.append((seq, item))
        self._events_held += 1
        self._changed.set()

    def needs(self, wants: Mapping[str, Want]) -> dict[str, Want]:
        """The wants not met yet by what the strategies know of their progress."""
        engine = self._engine
        return {
            sid: want
            for sid, want in wants.items()
            if not _meets((runner := engine.runner(sid)).marker, runner.through, want)
        }

    def ready(self, wants: Mapping[str, Want]) -> bool:
        """Whether every want is met, by what is known or by a progress event held."""
        return all(self._cut(sid, want) is not None for sid, want in wants.items())

    def deliver(self, wants: Mapping[str, Want]) -> None:
        """Hand each strategy its events before the first progress that meets its want, in the engine's order of
        strategies; call only when ``ready``."""
        engine = self._engine
        for runner in engine.runners:
            want = wants.get(runner.spec.id)
            if want is None:
                continue
            cut = self._cut(runner.spec.id, want)
            assert cut is not None, f"deliver before ready: {runner.spec.id} waits for {want}"
            if cut < 0:
                continue
            items = self._held[runner.spec.id]
            taken, self._held[runner.spec.id] = items[: cut + 1], items[cut + 1 :]
            self._events_held -= len(taken)
            for _, item in taken:
                if isinstance(item, MatchedThrough):
                    _know(runner, item)
                elif engine.on_order_event(item):
                    self.delivered += 1
                else:
                    self.stale += 1
        self._changed.set()

    def _cut(self, sid: str, want: Want) -> int | None:
        """Where the wait of ``sid`` cuts its items: -1 when what it knows meets it already, the index of the first
        progress held that meets it, or None when none does yet."""
        runner = self._engine.runner(sid)
        if _meets(runner.marker, runner.through, want):
            return -1
        for index, (_, item) in enumerate(self._held.get(sid, ())):
            if isinstance(item, MatchedThrough) and _meets(item.marker, item.through, want):
                return index
        return None

    async def wait(self, stop: asyncio.Event, wants: Mapping[str, Want]) -> bool:
        """Wait until every want is met; False if ``stop`` came first."""
        started = reported = time.monotonic()
        self.waits += 1
        try:
            while not self.ready(wants):
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
                        "no progress from execution yet, after %.0f s, for %s: quotes wait (is execution running "
                        "for this shard?)",
                        reported - started,
                        ", ".join(f"{sid} ({want[0]} {want[1]})" for sid, want in self.needs(wants).items()),
                    )
            return True
        finally:
            self.waited_s += time.monotonic() - started

    async def room(self, stop: asyncio.Event) -> None:
        """Wait while the held items are at their bound (or until ``stop``): the consumer takes no more."""
        while self._events_held >= self._max_held and not stop.is_set():
            self._changed.clear()
            waiter = asyncio.ensure_future(self._changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()


def _know(runner: Runner, progress: MatchedThrough) -> None:
    runner.marker = max(runner.marker, progress.marker)
    runner.through = max(runner.through, progress.through)
