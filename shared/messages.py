"""Wire schemas: every message that crosses NATS, as tagged msgspec Structs.

Each message carries an ``id`` and integer-nanosecond times: ``ts_event`` (when the thing happened, in
the source's clock) and ``ts_init`` (when this process created the message). Prices, sizes and money are
``Decimal`` and travel as decimal text, so no binary float ever rounds a price or a cent.

Tags carry a version (``quote.v1``). Schema evolution follows msgspec's rules: new fields go last with a
default, a field never changes its type, and a changed meaning gets a new tag.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from rrr.shared.subjects import check_symbol

Side = Literal["buy", "sell"]


# Ids are header values (Nats-Msg-Id) and database keys: printable ASCII, no spaces, bounded.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[!-~]+$")]
# Nanoseconds since the epoch, within PostgreSQL's bigint.
Nanos = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]

# Strategy and venue names.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]

# Bounds on every price, size and amount: at most 18 digits before the point and 28 after. Far beyond any
# real market, and inside what PostgreSQL's numeric, asyncpg's encoder (which turns some values of huge
# exponent into 0 without a word) and the strategy's exact arithmetic all handle without rounding.
_MAX_INT_DIGITS = 18
_MAX_PLACES = 28


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """Base of every wire message."""

    id: Id
    ts_event: Nanos
    ts_init: Nanos


def check_number(name: str, value: Decimal, *, positive: bool = False, signed: bool = False) -> None:
    """Raise ValueError unless ``value`` is finite, of the right sign and within the wire's bounds."""
    # ValueError, so that msgspec reports it as a ValidationError naming the message.
    if not value.is_finite():
        raise ValueError(f"{name} must be a finite number, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if not signed and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    exponent = value.as_tuple().exponent
    if value and (value.adjusted() >= _MAX_INT_DIGITS or (isinstance(exponent, int) and exponent < -_MAX_PLACES)):
        raise ValueError(
            f"{name} {value} is out of range: at most {_MAX_INT_DIGITS} digits before the point and {_MAX_PLACES} after"
        )


def _positive(name: str, value: Decimal) -> None:
    check_number(name, value, positive=True)


# -- market data ---------------------------------------------------------------------------------------


class Quote(Message, frozen=True, kw_only=True, tag="quote.v1"):
    """Best bid and ask of one symbol at one time."""

    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal | None = None
    ask_size: Decimal | None = None

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("bid", self.bid)
        _positive("ask", self.ask)
        if self.bid > self.ask:
            raise ValueError(f"crossed quote: bid {self.bid} > ask {self.ask}")
        for name, size in (("bid_size", self.bid_size), ("ask_size", self.ask_size)):
            if size is not None:
                check_number(name, size)


class Trade(Message, frozen=True, kw_only=True, tag="trade.v1"):
    """One trade printed by a venue."""

    symbol: str
    price: Decimal
    size: Decimal
    aggressor: Literal["buy", "sell", "unknown"] = "unknown"

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("price", self.price)
        _positive("size", self.size)


# -- strategy ------------------------------------------------------------------------------------------


class Signal(Message, frozen=True, kw_only=True, tag="signal.v1"):
    """A strategy's decision at one quote; ``fast`` and ``slow`` are rounded for display only."""

    strategy: Name
    symbol: str
    quote_id: Id
    direction: Literal["up", "down"]
    fast: Decimal
    slow: Decimal
    target: Decimal

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("fast", self.fast)
        _positive("slow", self.slow)
        check_number("target", self.target, signed=True)


# -- order commands ------------------------------------------------------------------------------------


class SubmitOrder(Message, frozen=True, kw_only=True, tag="submit_order.v1"):
    """Ask execution to place an order. ``id`` is the client order id.

    The order names its triggering quote: ``quote_seq``, its sequence in the market-data stream, and
    ``quote_ts``, its time. The paper venue reads that quote from the stream itself and fills at its
    touch, however late the order is processed. ``quote_bid`` and ``quote_ask`` are what the sender saw,
    kept for the record: never a price.
    """

    strategy: Name
    symbol: str
    side: Side
    qty: Decimal
    order_type: Literal["market"] = "market"
    quote_ts: Nanos
    quote_bid: Decimal
    quote_ask: Decimal
    # Added later, so last and with a default: 0 (an older sender) means "the latest quote of the symbol".
    quote_seq: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("qty", self.qty)
        _positive("quote_bid", self.quote_bid)
        _positive("quote_ask", self.quote_ask)
        if self.quote_bid > self.quote_ask:
            raise ValueError(f"crossed trigger quote: bid {self.quote_bid} > ask {self.quote_ask}")


# -- order events --------------------------------------------------------------------------------------


class OrderAccepted(Message, frozen=True, kw_only=True, tag="order_accepted.v1"):
    """An order passed pre-trade risk and was sent to the venue."""

    client_order_id: Id
    strategy: Name
    symbol: str
    side: Side
    qty: Decimal
    order_type: Literal["market"] = "market"

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("qty", self.qty)


class OrderRejected(Message, frozen=True, kw_only=True, tag="order_rejected.v1"):
    """An order failed pre-trade risk or was refused by the venue."""

    client_order_id: Id
    strategy: Name
    symbol: str
    side: Side
    qty: Decimal
    order_type: Literal["market"] = "market"
    reason: str

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("qty", self.qty)


class OrderFilled(Message, frozen=True, kw_only=True, tag="order_filled.v1"):
    """A fill of an order; ``id`` is the fill id."""

    client_order_id: Id
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    venue: Name

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("qty", self.qty)
        _positive("price", self.price)
        check_number("fee", self.fee)


class PositionUpdated(Message, frozen=True, kw_only=True, tag="position_updated.v1"):
    """A symbol's position after a fill; ``version`` counts the fills applied so far.

    ``avg_price`` and ``realized_pnl`` have at most 12 decimal places (rounded half-even when the true
    value has more); ``exact_avg_price`` and ``exact_realized_pnl`` carry the exact values as fractions
    (``"n/d"``), so that a restarted execution service continues from exactly where it was.
    """

    symbol: str
    qty: Decimal
    avg_price: Decimal
    realized_pnl: Decimal
    version: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    exact_avg_price: str = ""
    exact_realized_pnl: str = ""

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        check_number("qty", self.qty, signed=True)
        check_number("avg_price", self.avg_price)
        check_number("realized_pnl", self.realized_pnl, signed=True)


# -- control -------------------------------------------------------------------------------------------


class Heartbeat(Message, frozen=True, kw_only=True, tag="heartbeat.v1"):
    """Liveness and counters of one service instance."""

    service: str
    instance: str
    shard: int
    shards: int
    status: Literal["starting", "ok", "stopping"]
    counters: dict[str, int] = {}


MarketData = Quote | Trade
OrderCommand = SubmitOrder
OrderEvent = OrderAccepted | OrderRejected | OrderFilled | PositionUpdated
AnyMessage = (
    Quote | Trade | Signal | SubmitOrder | OrderAccepted | OrderRejected | OrderFilled | PositionUpdated | Heartbeat
)

# Encoders and decoders are built once and reused: building them is the expensive part.
encoder = msgspec.msgpack.Encoder()
market_data_decoder = msgspec.msgpack.Decoder(MarketData)
signal_decoder = msgspec.msgpack.Decoder(Signal)
order_command_decoder = msgspec.msgpack.Decoder(OrderCommand)
order_event_decoder = msgspec.msgpack.Decoder(OrderEvent)
heartbeat_decoder = msgspec.msgpack.Decoder(Heartbeat)
any_decoder = msgspec.msgpack.Decoder(AnyMessage)


def encode(message: Message) -> bytes:
    """Encode a message for the wire."""
    return encoder.encode(message)
