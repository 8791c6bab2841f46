"""The strategy API: what a strategy is written against, in the service and in the backtest alike.

A strategy is a class in any module, derived from ``Strategy[P]`` where ``P`` is its parameters, a
``Params`` struct (msgspec, frozen, unknown fields refused). It overrides the handlers it needs; each
returns None:

- ``on_start()``: once, before anything else (set up empty state here; ``restore`` may follow).
- ``on_quote(quote)``: a ``QuoteRow`` of one of its symbols, prices in fixed point (``bid``/``ask`` units of
  10**-``places``; ``mid2(quote)`` is bid + ask exactly, ``price(units, places)`` a Decimal).
- ``on_trade(trade)``: a ``Trade`` of one of its symbols (no orders from here: an order needs a quote).
- ``on_order_event(event)``: its own orders' events (``OrderAccepted``, ``OrderRejected``, ``OrderFilled``,
  ``OrderTriggered``, ``OrderCanceled``, ``OrderExpired``, ``OrderReplaced``, ``OrderCancelRejected``). A strategy
  that overrides it is closed-loop: ``ctx.open_orders`` holds its orders that are not finished, as their events
  say they are, and ``ctx.position`` moves by the real fills (fees, slippage and risk rejections included). A
  strategy that does not override it sends and forgets: it sends plain market orders only, its ``ctx.position``
  is what they make if each fills whole at its quote's touch (the paper venue's rule), and its orders never
  hold back the quotes.
- ``on_timer(timer)``: a timer set with ``ctx.set_timer`` whose time a quote's ``ts_event`` reached.

``self.ctx`` (a ``Context``) sends orders (``submit``: market, limit, stop-market or stop-limit, with a time in
force and post-only or reduce-only), cancels and replaces them (closed-loop strategies), publishes signals, and
reads the strategy's position, open orders and the latest quotes. An order, a cancel, a replace or a signal is
always about the quote being handled: its id derives from that quote's id and the strategy's id
(``<id>-<quote id>``, ``<id>-<quote id>:cancel<n>``, ``<id>-<quote id>:replace<n>``, ``<id>:<quote id>``), so a
quote handled again after a restart yields the very same ids, which the streams and execution de-duplicate.

When a closed-loop strategy's events reach it (the rule of ``rrr.execution.lockstep``, the same in the backtest
and in the service, which holds the quotes back to keep it): at each quote, first the venue matches the resting
orders at it, and their fills, triggers and expiries there are delivered before ``on_quote``; the orders,
cancels and replaces it sends at the quote take effect after that matching, and their outcomes (accepted,
rejected, filled at once, canceled, refused ...) are delivered right after ``on_quote``, before the next quote.
So a cancel always lands between the quote it was sent at and the next, and a backtest gives the service's fills.

The contract (what makes a restarted strategy send exactly the orders of an uninterrupted run):

1. Deterministic: the handlers depend only on what they are given, the parameters and the strategy's own
   state. No wall clock, no randomness that is not seeded from the parameters, no I/O.
2. Its state survives a restart: either a msgspec-serialisable ``self.state`` of type ``state_type``, or
   ``snapshot()``/``restore(state)`` overridden.
3. At most one order and one signal per quote it handles (the ids derive from the quote), and at most
   ``MAX_COMMANDS_PER_QUOTE`` cancels and replaces, one per order.

A handler that raises, or returns anything but None, stops that strategy (counted, logged, in the
heartbeat's ``strategies_stopped``); the service's other strategies go on. The stop is part of the state,
so a restarted service keeps the strategy stopped. Bad input to the context (a price that is no positive
number, a flag a type cannot take, a cancel of an order that is not open ...) raises ``StrategyApiError``
saying what was expected and what was given, which stops the strategy like any exception.
"""

from __future__ import annotations

import decimal
import hashlib
import heapq
from collections.abc import Callable, Mapping
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Literal, TypeVar, get_args, get_origin

import msgspec

