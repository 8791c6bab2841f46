"""Strategies that are not built in, defined as a user would in a module of their own.

``TimedMomentum`` uses what the built-ins do not: event-time timers, its own position from the context, and
state kept as a msgspec Struct in ``self.state`` (snapshotted without hooks). ``FollowsFills`` is closed-loop:
it decides on what happened to its orders (its position from the real fills, its rejections). Their references
(``tests.support.reference``) compute what they must do independently. ``RestsLimits`` rests limit and stop
orders, moves and cancels them: what the lockstep with execution is for. The others misbehave, for the isolation
tests.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Annotated

import msgspec

from rrr.shared.messages import OrderRejected
from rrr.strategy.api import Context, OrderEvent, Params, QuoteRow, Strategy, Timer, mid2


class TimedMomentumParams(Params, frozen=True, kw_only=True):
    """Every ``every_ms`` of event time, go long if the mid rose since the last look, short if it fell."""

    every_ms: Annotated[int, msgspec.Meta(ge=1)] = 60_000
    qty: Decimal = Decimal(1)


class TimedMomentumState(msgspec.Struct):
    """The mid (doubled, in units of 10**-places) at the last look, per symbol."""

    anchors: dict[str, tuple[int, int]] = msgspec.field(default_factory=dict)


class TimedMomentum(Strategy[TimedMomentumParams]):
    """Momentum on event-time timers: at the first quote ``every_ms`` after the last look, compare its mid with
    the mid at the last look; up: target +qty, down: -qty, unchanged: keep. The order is the target minus the
    strategy's own position."""

    state_type = TimedMomentumState

    def on_start(self) -> None:
        self.state = TimedMomentumState()

    def on_quote(self, quote: QuoteRow) -> None:
        if quote.symbol not in self.state.anchors:
            self.state.anchors[quote.symbol] = (mid2(quote), quote.places)
            self.ctx.set_timer(quote.ts_event + self.params.every_ms * 1_000_000, quote.symbol)

    def on_timer(self, timer: Timer) -> None:
        quote = self.ctx.quote
        assert quote is not None
        anchor, places = self.state.anchors[timer.name]
        now = mid2(quote)
        # Compared at the finer of the two places, exactly.
        common = max(places, quote.places)
        before, after = anchor * 10 ** (common - places), now * 10 ** (common - quote.places)
        self.state.anchors[timer.name] = (now, quote.places)
        self.ctx.set_timer(quote.ts_event + self.params.every_ms * 1_000_000, timer.name)
        if after == before:
            return
        qty = Fraction(self.params.qty)
        target = qty if after > before else -qty
        change = target - self.ctx.position(quote.symbol).qty
        if change:
            self.ctx.signal("up" if change > 0 else "down", target)
            self.ctx.submit("buy" if change > 0 else "sell", abs(change))


class FollowsFillsParams(Params, frozen=True, kw_only=True):
    """An order every ``every`` quotes of a symbol; every third asks for ``big`` (beyond execution's order limit)."""

    every: Annotated[int, msgspec.Meta(ge=1)] = 25
    qty: Decimal = Decimal(1)
    big: Decimal = Decimal(5000)


class FollowsFillsState(msgspec.Struct):
    """Quotes seen per symbol, orders sent, and how many of them execution rejected."""

    seen: dict[str, int] = msgspec.field(default_factory=dict)
    orders: int = 0
    rejected: int = 0


class FollowsFills(Strategy[FollowsFillsParams]):
    """Closed-loop: every ``every``-th quote of a symbol, sell if its position (from the real fills) is long,
    else buy; every third order asks for ``big``. A rejected order leaves the position as it was, so the next
    order repeats its side: what it sends depends on what execution did. Each order's outcome must be known
    before the next quote: one still open at a quote stops the strategy."""

    state_type = FollowsFillsState

    def on_start(self) -> None:
        self.state = FollowsFillsState()

    def on_quote(self, quote: QuoteRow) -> None:
        if self.ctx.open_orders:
            raise RuntimeError(f"orders still open at quote {quote.id}: {sorted(self.ctx.open_orders)}")
        seen = self.state.seen[quote.symbol] = self.state.seen.get(quote.symbol, 0) + 1
        if seen % self.params.every:
            return
        long = self.ctx.position(quote.symbol).qty > 0
        qty = self.params.big if self.state.orders % 3 == 2 else self.params.qty
        self.state.orders += 1
        self.ctx.signal("down" if long else "up", -qty if long else qty)
        self.ctx.submit("sell" if long else "buy", qty)

    def on_order_event(self, event: OrderEvent) -> None:
        if isinstance(event, OrderRejected):
            self.state.rejected += 1


class RaisesAfter(Strategy[Params]):
    """Raises at its 10th quote."""

    def on_start(self) -> None:
        self.seen = 0

    def on_quote(self, quote: QuoteRow) -> None:
        self.seen += 1
        if self.seen == 10:
            raise RuntimeError("deliberate failure at the 10th quote")


