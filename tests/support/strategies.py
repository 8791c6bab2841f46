"""Strategies that are not built in, defined as a user would in a module of their own.

``TimedMomentum`` uses what the built-ins do not: event-time timers, its own position from the context, and
state kept as a msgspec Struct in ``self.state`` (snapshotted without hooks). ``FollowsFills`` is closed-loop:
it decides on what happened to its orders (its position from the real fills, its rejections). Their references
(``tests.support.reference``) compute what they must do independently. The others misbehave, for the isolation
tests.
"""

from __future__ import annotations

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