from rrr.shared.errors import RRRError
from rrr.shared.fixed import to_decimal
from rrr.shared.messages import (
    ORDER_ID_MAX,
    CancelOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
    OrderType,
    OrderUpdate,
    QuoteRow,
    ReplaceOrder,
    Side,
    Signal,
    SubmitOrder,
    TimeInForce,
    Trade,
    check_number,
)
from rrr.shared.positions import Position

__all__ = [
    "MAX_COMMANDS_PER_QUOTE",
    "Context",
    "NoParams",
    "OpenOrder",
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
# Cancels and replaces one strategy may send at one quote (besides its one order).
MAX_COMMANDS_PER_QUOTE = 16
_TIFS = ("gtc", "ioc", "fok", "gtd")
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


class OpenOrder(msgspec.Struct, frozen=True, kw_only=True):
    """One of a closed-loop strategy's orders that is not finished, as its events say it is now.

    ``status`` is ``sent`` until execution's answer is delivered (right after the quote that sent it), then
    ``accepted`` or ``partially_filled``; a filled, canceled, expired or rejected order is no longer open.
    ``qty``, ``limit_price`` and ``stop_price`` are its values after its last replace; ``filled_qty`` what it
    filled, ``leaves_qty`` what is left of it.
    """

    id: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType = "market"
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: TimeInForce = "gtc"
    expire_ts: int = 0
    post_only: bool = False
    reduce_only: bool = False
    # The event time of the quote it was sent at.
    ts_event: int = 0
    status: Literal["sent", "accepted", "partially_filled"] = "sent"
    filled_qty: Decimal = Decimal(0)
    # Fills applied (a fill's id ends in its number: one applied already is not applied again).
    fills: int = 0
    triggered: bool = False
    replaces: int = 0

    @property
    def leaves_qty(self) -> Decimal:
        """What is left of it to fill."""
        return self.qty - self.filled_qty

    @classmethod
    def of(cls, order: SubmitOrder) -> OpenOrder:
        """``order`` as sent, nothing heard of it yet."""
        return cls(
            id=order.id, symbol=order.symbol, side=order.side, qty=order.qty, order_type=order.order_type,
            limit_price=order.limit_price, stop_price=order.stop_price, tif=order.tif, expire_ts=order.expire_ts,
            post_only=order.post_only, reduce_only=order.reduce_only, ts_event=order.ts_event,
        )  # fmt: skip


class StrategyApiError(RRRError):
    """A strategy used its context wrongly (an order outside a quote, a second order on one quote ...)."""

    def __init__(self, strategy: str, what: str) -> None:
        self.strategy = strategy
        super().__init__(f"strategy {strategy}: {what}")


_SEND_AND_FORGET = (
    "{what} needs the strategy to read its orders' events: it does not override on_order_event, so it sends "
    "and forgets, and its ctx.position assumes each order is a market order that fills whole at its quote's "
    "touch. Override on_order_event (closed-loop: its orders' fills and outcomes are delivered to it, and its "
    "position follows them) to send limit and stop orders, time in force, post_only or reduce_only, and to "
    "cancel or replace"
)


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
        "_command_quote",
        "_commanded",
        "_cursor",
        "_latest",
        "_latest_at",
        "_open",
        "_open_view",
        "_order_quote",
        "_signal_quote",
        "_timer_seq",
        "_unapplied",
        "open_symbols",
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
        latest_at: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        self.strategy_id = strategy_id
        self._clock = clock
        self._latest = latest
        # Where the latest quote of each symbol is in the market-data stream (closed-loop strategies: a replace
        # names the newest quote of its order's symbol).
        self._latest_at = {} if latest_at is None else latest_at
        # A strategy that does not read its orders' outcomes: an order counts as filled at its quote's touch
        # when sent (the paper venue's rule). A closed-loop one waits for the real events instead.
        self._assume_fills = assume_fills
        self._cursor = cursor or Cursor()
        # The quotes the last order and the last signal were sent at: at most one of each per quote.
        self._order_quote: QuoteRow | None = None
        self._signal_quote: QuoteRow | None = None
        # The quote the last cancel or replace was sent at, and the orders commanded at it.
        self._command_quote: QuoteRow | None = None
        self._commanded: list[str] = []
        self.out: list[Signal | SubmitOrder | CancelOrder | ReplaceOrder] = []
        self.positions: dict[str, Position] = {}
        # Assumed fills not yet applied to ``positions``: applied when a position is read (exact fractions
        # cost microseconds, and most strategies never read theirs).
        self._unapplied: list[tuple[str, Side, Decimal, Decimal]] = []
        self._open: dict[str, OpenOrder] = {}
        self._open_view = MappingProxyType(self._open)
        # Open orders per symbol (closed-loop): where the strategy must see the venue's matching before a quote.
        self.open_symbols: dict[str, int] = {}
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

    @property
    def open_orders(self) -> Mapping[str, OpenOrder]:
        """A closed-loop strategy's orders that are not finished, by id, as their events say they are (read-only;
        always empty for a strategy that sends and forgets)."""
        return self._open_view

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

    def submit(
        self,
        side: Side,
        qty: Decimal | int | str | Fraction,
        *,
        limit: Decimal | int | str | Fraction | None = None,
        stop: Decimal | int | str | Fraction | None = None,
        tif: TimeInForce = "gtc",
        expire_ts: int = 0,
        post_only: bool = False,
        reduce_only: bool = False,
    ) -> SubmitOrder:
        """Send an order for the symbol of the quote being handled; its type follows from the prices given:
        none a market order, ``limit`` a limit order, ``stop`` a stop-market order, both a stop-limit order.

        ``tif``: ``gtc`` (rests until filled or canceled), ``ioc``, ``fok``, or ``gtd`` with ``expire_ts`` (event
        time in ns, after the quote's). ``post_only``: a limit order that would take on arrival is rejected.
        ``reduce_only``: fills only what reduces the symbol's position. Prices and quantities are exact decimals
        (``price(units, places)`` turns a quote's fixed point into one). Only a closed-loop strategy (one that
        overrides ``on_order_event``) may send anything but a plain market order.

        Raises:
            StrategyApiError: no quote is being handled, an order was sent on it already, or an argument is not
                valid (said which, and why).
        """
        row = self._require_quote("submit an order")
        if self._order_quote is row:
            raise StrategyApiError(self.strategy_id, f"a second order on quote {row.id}: at most one per quote")
        if side != "buy" and side != "sell":
            raise StrategyApiError(self.strategy_id, f"order side must be 'buy' or 'sell', got {side!r}")
        amount = self._number("qty", qty, positive=True)
        try:
            if (
                limit is None and stop is None and tif == "gtc" and type(expire_ts) is int and expire_ts == 0
                and post_only is False and reduce_only is False
            ):  # fmt: skip
                # A plain market order (all a strategy that sends and forgets sends): on the wire as it always was.
                order = self._order(row, side, amount)
            else:
                order = self._typed_order(row, side, amount, limit, stop, tif, expire_ts, post_only, reduce_only)
        except ValueError as exc:
            # A Decimal is checked by the message itself (checking it here first would cost every order twice).
            raise StrategyApiError(self.strategy_id, f"invalid order: {exc}") from None
        self._order_quote = row
        self.out.append(order)
        if self._assume_fills:
            self._unapplied.append((row.symbol, side, amount, order.quote_ask if side == "buy" else order.quote_bid))
            if len(self._unapplied) >= 1024:
                self.apply_fills()
        else:
            self.track(OpenOrder.of(order))
        return order

    def _typed_order(
        self,
        row: QuoteRow,
        side: Side,
        amount: Decimal,
        limit: object,
        stop: object,
        tif: object,
        expire_ts: object,
        post_only: object,
        reduce_only: object,
    ) -> SubmitOrder:
        """``submit``'s order with prices, a time in force or flags, after checking they go together."""
        limit_price = None if limit is None else self._number("limit", limit, positive=True)
        stop_price = None if stop is None else self._number("stop", stop, positive=True)
        order_type: OrderType = (
            ("stop_limit" if limit_price is not None else "stop_market")
            if stop_price is not None
            else ("limit" if limit_price is not None else "market")
        )
        self._check_terms(order_type, row, tif, expire_ts, post_only, reduce_only)
        return self._order(
            row,
            side,
            amount,
            order_type=order_type,
            limit_price=limit_price,
            stop_price=stop_price,
            tif=tif,
            expire_ts=expire_ts,
            post_only=bool(post_only),
            reduce_only=bool(reduce_only),
        )

    def _order(self, row: QuoteRow, side: Side, amount: Decimal, **terms: Any) -> SubmitOrder:
        """The order sent at ``row``: its id, times and quote from the quote being handled; ``terms`` (checked by
        the caller) its type, prices, time in force and flags, left at a market order's when not given."""
        return SubmitOrder(
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
            # Closed-loop: matched at later quotes only as far as this strategy handled them (its markers).
            lockstep=not self._assume_fills,
            **terms,
        )

    def cancel(self, order_id: str) -> CancelOrder:
        """Cancel what is open of one of this strategy's open orders (``open_orders``). It takes effect once the
        venue matched the quote being handled, before the next: a fill at this quote was delivered already, and
        none comes after it. Its outcome (``OrderCanceled``, or ``OrderCancelRejected`` with the reason) is
        delivered right after this quote.

        Raises:
            StrategyApiError: no quote is being handled, the strategy sends and forgets, the order is not one of
                its open orders, it was commanded at this quote already, or too many commands were sent on it.
        """
        row = self._require_quote("cancel an order")
        order = self._commandable("cancel", order_id, row)
        command = CancelOrder(
            id=self._command_id(row, "cancel"),
            ts_event=row.ts_event,
            ts_init=self._clock(),
            strategy=self.strategy_id,
            symbol=order.symbol,
            client_order_id=order.id,
        )
        self.out.append(command)
        return command

    def replace(
        self,
        order_id: str,
        *,
        qty: Decimal | int | str | Fraction | None = None,
        limit: Decimal | int | str | Fraction | None = None,
        stop: Decimal | int | str | Fraction | None = None,
    ) -> ReplaceOrder:
        """Change one of this strategy's open orders: its total quantity (filled part included, so above what it
        filled), its limit price (a limit or stop-limit order) or its stop price (a stop order not yet
        triggered); None keeps a value. From the next quote on the order trades as one arriving there; a
        post-only limit moved through the newest quote of its symbol is refused (``OrderCancelRejected``).

        Raises:
            StrategyApiError: as ``cancel``, or no change given, or a change the order cannot take.
        """
        row = self._require_quote("replace an order")
        order = self._commandable("replace", order_id, row)
        if qty is None and limit is None and stop is None:
            raise StrategyApiError(self.strategy_id, f"replace of {order_id}: give qty, limit or stop, got none")
        new_qty = None if qty is None else self._number("qty", qty, positive=True, strict=True)
        new_limit = None if limit is None else self._number("limit", limit, positive=True, strict=True)
        new_stop = None if stop is None else self._number("stop", stop, positive=True, strict=True)
        if new_qty is not None and new_qty <= order.filled_qty:
            raise StrategyApiError(
                self.strategy_id, f"replace of {order_id}: qty {new_qty} must be above the {order.filled_qty} filled"
            )
        if new_limit is not None and order.limit_price is None:
            raise StrategyApiError(
                self.strategy_id, f"replace of {order_id}: a {order.order_type} order has no limit price to change"
            )
        if new_stop is not None and (order.stop_price is None or order.triggered):
            what = "it triggered already" if order.triggered else f"a {order.order_type} order has no stop price"
            raise StrategyApiError(self.strategy_id, f"replace of {order_id}: cannot change its stop: {what}")
        try:
            command = self._replace_order(row, order, new_qty, new_limit, new_stop)
        except ValueError as exc:
            raise StrategyApiError(self.strategy_id, f"invalid replace of {order_id}: {exc}") from None
        self.out.append(command)
        return command

    def _replace_order(
        self,
        row: QuoteRow,
        order: OpenOrder,
        new_qty: Decimal | None,
        new_limit: Decimal | None,
        new_stop: Decimal | None,
    ) -> ReplaceOrder:
        # Judged at the newest quote of its symbol (the order's own may be another symbol's).
        seq, index = self._latest_at.get(order.symbol, (0, 0))
        latest = self._latest.get(order.symbol)
        return ReplaceOrder(
            id=self._command_id(row, "replace"),
            ts_event=row.ts_event,
            ts_init=self._clock(),
            strategy=self.strategy_id,
            symbol=order.symbol,
            client_order_id=order.id,
            qty=new_qty,
            limit_price=new_limit,
            stop_price=new_stop,
            quote_seq=seq if latest is not None else 0,
            quote_index=index if latest is not None else 0,
            quote_ts=latest.ts_event if latest is not None and seq else 0,
        )

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

    def track(self, order: OpenOrder) -> None:
        """Hold ``order`` as open (closed-loop)."""
        if order.id not in self._open:
            self.open_symbols[order.symbol] = self.open_symbols.get(order.symbol, 0) + 1
        self._open[order.id] = order

    def forget(self, order_id: str) -> None:
        """The order ``order_id`` is finished: no longer open."""
        order = self._open.pop(order_id, None)
        if order is None:
            return
        left = self.open_symbols[order.symbol] - 1
        if left:
            self.open_symbols[order.symbol] = left
        else:
            del self.open_symbols[order.symbol]

    def apply_event(self, event: OrderEvent) -> bool:
        """Take an event of one of this (closed-loop) strategy's orders into its open orders and position; False
        when it is no news (an order not open, or an event already applied: a copy published again)."""
        if isinstance(event, OrderCancelRejected):
            return True
        order = self._open.get(event.client_order_id)
        if order is None:
            return False
        if isinstance(event, OrderFilled):
            number = int(event.id.rpartition(":")[2])
            if number <= order.fills:
                return False
            self.position(event.symbol).apply_fill(event.side, event.qty, event.price, event.fee)
            if event.open_qty == 0:
                self.forget(order.id)
            else:
                self._open[order.id] = msgspec.structs.replace(
                    order, status="partially_filled", filled_qty=event.filled_qty, fills=number
                )
        elif isinstance(event, OrderAccepted):
            if order.status != "sent":
                return False
            self._open[order.id] = msgspec.structs.replace(order, status="accepted")
        elif isinstance(event, OrderTriggered):
            if order.triggered:
                return False
            self._open[order.id] = msgspec.structs.replace(order, triggered=True)
        elif isinstance(event, OrderReplaced):
            if event.replaces <= order.replaces:
                return False
            self._open[order.id] = msgspec.structs.replace(
                order, qty=event.qty, limit_price=event.limit_price, stop_price=event.stop_price,
                replaces=event.replaces,
            )  # fmt: skip
        elif isinstance(event, OrderRejected | OrderCanceled | OrderExpired):
            self.forget(order.id)
        return True

    def _check_terms(
        self,
        order_type: OrderType,
        row: QuoteRow,
        tif: object,
        expire_ts: object,
        post_only: object,
        reduce_only: object,
    ) -> None:
        """Refuse a time in force or flag an order of ``order_type`` cannot take, as execution would, but here."""
        if tif not in _TIFS:
            raise StrategyApiError(self.strategy_id, f"tif must be one of {', '.join(_TIFS)}, got {tif!r}")
        if not isinstance(expire_ts, int) or isinstance(expire_ts, bool) or expire_ts < 0:
            raise StrategyApiError(self.strategy_id, f"expire_ts must be integer nanoseconds >= 0, got {expire_ts!r}")
        for name, flag in (("post_only", post_only), ("reduce_only", reduce_only)):
            if not isinstance(flag, bool):
                raise StrategyApiError(self.strategy_id, f"{name} must be True or False, got {flag!r}")
        if tif == "gtd":
            if order_type == "market":
                raise StrategyApiError(self.strategy_id, "a market order fills at once: tif 'gtd' does not apply")
            if expire_ts <= row.ts_event:
                raise StrategyApiError(
                    self.strategy_id, f"expire_ts {expire_ts} must be after the quote's time {row.ts_event} (tif 'gtd')"
                )
        elif expire_ts:
            raise StrategyApiError(self.strategy_id, f"expire_ts is for tif 'gtd', got {expire_ts} with {tif!r}")
        if post_only:
            if order_type != "limit":
                raise StrategyApiError(self.strategy_id, f"post_only is for limit orders, got a {order_type} order")
            if tif == "ioc" or tif == "fok":
                raise StrategyApiError(self.strategy_id, f"a post_only order rests: tif {tif!r} does not go with it")
        if self._assume_fills and (order_type != "market" or tif != "gtc" or post_only or reduce_only):
            raise StrategyApiError(
                self.strategy_id,
                _SEND_AND_FORGET.format(
                    what=f"a {order_type} order, tif {tif!r}"
                    f"{', post_only' if post_only else ''}{', reduce_only' if reduce_only else ''}"
                ),
            )

    def _commandable(self, verb: str, order_id: object, row: QuoteRow) -> OpenOrder:
        """The open order a cancel or replace at ``row`` is for, after the checks every command passes."""
        if self._assume_fills:
            raise StrategyApiError(self.strategy_id, _SEND_AND_FORGET.format(what=f"a {verb}"))
        if not isinstance(order_id, str):
            raise StrategyApiError(self.strategy_id, f"{verb}: the order id must be a str, got {order_id!r}")
        order = self._open.get(order_id)
        if order is None:
            raise StrategyApiError(
                self.strategy_id,
                f"cannot {verb} {order_id!r}: not one of this strategy's open orders (ctx.open_orders holds "
                f"{len(self._open)}; a filled, canceled, expired or rejected order is finished)",
            )
        if self._command_quote is not row:
            self._command_quote = row
            self._commanded = []
        if order_id in self._commanded:
            raise StrategyApiError(
                self.strategy_id, f"cannot {verb} {order_id}: it was canceled or replaced at quote {row.id} already"
            )
        if len(self._commanded) >= MAX_COMMANDS_PER_QUOTE:
            raise StrategyApiError(
                self.strategy_id,
                f"a {MAX_COMMANDS_PER_QUOTE + 1}th cancel or replace on quote {row.id}: at most "
                f"{MAX_COMMANDS_PER_QUOTE} per quote",
            )
        self._commanded.append(order_id)
        return order

    def _command_id(self, row: QuoteRow, kind: str) -> str:
        """``<strategy>-<quote id>:<kind><n>``, the n-th cancel or replace at ``row``: the same for the same quote
        handled again; a digest of the quote id where the whole would be longer than an order id may be."""
        suffix = f":{kind}{len(self._commanded)}"
        command_id = f"{self.strategy_id}-{row.id}{suffix}"
        if len(command_id) > ORDER_ID_MAX:
            digest = hashlib.blake2b(row.id.encode(), digest_size=16).hexdigest()
            command_id = f"{self.strategy_id}-{digest}{suffix}"
        return command_id

    def _require_quote(self, what: str) -> QuoteRow:
        quote = self._cursor.quote
        if quote is None:
            raise StrategyApiError(
                self.strategy_id, f"cannot {what} outside on_quote or on_timer: no quote to price it"
            )
        return quote

    def _number(
        self, name: str, value: object, *, positive: bool = False, signed: bool = False, strict: bool = False
    ) -> Decimal:
        if isinstance(value, bool | float) or not isinstance(value, Decimal | int | str | Fraction):
            raise StrategyApiError(self.strategy_id, f"{name} must be a Decimal, int, str or Fraction, got {value!r}")
        if isinstance(value, Decimal) and not strict:
            return value  # the message checks its bounds and sign when built (the caller says so if it is wrong)
        try:
            if isinstance(value, Fraction):  # a position's quantity: exact, or refused
                number = _EXACT.divide(Decimal(value.numerator), Decimal(value.denominator))
            else:
                number = Decimal(value)
            check_number(name, number, positive=positive, signed=signed)
        except (ArithmeticError, ValueError) as exc:
            raise StrategyApiError(self.strategy_id, f"invalid {name} {value!r}: {exc}") from None
        return number
