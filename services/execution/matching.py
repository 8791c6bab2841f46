"""Working orders matched against quotes: the paper venue's rules, pure (no I/O, no clock).

The rules, for a buy (a sell mirrors them: bid for ask, ``>=`` for ``<=``):

- **Market**: fills its whole quantity at once at the ask, moved against it by the slippage, as before
  there were other order types (the paper venue has no depth beyond the touch to walk, so a market order
  takes all of it there).
- **Limit**: marketable when it arrives (ask <= limit), it takes at the ask (slippage applied, but never
  beyond the limit), up to the ask's displayed size (all of it when the quote has no sizes). What is left
  rests; a resting order fills at its limit price, without slippage, at the first later quote whose ask is
  at or below it, again up to that quote's displayed size, and so on until it is filled.
- **Stop-market, stop-limit**: trigger when the ask reaches the stop (ask >= stop; a sell's bid <= stop),
  on arrival too; then they are a market or a limit order arriving at that quote.
- **Time in force**: GTC rests until filled or canceled. IOC takes what it can when it can first trade (on
  arrival, or at its trigger) and cancels the rest; FOK takes all of it then or nothing (canceled). GTD
  rests until the first quote at or after its expire time (event time), which expires it before it may fill.
- **Post-only**: a limit order that would take on arrival is rejected.
- **Reduce-only**: fills only as much as reduces the symbol's position; canceled once nothing is left to
  reduce.
- **Fees**: ``fee_bps`` of each fill's notional.

Each order is matched on its own: two orders resting at one price each see a quote's whole displayed size
(the paper venue does not model its own orders' share of the queue), and every order sees each quote at
most once, in stream order, from the one after the quote it was placed at. So an order's fills depend on
the quotes alone, not on when they were processed or which other orders were resting.

Quantities are Decimals handled in a context with room for every number the wire carries, which traps any
rounding: a fill, a remainder or a cumulative quantity is exact or the process stops. Prices and fees are
computed as the paper venue always computed them.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Literal

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop_market", "stop_limit"]
TimeInForce = Literal["gtc", "ioc", "fok", "gtd"]
# Where a quote is in the market-data stream: its sequence, and its index in a batch (0 for a single quote).
At = tuple[int, int]

# Wire numbers have at most 18 digits before the point and 28 after: 46 digits. Any rounding is a bug.
_EXACT = decimal.Context(prec=64, traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation])
_ZERO = Decimal(0)


def _sub(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.subtract(a, b)


def _add(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.add(a, b)


@dataclass(frozen=True, slots=True)
class Costs:
    """Slippage and fees, in basis points, computed exactly as the paper venue always computed them."""

    slippage_bps: Decimal = _ZERO
    fee_bps: Decimal = _ZERO

    def taker_price(self, side: Side, touch: Decimal) -> Decimal:
        """The price an order taking at ``touch`` pays: moved against it by the slippage."""
        if not self.slippage_bps:
            return touch
        sign = 1 if side == "buy" else -1
        return touch + sign * touch * self.slippage_bps / 10_000

    def fee(self, price: Decimal, qty: Decimal) -> Decimal:
        """The fee on a fill of ``qty`` at ``price``."""
        return (price * qty * self.fee_bps / 10_000) if self.fee_bps else _ZERO


@dataclass(frozen=True, slots=True)
class Touch:
    """What matching reads of one quote: its time, best prices and displayed sizes, and where it is in the
    market-data stream."""

    ts_event: int
    bid: Decimal
    ask: Decimal
    bid_size: Decimal | None = None
    ask_size: Decimal | None = None
    at: At = (0, 0)

    def price(self, side: Side) -> Decimal:
        """What an order of ``side`` takes: the ask for a buy, the bid for a sell."""
        return self.ask if side == "buy" else self.bid

    def size(self, side: Side) -> Decimal | None:
        """The displayed size an order of ``side`` may take, None when the quote has no sizes."""
        return self.ask_size if side == "buy" else self.bid_size


@dataclass(slots=True, kw_only=True)
class WorkingOrder:
    """An order the venue holds: what was asked, and how far it got."""

    id: str
    strategy: str
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
    # When it was placed (event time) and at which quote of the stream.
    ts_event: int = 0
    placed_at: At = (0, 0)
    filled: Decimal = _ZERO
    # Fills so far: the next fill's id is ``<id>:<fills + 1>``.
    fills: int = 0
    # A stop whose trigger was touched: from then on a market or limit order.
    triggered: bool = False
    # Replaces so far: the next replace event's id is ``<id>:replaced:<replaces + 1>``.
    replaces: int = 0
    # The last quote it was matched against: it never sees that one or an earlier one again.
    matched_to: At = (0, 0)
    # Replaced since its last quote: the next quote it sees, it trades at as an order arriving there.
    arriving: bool = False

    @property
    def leaves(self) -> Decimal:
        """The quantity still open."""
        return _sub(self.qty, self.filled)

    @property
    def is_stop(self) -> bool:
        """Whether it is a stop order (triggered or not)."""
        return self.order_type == "stop_market" or self.order_type == "stop_limit"

    @property
    def takes_all(self) -> bool:
        """Whether it now trades as a market order: a market order or a triggered stop-market."""
        return self.order_type == "market" or self.order_type == "stop_market"


def invalid(order: WorkingOrder) -> str | None:
    """Why the venue does not accept ``order`` as written (a price its type lacks or should not carry, a time
    in force or flag that does not go with it), or None."""
    kind = order.order_type
    priced = kind == "limit" or kind == "stop_limit"
    stopped = kind == "stop_market" or kind == "stop_limit"
    if priced and order.limit_price is None:
        return f"a {kind} order needs a limit_price"
    if not priced and order.limit_price is not None:
        return f"a {kind} order carries no limit_price, got {order.limit_price}"
    if stopped and order.stop_price is None:
        return f"a {kind} order needs a stop_price"
    if not stopped and order.stop_price is not None:
        return f"a {kind} order carries no stop_price, got {order.stop_price}"
    if order.tif == "gtd":
        if kind == "market":
            return "a market order fills at once: time in force gtd does not apply"
        if order.expire_ts <= order.ts_event:
            return f"expire_ts {order.expire_ts} is not after the order's time {order.ts_event}"
    elif order.expire_ts:
        return f"expire_ts is for time in force gtd, got {order.expire_ts} with {order.tif}"
    if order.post_only:
        if kind != "limit":
            return f"post_only is for limit orders, got a {kind} order"
        if order.tif == "ioc" or order.tif == "fok":
            return f"a post_only order rests: time in force {order.tif} does not go with it"
    return None


# -- what the venue reports ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """The venue holds the order."""

    order: WorkingOrder


@dataclass(frozen=True, slots=True)
class Rejected:
    """The venue refused the order on arrival (only a post-only order that would take)."""

    order: WorkingOrder
    reason: str


@dataclass(frozen=True, slots=True)
class Triggered:
    """A stop order's trigger was touched at the quote at ``at``."""

    order: WorkingOrder
    ts_event: int
    at: At


