"""The strategy API: what a strategy is written against, in the service and in the backtest alike.

A strategy is a class in any module, derived from ``Strategy[P]`` where ``P`` is its parameters, a
``Params`` struct (msgspec, frozen, unknown fields refused). It overrides the handlers it needs; each
returns None:

- ``on_start()``: once, before anything else (set up empty state here; ``restore`` may follow).
- ``on_quote(quote)``: a ``QuoteRow`` of one of its symbols, prices in fixed point (``bid``/``ask`` units of
  10**-``places``; ``mid2(quote)`` is bid + ask exactly, ``price(units, places)`` a Decimal).
- ``on_trade(trade)``: a ``Trade`` of one of its symbols (no orders from here: an order needs a quote).
- ``on_order_event(event)``: its own orders' events (``OrderAccepted``, ``OrderRejected``, ``OrderFilled`` ...).
  A strategy that overrides it is closed-loop: each of its orders is open (``ctx.open_orders``) until its outcome, and
  ``ctx.position`` moves by the real fills (fees, slippage and risk rejections included). The outcome is
  delivered right after the quote that sent the order and before the next one, in the backtest and in the
  service alike (which waits for it: ``rrr.strategy.outcomes``). A strategy that does not override it sends
  and forgets: its ``ctx.position`` is what its orders make if each fills whole at its quote's touch (the
  paper venue's rule), and its orders never hold back the quotes.
- ``on_timer(timer)``: a timer set with ``ctx.set_timer`` whose time a quote's ``ts_event`` reached.

``self.ctx`` (a ``Context``) submits market orders and signals, and reads the strategy's position, open
orders and the latest quotes. An order or a signal is always about the quote being handled: its ids derive
from that quote's id and the strategy's id (``<id>-<quote id>``, ``<id>:<quote id>``), so a quote handled
again after a restart yields the very same ids, which the streams and execution de-duplicate.

The contract (what makes a restarted strategy send exactly the orders of an uninterrupted run):

1. Deterministic: the handlers depend only on what they are given, the parameters and the strategy's own
   state. No wall clock, no randomness that is not seeded from the parameters, no I/O.
2. Its state survives a restart: either a msgspec-serialisable ``self.state`` of type ``state_type``, or
   ``snapshot()``/``restore(state)`` overridden.
3. At most one order and one signal per quote it handles.

A handler that raises, or returns anything but None, stops that strategy (counted, logged, in the
heartbeat's ``strategies_stopped``); the service's other strategies go on. The stop is part of the state,
so a restarted service keeps the strategy stopped.
"""

from __future__ import annotations

import decimal
import heapq
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any, ClassVar, Generic, Literal, TypeVar, get_args, get_origin

import msgspec

from rrr.shared.errors import RRRError
from rrr.shared.fixed import to_decimal
from rrr.shared.messages import (
    OrderUpdate,
    QuoteRow,
    Side,
    Signal,
    SubmitOrder,
    Trade,
    check_number,
)
from rrr.shared.positions import Position

__all__ = [
    "Context",
    "NoParams",
    "OrderEvent",
    "Params",
    "QuoteRow",
    "Strategy",
    "StrategyApiError",
    "Timer",
    "mid2",
    "price",
]

# Every event of a strategy's own orders (what ``evt.order.<shard>.*`` carries).
OrderEvent = OrderUpdate
# Turns a Fraction into a Decimal only when exact (what the wire's 46 digits can hold), else raises Inexact.
_EXACT = decimal.Context(prec=60, traps=[decimal.Inexact, decimal.InvalidOperation])