class FailsAtStart(Strategy[Params]):
    """Raises in on_start."""

    def on_start(self) -> None:
        raise ValueError("deliberate failure at start")


class FailsInInit(Strategy[Params]):
    """Raises when built."""

    def __init__(self, ctx: Context, params: Params) -> None:
        raise RuntimeError("deliberate failure in __init__")


class ReturnsGarbage(Strategy[Params]):
    """Returns a value from on_quote."""

    def on_quote(self, quote: QuoteRow) -> None:
        return "garbage"  # type: ignore[return-value]


class TwoOrdersOnAQuote(Strategy[Params]):
    """Breaks the one-order-per-quote rule at its first quote."""

    def on_quote(self, quote: QuoteRow) -> None:
        self.ctx.submit("buy", 1)
        self.ctx.submit("buy", 1)


class NotAStrategy:
    """Named as a strategy by mistake."""


class RestsLimitsParams(Params, frozen=True, kw_only=True):
    """Prices in ``tick``s of the mid: buy ``below`` under it, chase it when it runs ``chase`` further, take profit
    ``take`` above it, stop out ``stop`` under it; an order resting ``max_age`` quotes is canceled."""

    qty: Decimal = Decimal(1)
    tick: Decimal = Decimal("0.00001")
    below: Annotated[int, msgspec.Meta(ge=1)] = 2
    chase: Annotated[int, msgspec.Meta(ge=0)] = 3
    take: Annotated[int, msgspec.Meta(ge=1)] = 5
    stop: Annotated[int, msgspec.Meta(ge=1)] = 5
    max_age: Annotated[int, msgspec.Meta(ge=1)] = 20


class RestsLimitsState(msgspec.Struct):
    """Quotes each open order has rested, exits placed per symbol, and what its orders' events said."""

    ages: dict[str, int] = msgspec.field(default_factory=dict)
    exits: dict[str, int] = msgspec.field(default_factory=dict)
    events: dict[str, int] = msgspec.field(default_factory=dict)


class RestsLimits(Strategy[RestsLimitsParams]):
    """Closed-loop, with resting orders. At each quote of a symbol, in this order:

    1. every open order of the symbol ages by one quote; one that has rested ``max_age`` quotes is canceled;
    2. a buy limit (not canceled now) whose distance under the mid grew beyond ``below + chase`` ticks is moved up
       to ``below`` ticks under the mid (rounded down to a tick);
    3. long (its position from its fills) with no sell open: a reduce-only sell of ``qty``, alternately a limit
       ``take`` ticks over the mid (rounded up) and a stop-market ``stop`` ticks under it (rounded down);
       else flat with no buy open: a post-only buy limit of ``qty`` ``below`` ticks under the mid (rounded down).

    Its open orders and position come from its orders' events; it counts those events by kind. Its reference
    (``tests.support.reference.rests_limits_expectations``) computes all of it from the rules alone.
    """

    state_type = RestsLimitsState

    def on_start(self) -> None:
        self.state = RestsLimitsState()

    def on_quote(self, quote: QuoteRow) -> None:
        params, state, ctx = self.params, self.state, self.ctx
        symbol = quote.symbol
        tick = Fraction(params.tick)
        ticks = Fraction(quote.bid + quote.ask, 2 * 10**quote.places) / tick
        state.ages = {order_id: age for order_id, age in state.ages.items() if order_id in ctx.open_orders}
        mine = [order for order in ctx.open_orders.values() if order.symbol == symbol]
        canceled = set()
        for order in mine:
            age = state.ages[order.id] = state.ages.get(order.id, 0) + 1
            if age >= params.max_age:
                ctx.cancel(order.id)
                canceled.add(order.id)
        buys = [order for order in mine if order.side == "buy"]
        for order in buys:
            limit = order.limit_price
            if (
                order.id not in canceled
                and limit is not None
                and ticks - Fraction(limit) / tick > params.below + params.chase
            ):
                ctx.replace(order.id, limit=Decimal(math.floor(ticks) - params.below) * params.tick)
        held = ctx.position(symbol).qty
        if held > 0 and not any(order.side == "sell" for order in mine):
            exits = state.exits[symbol] = state.exits.get(symbol, 0) + 1
            if exits % 2:
                ctx.submit(
                    "sell", params.qty, limit=Decimal(math.ceil(ticks) + params.take) * params.tick, reduce_only=True
                )
            else:
                ctx.submit(
                    "sell", params.qty, stop=Decimal(math.floor(ticks) - params.stop) * params.tick, reduce_only=True
                )
        elif held == 0 and not buys:
            ctx.submit("buy", params.qty, limit=Decimal(math.floor(ticks) - params.below) * params.tick, post_only=True)

    def on_order_event(self, event: OrderEvent) -> None:
        kind = type(event).__name__
        self.state.events[kind] = self.state.events.get(kind, 0) + 1