@dataclass(frozen=True, slots=True)
class Fill:
    """The order's ``number``-th fill; ``cum_qty`` and ``leaves_qty`` are the order's after it."""

    order: WorkingOrder
    number: int
    qty: Decimal
    price: Decimal
    fee: Decimal
    cum_qty: Decimal
    leaves_qty: Decimal
    # Took liquidity (at the touch, slippage applied) rather than rested (at its own limit price).
    taker: bool
    ts_event: int
    at: At


@dataclass(frozen=True, slots=True)
class Canceled:
    """The order's open quantity was canceled: asked for, or by its time in force or reduce-only flag."""

    order: WorkingOrder
    reason: str
    ts_event: int
    at: At


@dataclass(frozen=True, slots=True)
class Expired:
    """A GTD order's expire time was reached at the quote at ``at``."""

    order: WorkingOrder
    ts_event: int
    at: At


@dataclass(frozen=True, slots=True)
class Replaced:
    """The order's quantity or prices were changed."""

    order: WorkingOrder
    ts_event: int


Report = Accepted | Rejected | Triggered | Fill | Canceled | Expired | Replaced


def _crosses(side: Side, limit: Decimal, touch: Touch) -> bool:
    """Whether a limit of ``side`` at ``limit`` can take at ``touch``: a buy's limit at or above the ask."""
    return touch.ask <= limit if side == "buy" else touch.bid >= limit


def _marketable(order: WorkingOrder, touch: Touch) -> bool:
    """Whether a limit (or triggered stop-limit) order can take at ``touch``."""
    limit = order.limit_price
    assert limit is not None
    return _crosses(order.side, limit, touch)


def _would_take(side: Side, limit: Decimal, touch: Touch) -> str:
    """Why a post-only limit is refused at ``touch``."""
    if side == "buy":
        return f"post-only order would take liquidity: ask {touch.ask} <= limit {limit}"
    return f"post-only order would take liquidity: bid {touch.bid} >= limit {limit}"


def _touched(order: WorkingOrder, touch: Touch) -> bool:
    """Whether a stop order's trigger is reached at ``touch``."""
    stop = order.stop_price
    assert stop is not None
    return touch.ask >= stop if order.side == "buy" else touch.bid <= stop


