"""Factories of wire messages for tests: valid by default, every field overridable.

Ids are unique per call unless given, so that a test never collides with another test's messages in a
shared stream or its de-duplication window. Numbers are taken as ``Decimal``, ``int`` or decimal text.
"""

from __future__ import annotations

import itertools
import secrets
import time
from decimal import Decimal

from rrr.shared import subjects
from rrr.shared.messages import (
    CancelOrder,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    OrderType,
    PositionUpdated,
    Quote,
    ReplaceOrder,
    Side,
    Signal,
    SubmitOrder,
    TimeInForce,
    Trade,
)

Number = Decimal | int | str

_counter = itertools.count(1)


def _dec(value: Number) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def unique_id(prefix: str = "test") -> str:
    """An id no other call returns: ``<prefix>-<random hex>-<n>``."""
    return f"{prefix}-{secrets.token_hex(4)}-{next(_counter)}"


def unique_symbol(prefix: str = "T", *, shard: int | None = None, shards: int = 1) -> str:
    """A valid symbol of its own (``<prefix>-<HEX>``), owned by ``shard`` of ``shards`` when given."""
    subjects.check_symbol(prefix)
    while True:
        symbol = f"{prefix}-{secrets.token_hex(4).upper()}"
        if shard is None or subjects.shard_of(symbol, shards) == shard:
            return symbol


def make_quote(
    symbol: str = "EURUSD",
    *,
    bid: Number = "1.1000",
    ask: Number = "1.1002",
    id: str | None = None,
    ts_event: int | None = None,
    bid_size: Number | None = None,
    ask_size: Number | None = None,
) -> Quote:
    """A quote of ``symbol``."""
    now = time.time_ns()
    return Quote(
        id=id or unique_id("q"),
        ts_event=now if ts_event is None else ts_event,
        ts_init=now,
        symbol=symbol,
        bid=_dec(bid),
        ask=_dec(ask),
        bid_size=None if bid_size is None else _dec(bid_size),
        ask_size=None if ask_size is None else _dec(ask_size),
    )


def make_trade(
    symbol: str = "EURUSD",
    *,
    price: Number = "1.1001",
    size: Number = "1000",
    id: str | None = None,
    ts_event: int | None = None,
) -> Trade:
    """A trade of ``symbol``."""
    now = time.time_ns()
    return Trade(
        id=id or unique_id("t"),
        ts_event=now if ts_event is None else ts_event,
        ts_init=now,
        symbol=symbol,
        price=_dec(price),
        size=_dec(size),
        aggressor="buy",
    )


def make_signal(
    symbol: str = "EURUSD",
    *,
    direction: str = "up",
    quote_id: str | None = None,
    fast: Number = "1.1001",
    slow: Number = "1.1000",
    id: str | None = None,
    strategy: str = "sma_cross",
) -> Signal:
    """A strategy signal of ``symbol``; the target follows the direction (+1 up, -1 down)."""
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    now = time.time_ns()
    quote_id = quote_id or unique_id("q")
    return Signal(
        id=id or f"{strategy}:{quote_id}",
        ts_event=now,
        ts_init=now,
        strategy=strategy,
        symbol=symbol,
        quote_id=quote_id,
        direction="up" if direction == "up" else "down",
        fast=_dec(fast),
        slow=_dec(slow),
        target=Decimal(1) if direction == "up" else Decimal(-1),
    )