class Params(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of a strategy's parameters: declare fields with types, defaults and ``msgspec.Meta`` bounds;
    cross-field checks go in ``__post_init__`` (raise ValueError)."""


class NoParams(Params, frozen=True, kw_only=True):
    """The parameters of a strategy that takes none."""


class Timer(msgspec.Struct, frozen=True, array_like=True, order=True):
    """A timer on event time: fires at the first quote of the strategy's symbols at or after ``at``."""

    at: int
    seq: int  # the order timers were set in: ties at one time fire in that order
    name: str


class StrategyApiError(RRRError):
    """A strategy used its context wrongly (an order outside a quote, a second order on one quote ...)."""

    def __init__(self, strategy: str, what: str) -> None:
        self.strategy = strategy
        super().__init__(f"strategy {strategy}: {what}")


def mid2(quote: QuoteRow) -> int:
    """``bid + ask`` in units of 10**-``quote.places``: twice the mid, exactly."""
    return quote.bid + quote.ask


def price(units: int, places: int) -> Decimal:
    """``units * 10**-places`` as a Decimal, exactly (for display and for order quantities)."""
    return to_decimal(units, places)


P = TypeVar("P", bound=Params)


class Strategy(Generic[P]):
    """Base class of a strategy. See the module's docstring for the contract."""

    # Filled from ``Strategy[MyParams]`` when a subclass does not set it.
    params_type: ClassVar[type[Params]] = NoParams
    # The type of ``self.state`` (a msgspec-serialisable type), or None when the strategy keeps no state
    # there (it overrides ``snapshot``/``restore`` instead, or keeps none).
    state_type: ClassVar[Any] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "params_type" in cls.__dict__:
            return
        for base in getattr(cls, "__orig_bases__", ()):
            if get_origin(base) is Strategy:
                (arg,) = get_args(base)
                if isinstance(arg, type) and issubclass(arg, Params):
                    cls.params_type = arg

    def __init__(self, ctx: Context, params: P) -> None:
        self.ctx = ctx
        self.params = params

    @classmethod
    def check_params(cls, params: P) -> None:
        """Check at start what the parameters' own validation cannot (a file they name ...); raise
        ValueError saying what is wrong, and the strategy does not start."""

    def on_start(self) -> None:
        """Called once, before any quote and before ``restore``."""

    def on_quote(self, quote: QuoteRow) -> None:
        """A quote of one of the strategy's symbols."""

    def on_trade(self, trade: Trade) -> None:
        """A trade of one of the strategy's symbols."""

    def on_order_event(self, event: OrderEvent) -> None:
        """An event of one of the strategy's own orders."""

    def on_timer(self, timer: Timer) -> None:
        """A timer whose time a quote reached; ``ctx.quote`` is that quote."""

    def snapshot(self) -> Any:
        """The state to keep across a restart (msgspec-serialisable): ``self.state`` by default."""
        return getattr(self, "state", None) if self.state_type is not None else None

    def restore(self, state: Any) -> None:
        """Take back what ``snapshot`` returned (decoded as ``state_type``)."""
        if self.state_type is not None:
            self.state = state


class Cursor:
    """The quote being handled (None outside a quote's handlers), its stream sequence and place in its batch:
    one per engine, shared by its strategies' contexts, so that a quote costs one update, not one per strategy."""

    __slots__ = ("index", "quote", "seq")

    def __init__(self) -> None:
        self.quote: QuoteRow | None = None
        self.seq = 0
        self.index = 0


class Context:
    """What a strategy sees of the world and acts on it through. One per strategy instance."""

    __slots__ = (
        "_assume_fills",
        "_clock",
        "_cursor",
        "_latest",
        "_order_quote",
        "_signal_quote",
        "_timer_seq",
        "_unapplied",
        "open_orders",
        "out",
        "positions",
        "strategy_id",
        "timers",
    )

    def __init__(
        self,
        strategy_id: str,
        *,
        clock: Callable[[], int],
        latest: dict[str, QuoteRow],
        assume_fills: bool,
        cursor: Cursor | None = None,
    ) -> None:
        self.strategy_id = strategy_id
        self._clock = clock
        self._latest = latest
        # A strategy that does not read its orders' outcomes: an order counts as filled at its quote's touch
        # when sent (the paper venue's rule). A closed-loop one waits for the real events instead.
        self._assume_fills = assume_fills
        self._cursor = cursor or Cursor()
        # The quotes the last order and the last signal were sent at: at most one of each per quote.
        self._order_quote: QuoteRow | None = None
        self._signal_quote: QuoteRow | None = None
        self.out: list[Signal | SubmitOrder] = []
        self.positions: dict[str, Position] = {}
        # Assumed fills not yet applied to ``positions``: applied when a position is read (exact fractions
        # cost microseconds, and most strategies never read theirs).
        self._unapplied: list[tuple[str, Side, Decimal, Decimal]] = []
        self.open_orders: dict[str, SubmitOrder] = {}
        self.timers: list[Timer] = []
        self._timer_seq = 0

    # -- reading ---------------------------------------------------------------------------------------

    @property
    def quote(self) -> QuoteRow | None:
        """The quote being handled (in ``on_quote`` and ``on_timer``), else None."""
        return self._cursor.quote

    @property
    def now(self) -> int:
        """Event time: the ``ts_event`` of the quote being handled (0 before the first)."""
        quote = self._cursor.quote
        return 0 if quote is None else quote.ts_event

    def latest(self, symbol: str) -> QuoteRow | None:
        """The newest quote of ``symbol`` applied so far, if any."""
        return self._latest.get(symbol)

    def position(self, symbol: str) -> Position:
        """This strategy's own position in ``symbol`` (average cost, exact fractions; flat if none)."""
        if self._unapplied:
            self.apply_fills()
        position = self.positions.get(symbol)
        if position is None:
            position = self.positions[symbol] = Position(symbol)
        return position

    # -- acting ----------------------------------------------------------------------------------------

    def submit(self, side: Side, qty: Decimal | int | str | Fraction) -> SubmitOrder:
        """Send a market order for the symbol of the quote being handled.

        Raises:
            StrategyApiError: no quote is being handled, an order was sent on it already, or ``side`` or
                ``qty`` is not valid (qty: a positive decimal number within the wire's bounds).
        """
        row = self._require_quote("submit an order")
        if self._order_quote is row:
            raise StrategyApiError(self.strategy_id, f"a second order on quote {row.id}: at most one per quote")
        if side != "buy" and side != "sell":
            raise StrategyApiError(self.strategy_id, f"order side must be 'buy' or 'sell', got {side!r}")
        amount = self._number("qty", qty, positive=True)
        order = SubmitOrder(
            id=f"{self.strategy_id}-{row.id}",
            ts_event=row.ts_event,
            ts_init=self._clock(),
            strategy=self.strategy_id,
            symbol=row.symbol,
            side=side,
            qty=amount,
            quote_ts=row.ts_event,
            quote_bid=to_decimal(row.bid, row.places),
            quote_ask=to_decimal(row.ask, row.places),
            quote_seq=self._cursor.seq,
            quote_index=self._cursor.index,
        )
        self._order_quote = row
        self.out.append(order)
        if self._assume_fills:
            self._unapplied.append((row.symbol, side, amount, order.quote_ask if side == "buy" else order.quote_bid))
            if len(self._unapplied) >= 1024:
                self.apply_fills()
        else:
            self.open_orders[order.id] = order
        return order

    def signal(
        self,
        direction: Literal["up", "down"],
        target: Decimal | int | str | Fraction,
        *,
        fast: Decimal | None = None,
        slow: Decimal | None = None,
    ) -> None:
        """Publish a signal at the quote being handled; ``fast`` and ``slow`` (display values, > 0) default
        to the quote's mid.

        Raises:
            StrategyApiError: no quote is being handled, a signal was sent on it already, or a value is
                not valid.
        """
        row = self._require_quote("signal")
        if self._signal_quote is row:
            raise StrategyApiError(self.strategy_id, f"a second signal on quote {row.id}: at most one per quote")
        if direction != "up" and direction != "down":
            raise StrategyApiError(self.strategy_id, f"signal direction must be 'up' or 'down', got {direction!r}")
        exact_target = self._number("target", target, signed=True)
        mid = to_decimal(row.bid + row.ask, row.places) / 2 if fast is None or slow is None else Decimal(0)
        shown_fast = mid if fast is None else self._number("fast", fast, positive=True)
        shown_slow = mid if slow is None else self._number("slow", slow, positive=True)
        self._signal_quote = row
        self.out.append(
            Signal(
                id=f"{self.strategy_id}:{row.id}",
                ts_event=row.ts_event,
                ts_init=self._clock(),
                strategy=self.strategy_id,
                symbol=row.symbol,
                quote_id=row.id,
                direction=direction,
                fast=shown_fast,
                slow=shown_slow,
                target=exact_target,
            )
        )

    def apply_fills(self) -> None:
        """Bring ``positions`` up to date with the orders sent (where fills are assumed)."""
        for symbol, side, qty, touch in self._unapplied:
            position = self.positions.get(symbol)
            if position is None:
                position = self.positions[symbol] = Position(symbol)
            position.apply_fill(side, qty, touch)
        self._unapplied.clear()

    def set_timer(self, at: int, name: str = "") -> Timer:
        """Call ``on_timer`` at the first quote of the strategy's symbols whose ``ts_event`` is at or after
        ``at`` (event time in ns, never the wall clock)."""
        if not isinstance(at, int) or isinstance(at, bool):
            raise StrategyApiError(self.strategy_id, f"a timer's time must be integer nanoseconds, got {at!r}")
        self._timer_seq += 1
        timer = Timer(at, self._timer_seq, str(name))
        heapq.heappush(self.timers, timer)
        return timer

    def cancel_timers(self, name: str) -> None:
        """Drop every pending timer called ``name``."""
        self.timers = [t for t in self.timers if t.name != name]
        heapq.heapify(self.timers)

    # -- the runner's side -----------------------------------------------------------------------------

    def _require_quote(self, what: str) -> QuoteRow:
        quote = self._cursor.quote
        if quote is None:
            raise StrategyApiError(
                self.strategy_id, f"cannot {what} outside on_quote or on_timer: no quote to price it"
            )
        return quote

    def _number(self, name: str, value: object, *, positive: bool = False, signed: bool = False) -> Decimal:
        if isinstance(value, bool | float) or not isinstance(value, Decimal | int | str | Fraction):
            raise StrategyApiError(self.strategy_id, f"{name} must be a Decimal, int, str or Fraction, got {value!r}")
        if isinstance(value, Decimal):
            return value  # the message checks its bounds and sign when built (a ValueError stops the strategy)
        try:
            if isinstance(value, Fraction):  # a position's quantity: exact, or refused
                number = _EXACT.divide(Decimal(value.numerator), Decimal(value.denominator))
            else:
                number = Decimal(value)
            check_number(name, number, positive=positive, signed=signed)
        except (ArithmeticError, ValueError) as exc:
            raise StrategyApiError(self.strategy_id, f"invalid {name} {value!r}: {exc}") from None
        return number