def _reducible(order: WorkingOrder, net: Fraction) -> Decimal:
    """How much of the symbol's position ``net`` an order of its side would reduce."""
    if (order.side == "sell" and net > 0) or (order.side == "buy" and net < 0):
        # A sum of decimal quantities: its denominator is a power of ten's divisor, so the quotient is exact.
        return _EXACT.divide(Decimal(abs(net.numerator)), Decimal(net.denominator))
    return _ZERO


@dataclass(slots=True)
class SymbolBook:
    """The orders the venue holds for one symbol, and the newest quote it matched them against.

    Orders are kept in the order they were placed; they are matched in that order, which decides only the
    order of the reports (each order is matched on its own, see the module's docstring). ``net`` is the
    symbol's position as execution holds it, for reduce-only orders; each call moves its own copy by the
    fills it reports.
    """

    symbol: str
    costs: Costs = field(default_factory=Costs)
    orders: dict[str, WorkingOrder] = field(default_factory=dict)
    # The newest quote matched (by position in the stream): where a replaced order is evaluated again.
    last: Touch | None = None

    def __len__(self) -> int:
        return len(self.orders)

    def __iter__(self) -> Iterator[WorkingOrder]:
        return iter(self.orders.values())

    def submit(self, order: WorkingOrder, touch: Touch, net: Fraction = Fraction(0)) -> list[Report]:
        """Place ``order`` at ``touch``, the quote it was sent at: accepted (and, if it can trade there,
        filled as far as it can) or rejected.

        Raises:
            ValueError: the order is invalid (see ``invalid``) or already here; the caller checks first.
        """
        reason = invalid(order)
        if reason is not None:
            raise ValueError(f"order {order.id}: {reason}")
        if order.id in self.orders:
            raise ValueError(f"order {order.id} is in the book already")
        if order.post_only and order.limit_price is not None and _marketable(order, touch):
            return [Rejected(order, _would_take(order.side, order.limit_price, touch))]
        order.placed_at = order.matched_to = touch.at
        self._see(touch)
        out: list[Report] = [Accepted(order)]
        self.orders[order.id] = order
        if order.tif == "gtd" and touch.ts_event >= order.expire_ts:
            self._remove(order)
            out.append(Expired(order, touch.ts_event, touch.at))
            return out
        out.extend(self._arrive(order, touch, [net]))
        return out

    def on_quote(
        self, touch: Touch, net: Fraction = Fraction(0), hold: Callable[[WorkingOrder], bool] | None = None
    ) -> list[Report]:
        """Match every order that has not seen ``touch`` yet against it; return what happened, in order.

        A quote at or before an order's ``matched_to`` leaves it alone: feeding the quotes after an order's
        placement to the book again (an order that arrived late, a restart) never matches one twice. An order
        ``hold`` says yes to is left alone too, without seeing the quote: it sees it when shown it again
        (a lockstep strategy's, see ``rrr.execution.lockstep``).
        """
        self._see(touch)
        out: list[Report] = []
        position = [net]
        for order in list(self.orders.values()):
            if order.matched_to >= touch.at or (hold is not None and hold(order)):
                continue
            order.matched_to = touch.at
            if order.tif == "gtd" and touch.ts_event >= order.expire_ts:
                self._remove(order)
                out.append(Expired(order, touch.ts_event, touch.at))
                continue
            if (order.is_stop and not order.triggered) or order.arriving:
                order.arriving = False
                out.extend(self._arrive(order, touch, position))
                continue
            out.extend(self._rest(order, touch, position))
        return out

    def cancel(self, order_id: str, reason: str, ts_event: int) -> list[Report]:
        """Cancel an order's open quantity.

        Raises:
            KeyError: the book holds no such order.
        """
        order = self.orders[order_id]
        self._remove(order)
        return [Canceled(order, reason, ts_event, order.matched_to)]

    def replace(
        self,
        order_id: str,
        ts_event: int,
        *,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        touch: Touch | None = None,
    ) -> list[Report]:
        """Change an order's quantity, limit or stop price (None: unchanged), from the next quote on, which it
        trades at as an order arriving there: a limit moved through the market takes at the touch, a stop
        moved through its trigger triggers (it saw the newest quote already, and sees no quote twice). A
        post-only limit moved through ``touch`` (by default the newest quote matched) is refused and left as
        it was.

        Returns [Replaced] or [Rejected] (the replace refused, the order unchanged).

        Raises:
            KeyError: the book holds no such order.
            ValueError: the new quantity is not above what is filled, or a price its type does not carry.
        """
        order = self.orders[order_id]
        if qty is not None and qty <= order.filled:
            raise ValueError(f"order {order_id}: qty {qty} is not above the {order.filled} filled")
        if limit_price is not None and order.limit_price is None:
            raise ValueError(f"order {order_id}: a {order.order_type} order has no limit_price to replace")
        if stop_price is not None and (order.stop_price is None or order.triggered):
            raise ValueError(f"order {order_id}: a {order.order_type} order has no stop_price to replace")
        touch = self.last if touch is None else touch
        new_limit = order.limit_price if limit_price is None else limit_price
        if order.post_only and touch is not None and new_limit is not None and _crosses(order.side, new_limit, touch):
            return [Rejected(order, _would_take(order.side, new_limit, touch))]
        if qty is not None:
            order.qty = qty
        order.limit_price = new_limit
        if stop_price is not None:
            order.stop_price = stop_price
        order.replaces += 1
        # A post-only order never takes: it goes on resting at its new price.
        order.arriving = not order.post_only
        return [Replaced(order, ts_event)]

    # -- the rules ---------------------------------------------------------------------------------------

    def _see(self, touch: Touch) -> None:
        if self.last is None or touch.at > self.last.at:
            self.last = touch

    def _remove(self, order: WorkingOrder) -> None:
        del self.orders[order.id]

    def _arrive(self, order: WorkingOrder, touch: Touch, net: list[Fraction]) -> list[Report]:
        """An order that can trade for the first time at ``touch``: placed, replaced, or a stop not yet
        triggered. Its time in force (IOC, FOK) applies here."""
        out: list[Report] = []
        if order.is_stop and not order.triggered:
            if not _touched(order, touch):
                return out
            order.triggered = True
            out.append(Triggered(order, touch.ts_event, touch.at))
        if order.takes_all:
            wanted = order.leaves
            available = wanted
        elif _marketable(order, touch):
            size = touch.size(order.side)
            wanted = order.leaves
            available = wanted if size is None else min(wanted, size)
        else:
            if order.tif == "ioc" or order.tif == "fok":
                side = "ask" if order.side == "buy" else "bid"
                self._remove(order)
                out.append(
                    Canceled(
                        order,
                        f"{order.tif}: not marketable, {side} {touch.price(order.side)} against limit "
                        f"{order.limit_price}",
                        touch.ts_event,
                        touch.at,
                    )
                )
            return out
        if order.reduce_only:
            available = min(available, _reducible(order, net[0]))
        if order.tif == "fok" and available < wanted:
            self._remove(order)
            out.append(Canceled(order, f"fok: {available} available of {wanted}", touch.ts_event, touch.at))
            return out
        if available > 0:
            price = self.costs.taker_price(order.side, touch.price(order.side))
            if order.limit_price is not None:
                # Slippage never takes a limit order beyond its limit.
                price = min(price, order.limit_price) if order.side == "buy" else max(price, order.limit_price)
            out.append(self._fill(order, available, price, taker=True, touch=touch, net=net))
        if order.leaves == 0:
            self._remove(order)
        elif order.reduce_only and _reducible(order, net[0]) == 0:
            self._remove(order)
            out.append(Canceled(order, "reduce-only: nothing left to reduce", touch.ts_event, touch.at))
        elif order.tif == "ioc":
            self._remove(order)
            out.append(Canceled(order, f"ioc: {order.leaves} not filled at once", touch.ts_event, touch.at))
        return out

    def _rest(self, order: WorkingOrder, touch: Touch, net: list[Fraction]) -> list[Report]:
        """A resting limit order (or triggered stop-limit) at a later quote: filled at its limit price, up to
        the displayed size, when the quote reaches it."""
        if not _marketable(order, touch):
            return []
        size = touch.size(order.side)
        available = order.leaves if size is None else min(order.leaves, size)
        out: list[Report] = []
        if order.reduce_only:
            available = min(available, _reducible(order, net[0]))
            if available == 0:
                self._remove(order)
                return [Canceled(order, "reduce-only: nothing left to reduce", touch.ts_event, touch.at)]
        if available == 0:
            return out
        limit = order.limit_price
        assert limit is not None
        out.append(self._fill(order, available, limit, taker=False, touch=touch, net=net))
        if order.leaves == 0:
            self._remove(order)
        elif order.reduce_only and _reducible(order, net[0]) == 0:
            self._remove(order)
            out.append(Canceled(order, "reduce-only: nothing left to reduce", touch.ts_event, touch.at))
        return out

    def _fill(
        self, order: WorkingOrder, qty: Decimal, price: Decimal, *, taker: bool, touch: Touch, net: list[Fraction]
    ) -> Fill:
        order.filled = _add(order.filled, qty)
        order.fills += 1
        signed = Fraction(qty) if order.side == "buy" else -Fraction(qty)
        net[0] += signed
        return Fill(
            order=order,
            number=order.fills,
            qty=qty,
            price=price,
            fee=self.costs.fee(price, qty),
            cum_qty=order.filled,
            leaves_qty=order.leaves,
            taker=taker,
            ts_event=touch.ts_event,
            at=touch.at,
        )