def make_order(
    symbol: str = "EURUSD",
    *,
    side: Side = "buy",
    qty: Number = 1,
    quote_bid: Number = "100",
    quote_ask: Number = "100.5",
    id: str | None = None,
    strategy: str = "test",
    quote_ts: int | None = None,
    order_type: OrderType = "market",
    limit_price: Number | None = None,
    stop_price: Number | None = None,
    tif: TimeInForce = "gtc",
    expire_ts: int = 0,
    post_only: bool = False,
    reduce_only: bool = False,
) -> SubmitOrder:
    """An order command for ``symbol`` (a market order unless said otherwise); ``id`` is the client order id."""
    now = time.time_ns()
    return SubmitOrder(
        id=id or unique_id("o"),
        ts_event=now,
        ts_init=now,
        strategy=strategy,
        symbol=symbol,
        side=side,
        qty=_dec(qty),
        quote_ts=now if quote_ts is None else quote_ts,
        quote_bid=_dec(quote_bid),
        quote_ask=_dec(quote_ask),
        order_type=order_type,
        limit_price=None if limit_price is None else _dec(limit_price),
        stop_price=None if stop_price is None else _dec(stop_price),
        tif=tif,
        expire_ts=expire_ts,
        post_only=post_only,
        reduce_only=reduce_only,
    )


def make_cancel(order: SubmitOrder, *, id: str | None = None, strategy: str | None = None) -> CancelOrder:
    """A cancel of ``order``, by its client order id."""
    now = time.time_ns()
    return CancelOrder(
        id=id or unique_id("cancel"),
        ts_event=now,
        ts_init=now,
        strategy=strategy or order.strategy,
        symbol=order.symbol,
        client_order_id=order.id,
    )


def make_replace(
    order: SubmitOrder,
    *,
    qty: Number | None = None,
    limit_price: Number | None = None,
    stop_price: Number | None = None,
    id: str | None = None,
) -> ReplaceOrder:
    """A replace of ``order``'s quantity or prices, by its client order id."""
    now = time.time_ns()
    return ReplaceOrder(
        id=id or unique_id("replace"),
        ts_event=now,
        ts_init=now,
        strategy=order.strategy,
        symbol=order.symbol,
        client_order_id=order.id,
        qty=None if qty is None else _dec(qty),
        limit_price=None if limit_price is None else _dec(limit_price),
        stop_price=None if stop_price is None else _dec(stop_price),
    )


def make_order_accepted(order: SubmitOrder) -> OrderAccepted:
    """The acceptance of ``order``, as execution publishes it."""
    now = time.time_ns()
    return OrderAccepted(
        id=f"{order.id}:accepted",
        ts_event=now,
        ts_init=now,
        client_order_id=order.id,
        strategy=order.strategy,
        symbol=order.symbol,
        side=order.side,
        qty=order.qty,
    )


def make_order_rejected(order: SubmitOrder, reason: str = "rejected by a test") -> OrderRejected:
    """The rejection of ``order``, as execution publishes it."""
    now = time.time_ns()
    return OrderRejected(
        id=f"{order.id}:rejected",
        ts_event=now,
        ts_init=now,
        client_order_id=order.id,
        strategy=order.strategy,
        symbol=order.symbol,
        side=order.side,
        qty=order.qty,
        reason=reason,
    )


def make_order_filled(order: SubmitOrder, *, price: Number | None = None, fee: Number = 0) -> OrderFilled:
    """The single fill of ``order``, at the touch unless ``price`` is given."""
    now = time.time_ns()
    touch = order.quote_ask if order.side == "buy" else order.quote_bid
    return OrderFilled(
        id=f"{order.id}:1",
        ts_event=now,
        ts_init=now,
        client_order_id=order.id,
        symbol=order.symbol,
        side=order.side,
        qty=order.qty,
        price=touch if price is None else _dec(price),
        fee=_dec(fee),
        venue="paper",
    )


def make_position(
    symbol: str = "EURUSD",
    *,
    qty: Number = 1,
    avg_price: Number = "100",
    realized_pnl: Number = 0,
    version: int = 1,
) -> PositionUpdated:
    """A position snapshot of ``symbol`` after ``version`` fills."""
    now = time.time_ns()
    return PositionUpdated(
        id=f"{symbol}:{version}",
        ts_event=now,
        ts_init=now,
        symbol=symbol,
        qty=_dec(qty),
        avg_price=_dec(avg_price),
        realized_pnl=_dec(realized_pnl),
        version=version,
    )
