"""Wire schemas: every message that crosses NATS, as tagged msgspec Structs.

Each message carries an ``id`` and integer-nanosecond times: ``ts_event`` (when the thing happened, in
the source's clock) and ``ts_init`` (when this process created the message). Prices, sizes and money are
``Decimal`` and travel as decimal text, so no binary float ever rounds a price or a cent.

Tags carry a version (``quote.v1``). Schema evolution follows msgspec's rules: new fields go last with a
default, a field never changes its type, and a changed meaning gets a new tag.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Final, Literal

import msgspec

from rrr.shared import subjects
from rrr.shared.errors import MisroutedMessageError, excerpt
from rrr.shared.fixed import MAX_PLACES, FixedPointError, rescale, to_decimal, to_units
from rrr.shared.subjects import check_symbol

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop_market", "stop_limit"]
# Good till canceled, immediate or cancel, fill or kill, good till date (``expire_ts``, event time).
TimeInForce = Literal["gtc", "ioc", "fok", "gtd"]


# msgspec's ``pattern`` is a search, and ``$`` also matches before a final newline: every pattern is
# anchored with \A and \Z so that it holds for the whole string.
ID_MAX = 256
NAME_MAX = 64
# Room left after a client order id for the ids execution derives from it (``<order id>:accepted``,
# ``<order id>:rejected``, fill ids ``<order id>:<n>``).
_ORDER_ID_SUFFIX_ROOM = 32
ORDER_ID_MAX = ID_MAX - _ORDER_ID_SUFFIX_ROOM
# The strategy derives its order ids (``<strategy>-<quote id>``) and signal ids (``<strategy>:<quote id>``)
# from a quote's id: a quote id leaves room for the longest strategy name and the separator.
QUOTE_ID_MAX = ORDER_ID_MAX - NAME_MAX - 1

# Ids are header values (Nats-Msg-Id) and database keys: printable ASCII, no spaces, bounded.
_PRINTABLE = r"\A[!-~]+\Z"
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX, pattern=_PRINTABLE)]
# Ids that others send in and from which this system derives its own ids: shorter, so the derived ones fit.
OrderId = Annotated[str, msgspec.Meta(min_length=1, max_length=ORDER_ID_MAX, pattern=_PRINTABLE)]
QuoteId = Annotated[str, msgspec.Meta(min_length=1, max_length=QUOTE_ID_MAX, pattern=_PRINTABLE)]
# Nanoseconds since the epoch, within PostgreSQL's bigint: 1970-01-01T00:00:00Z to 2262-04-11T23:47:16.854775807Z.
NANOS_MIN = 0
NANOS_MAX = 2**63 - 1
Nanos = Annotated[int, msgspec.Meta(ge=NANOS_MIN, le=NANOS_MAX)]

# Strategy and venue names.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=NAME_MAX, pattern=r"\A[a-z0-9_]+\Z")]

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
        raise ValueError(f"{name} must be a finite number, got {excerpt(value)}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {excerpt(value)}")
    if not signed and value < 0:
        raise ValueError(f"{name} must be >= 0, got {excerpt(value)}")
    exponent = value.as_tuple().exponent
    if value and (value.adjusted() >= _MAX_INT_DIGITS or (isinstance(exponent, int) and exponent < -_MAX_PLACES)):
        raise ValueError(
            f"{name} {excerpt(value)} is out of range: "
            f"at most {_MAX_INT_DIGITS} digits before the point and {_MAX_PLACES} after"
        )


def _positive(name: str, value: Decimal) -> None:
    check_number(name, value, positive=True)


# -- market data ---------------------------------------------------------------------------------------


class Quote(Message, frozen=True, kw_only=True, tag="quote.v1"):
    """Best bid and ask of one symbol at one time."""

    id: QuoteId
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


# Fixed-point numbers of a batch: an integer of units of 10**-places, exact: a price of 1.2345 is 12345
# units at 4 places. At most 18 digits (units fit a signed 64-bit integer) and 28 places (as every number
# on the wire: a size of 0.0061909999999999995, a float's artefact in a recorded file, still fits).
PLACES_MAX = MAX_PLACES
UNITS_MAX = 10**18 - 1
Places = Annotated[int, msgspec.Meta(ge=0, le=PLACES_MAX)]
PriceUnits = Annotated[int, msgspec.Meta(ge=1, le=UNITS_MAX)]
SizeUnits = Annotated[int, msgspec.Meta(ge=0, le=UNITS_MAX)]
# Quotes in one batch: far more than natural batching gathers, and well inside the bus's message size limit.
QUOTE_BATCH_MAX = 4096


# What a row's id and symbol may hold is checked by QuoteBatch.__post_init__ (a regular expression per field
# would cost four times the rest of decoding); here only their lengths.
_RowId = Annotated[str, msgspec.Meta(min_length=1, max_length=QUOTE_ID_MAX)]
_RowSymbol = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
# Symbols already checked, so that a batch checks each of its symbols once: bounded, cleared when full.
_CHECKED_SYMBOLS: set[str] = set()
_CHECKED_SYMBOLS_MAX = 65_536


class QuoteRow(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One quote inside a QuoteBatch: prices in fixed point (``bid``, ``ask`` units at ``places``), sizes
    too, each at its own places (None when the source gives none)."""

    id: _RowId
    symbol: _RowSymbol
    ts_event: Nanos
    bid: PriceUnits
    ask: PriceUnits
    places: Places
    bid_size: SizeUnits | None = None
    ask_size: SizeUnits | None = None
    bid_size_places: Places = 0
    ask_size_places: Places = 0

    def to_quote(self, ts_init: int) -> Quote:
        """This row as a Quote (exact Decimals) made at ``ts_init``."""
        return Quote(
            id=self.id, ts_event=self.ts_event, ts_init=ts_init, symbol=self.symbol,
            bid=to_decimal(self.bid, self.places), ask=to_decimal(self.ask, self.places),
            bid_size=None if self.bid_size is None else to_decimal(self.bid_size, self.bid_size_places),
            ask_size=None if self.ask_size is None else to_decimal(self.ask_size, self.ask_size_places),
        )  # fmt: skip


def fixed_row(
    quote_id: str,
    symbol: str,
    ts_event: int,
    bid: Decimal,
    ask: Decimal,
    bid_size: Decimal | None = None,
    ask_size: Decimal | None = None,
) -> QuoteRow | None:
    """A quote's numbers as a batch row (both prices at the places of the finer one), exactly; None when
    one of them does not fit a batch's fixed point (then the quote travels alone, as a ``Quote``)."""
    try:
        bid_units, bid_places = to_units(bid, name="bid")
        ask_units, ask_places = to_units(ask, name="ask")
        places = max(bid_places, ask_places)
        bid_units, ask_units = rescale(bid_units, bid_places, places), rescale(ask_units, ask_places, places)
        bid_size_units = ask_size_units = None
        bid_size_places = ask_size_places = 0
        if bid_size is not None:
            bid_size_units, bid_size_places = to_units(bid_size, name="bid_size")
        if ask_size is not None:
            ask_size_units, ask_size_places = to_units(ask_size, name="ask_size")
    except FixedPointError:
        return None
    if max(bid_units, ask_units, bid_size_units or 0, ask_size_units or 0) > UNITS_MAX:
        return None
    return QuoteRow(
        quote_id, symbol, ts_event, bid_units, ask_units, places, bid_size_units, ask_size_units,
        bid_size_places, ask_size_places,
    )  # fmt: skip


class QuoteBatch(Message, frozen=True, kw_only=True, tag="quote_batch.v1"):
    """Quotes of several symbols of one shard, in the order their source produced them.

    The hot path's unit of transport: one message, one stream entry and one delivery carry many quotes.
    ``id`` is the batch's de-duplication key; each row keeps its own quote id. ``source`` names the feed
    or tool that made it and is the last token of its subject (``md.quotes.<shard>.<source>``);
    ``ts_event`` is the first row's event time and ``ts_init`` when the batch was made.
    """

    source: Name
    quotes: Annotated[list[QuoteRow], msgspec.Meta(min_length=1, max_length=QUOTE_BATCH_MAX)]

    def __post_init__(self) -> None:
        checked = _CHECKED_SYMBOLS
        for index, row in enumerate(self.quotes):
            quote_id = row.id
            # Printable ASCII without spaces, as every id (see ``Id``).
            if not (quote_id.isascii() and quote_id.isprintable()) or " " in quote_id:
                raise ValueError(
                    f"quote id at index {index} must be printable ASCII without spaces, got {excerpt(quote_id)}"
                )
            if row.symbol not in checked:
                check_symbol(row.symbol)
                if len(checked) >= _CHECKED_SYMBOLS_MAX:
                    checked.clear()
                checked.add(row.symbol)
            if row.bid > row.ask:
                raise ValueError(f"crossed quote {quote_id} at index {index}: bid {row.bid} > ask {row.ask} units")

    def quote(self, index: int) -> Quote:
        """Row ``index`` as a Quote (exact Decimals), stamped with the batch's ``ts_init``."""
        return self.quotes[index].to_quote(self.ts_init)


# -- strategy ------------------------------------------------------------------------------------------


class Signal(Message, frozen=True, kw_only=True, tag="signal.v1"):
    """A strategy's decision at one quote; ``fast`` and ``slow`` are rounded for display only."""

    strategy: Name
    symbol: str
    quote_id: QuoteId
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


Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
QuoteIndex = Annotated[int, msgspec.Meta(ge=0, lt=QUOTE_BATCH_MAX)]


class SubmitOrder(Message, frozen=True, kw_only=True, tag="submit_order.v1"):
    """Ask execution to place an order. ``id`` is the client order id, unique per strategy.

    The order names its triggering quote: ``quote_seq``, its sequence in the market-data stream, and
    ``quote_ts``, its time. The paper venue reads that quote from the stream itself and fills at its
    touch, however late the order is processed. ``quote_bid`` and ``quote_ask`` are what the sender saw,
    kept for the record: never a price.

    A market order (the default) needs nothing more. A limit order carries ``limit_price``, a stop-market
    order ``stop_price``, a stop-limit order both; ``tif`` is its time in force (``expire_ts`` for gtd, in
    event time); ``post_only`` and ``reduce_only`` are flags. Which of them go together is execution's to
    judge: an order that asks for what its type does not carry is rejected with the reason, not dropped.
    """

    id: OrderId
    strategy: Name
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType = "market"
    quote_ts: Nanos
    quote_bid: Decimal
    quote_ask: Decimal
    # Added later, so last and with a default: 0 (an older sender) means "the latest quote of the symbol".
    quote_seq: Seq = 0
    # The quote's place in the message at ``quote_seq`` when that is a QuoteBatch (0 for a single Quote).
    quote_index: QuoteIndex = 0
    # Added with order types; at their defaults (a market order) they stay off the wire.
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: TimeInForce = "gtc"
    expire_ts: Nanos = 0
    post_only: bool = False
    reduce_only: bool = False
    # Added with the strategy's lockstep: its sender publishes ``StrategyAt`` markers, and the order is matched
    # at later quotes only as far as they allow (``rrr.execution.lockstep``).
    lockstep: bool = False

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("qty", self.qty)
        _positive("quote_bid", self.quote_bid)
        _positive("quote_ask", self.quote_ask)
        if self.quote_bid > self.quote_ask:
            raise ValueError(f"crossed trigger quote: bid {self.quote_bid} > ask {self.quote_ask}")
        if self.limit_price is not None:
            _positive("limit_price", self.limit_price)
        if self.stop_price is not None:
            _positive("stop_price", self.stop_price)


class CancelOrder(Message, frozen=True, kw_only=True, tag="cancel_order.v1"):
    """Ask execution to cancel what is open of the order ``client_order_id``. ``id`` is this command's own
    (distinct from every order id: it is the stream's de-duplication key)."""

    id: OrderId
    strategy: Name
    symbol: str
    client_order_id: OrderId

    def __post_init__(self) -> None:
        check_symbol(self.symbol)


class ReplaceOrder(Message, frozen=True, kw_only=True, tag="replace_order.v1"):
    """Ask execution to change the quantity, limit or stop price of the order ``client_order_id`` (None:
    unchanged; at least one is given). ``qty`` is the order's new total, filled part included.

    ``quote_seq``, ``quote_index`` and ``quote_ts`` name the quote of the order's symbol the replace is judged
    at (a post-only limit moved through it is refused, the price band is measured from it): the newest one the
    sender had seen. 0 (an older sender): the newest quote execution matched.
    """

    id: OrderId
    strategy: Name
    symbol: str
    client_order_id: OrderId
    qty: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    # Added with the strategy's lockstep, last and with defaults.
    quote_seq: Seq = 0
    quote_index: QuoteIndex = 0
    quote_ts: Nanos = 0

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        if self.qty is None and self.limit_price is None and self.stop_price is None:
            raise ValueError("a replace changes qty, limit_price or stop_price: got none of them")
        for name, value in (("qty", self.qty), ("limit_price", self.limit_price), ("stop_price", self.stop_price)):
            if value is not None:
                _positive(name, value)


# -- the strategy's lockstep with execution (rrr.execution.lockstep) ------------------------------------

Shard = Annotated[int, msgspec.Meta(ge=0, le=1023)]
# The strategies one instance runs (rrr.strategy.loading allows at most 32).
STRATEGIES_MAX = 32


class StrategyAt(Message, frozen=True, kw_only=True, tag="strategy_at.v1"):
    """A strategy instance's marker in its shard's order commands: how far ``strategies`` handled the shard's
    quotes. ``inclusive``: every quote up to and including the one at ``quote_seq``/``quote_index`` (a valid
    quote of the shard in the market-data stream, at ``ts_event``), with every command they sent for them
    before this marker; else every quote strictly before it.

    It travels on ``cmd.order.<shard>._step``. Execution matches those strategies' resting orders at a quote
    only once a marker says every quote before it was handled (``rrr.execution.lockstep``).
    """

    shard: Shard
    strategies: Annotated[list[Name], msgspec.Meta(min_length=1, max_length=STRATEGIES_MAX)]
    quote_seq: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    quote_index: QuoteIndex = 0
    inclusive: bool = True

    def __post_init__(self) -> None:
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies must be distinct, got {self.strategies}")

    @property
    def position(self) -> tuple[int, int, int]:
        """Where it puts its strategies: ``(quote_seq, quote_index, 1)`` through the quote, ``(..., 0)`` before it."""
        return (self.quote_seq, self.quote_index, int(self.inclusive))


class MatchedThrough(Message, frozen=True, kw_only=True, tag="matched_through.v1"):
    """Execution's progress for one lockstep strategy: it applied the strategy's markers up to ``marker_*`` (and
    every command before them), and matched the strategy's resting orders at every quote of the shard up to
    and including the one at ``through_seq``/``through_index``. Published after the events it covers.

    It travels on ``evt.order.<shard>._step``.
    """

    shard: Shard
    strategy: Name
    marker_seq: Seq
    marker_index: QuoteIndex = 0
    marker_inclusive: bool = True
    through_seq: Seq
    through_index: QuoteIndex = 0

    @property
    def marker(self) -> tuple[int, int, int]:
        """The last marker applied, as ``StrategyAt.position`` says it."""
        return (self.marker_seq, self.marker_index, int(self.marker_inclusive))

    @property
    def through(self) -> tuple[int, int]:
        """The last quote matched."""
        return (self.through_seq, self.through_index)


# -- order events --------------------------------------------------------------------------------------


class OrderAccepted(Message, frozen=True, kw_only=True, tag="order_accepted.v1"):
    """An order passed pre-trade risk and the venue holds it: the whole order as it was placed.

    ``quote_seq`` and ``quote_index`` name the quote it was placed at (the one it may first trade at;
    0 for a market order, which fills there at once and never rests).
    """

    client_order_id: OrderId
    strategy: Name
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType = "market"
    # Added with order types, last and with defaults: a market order's acceptance is what it always was.
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: TimeInForce = "gtc"
    expire_ts: Nanos = 0
    post_only: bool = False
    reduce_only: bool = False
    quote_seq: Seq = 0
    quote_index: QuoteIndex = 0

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("qty", self.qty)


class OrderRejected(Message, frozen=True, kw_only=True, tag="order_rejected.v1"):
    """An order failed pre-trade risk or was refused by the venue; ``reason`` says which rule and by what."""

    client_order_id: OrderId
    strategy: Name
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType = "market"
    reason: str

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("qty", self.qty)


class OrderFilled(Message, frozen=True, kw_only=True, tag="order_filled.v1"):
    """A fill of an order; ``id`` is the fill id, ``<client order id>:<n>`` for its n-th fill.

    ``leaves_qty`` is what stays open after it (None: nothing, the order is filled); ``cum_qty`` the
    order's filled quantity after it when that is more than this fill's own (None: this fill is all the
    order filled so far). Both are None on a fill of a whole order at once, so that it is on the wire what
    a market order's fill always was (``open_qty`` and ``filled_qty`` read them as numbers). A fill at a
    quote after the one the order was placed at names it (``quote_seq``, ``quote_index``; 0 otherwise).
    ``liquidity`` says whether the order took at the touch (taker) or rested and filled at its own limit
    price (maker).
    """

    client_order_id: OrderId
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    venue: Name
    # Added with order types, last and with defaults: a market order's single fill is what it always was.
    leaves_qty: Decimal | None = None
    cum_qty: Decimal | None = None
    liquidity: Literal["taker", "maker"] = "taker"
    quote_seq: Seq = 0
    quote_index: QuoteIndex = 0

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("qty", self.qty)
        _positive("price", self.price)
        check_number("fee", self.fee)
        if self.leaves_qty is not None:
            _positive("leaves_qty", self.leaves_qty)
        if self.cum_qty is not None:
            _positive("cum_qty", self.cum_qty)

    @property
    def filled_qty(self) -> Decimal:
        """The order's filled quantity after this fill."""
        return self.qty if self.cum_qty is None else self.cum_qty

    @property
    def open_qty(self) -> Decimal:
        """What stays open of the order after this fill (0: it is filled)."""
        return Decimal(0) if self.leaves_qty is None else self.leaves_qty


class OrderTriggered(Message, frozen=True, kw_only=True, tag="order_triggered.v1"):
    """A stop order's trigger was touched at the quote ``quote_seq``/``quote_index``: from then on it is a
    market or limit order."""

    client_order_id: OrderId
    strategy: Name
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    stop_price: Decimal
    quote_seq: Seq = 0
    quote_index: QuoteIndex = 0

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("qty", self.qty)
        _positive("stop_price", self.stop_price)


class OrderCanceled(Message, frozen=True, kw_only=True, tag="order_canceled.v1"):
    """What was open of an order is canceled: asked for (``command_id`` names the CancelOrder), by its time in
    force or reduce-only flag, or by a halt. ``filled_qty`` is what it filled before."""

    client_order_id: OrderId
    strategy: Name
    symbol: str
    side: Side
    qty: Decimal
    filled_qty: Decimal
    reason: str
    command_id: str = ""

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("qty", self.qty)
        check_number("filled_qty", self.filled_qty)


class OrderExpired(Message, frozen=True, kw_only=True, tag="order_expired.v1"):
    """A GTD order reached its ``expire_ts`` (the event time of a quote of its symbol) with ``qty`` -
    ``filled_qty`` still open."""

    client_order_id: OrderId
    strategy: Name
    symbol: str
    side: Side
    qty: Decimal
    filled_qty: Decimal
    expire_ts: Nanos

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("qty", self.qty)
        check_number("filled_qty", self.filled_qty)


class OrderReplaced(Message, frozen=True, kw_only=True, tag="order_replaced.v1"):
    """An order's quantity or prices changed (its ``replaces``-th replace, asked by ``command_id``): the
    values it has now."""

    client_order_id: OrderId
    strategy: Name
    symbol: str
    side: Side
    qty: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    replaces: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    command_id: str

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        _positive("qty", self.qty)


class OrderCancelRejected(Message, frozen=True, kw_only=True, tag="order_cancel_rejected.v1"):
    """A cancel or replace (``response_to``) of the order ``client_order_id`` was refused: ``reason`` says
    why (an unknown order, one already finished, another strategy's, a replace that breaks a rule)."""

    client_order_id: OrderId
    strategy: Name
    symbol: str
    command_id: str
    response_to: Literal["cancel", "replace"]
    reason: str

    def __post_init__(self) -> None:
        check_symbol(self.symbol)


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


# A service instance's name (``<service>-<shard>@<host>`` unless configured): printable ASCII, bounded.
INSTANCE_MAX = 128
Instance = Annotated[str, msgspec.Meta(min_length=1, max_length=INSTANCE_MAX, pattern=_PRINTABLE)]
# A heartbeat's counters: named like fields, as many as a service could have, never negative.
COUNTERS_MAX = 128
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class Heartbeat(Message, frozen=True, kw_only=True, tag="heartbeat.v1"):
    """Liveness and counters of one service instance."""

    service: Name
    instance: Instance
    shard: Annotated[int, msgspec.Meta(ge=0, le=1023)]
    shards: Annotated[int, msgspec.Meta(ge=1, le=1024)]
    status: Literal["starting", "ok", "stopping"]
    counters: Annotated[dict[Name, Count], msgspec.Meta(max_length=COUNTERS_MAX)] = {}


# -- trading states and the account-wide risk view ------------------------------------------------------

TradingStateName = Literal["active", "reducing", "halted"]
TradingScope = Literal["account", "strategy", "symbol", "pair"]


class TradingState(Message, frozen=True, kw_only=True, tag="trading_state.v1"):
    """The trading state of one scope, as the trading-state bucket holds it (its key says the scope).

    ``scope`` is the whole account, one strategy, one symbol, or one strategy on one symbol (``pair``);
    ``strategy`` and ``symbol`` name it. ``active`` trades; ``reducing`` lets only orders that reduce
    exposure through; ``halted`` none. ``reason`` says why, ``source`` who set it (``operator``, or
    ``daily_loss`` when execution halted the account itself).
    """

    scope: TradingScope
    strategy: Annotated[str, msgspec.Meta(max_length=NAME_MAX, pattern=r"\A[a-z0-9_]*\Z")] = ""
    symbol: str = ""
    state: TradingStateName
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    source: Name = "operator"

    def __post_init__(self) -> None:
        if self.symbol:
            check_symbol(self.symbol)
        wanted = {"account": (False, False), "strategy": (True, False), "symbol": (False, True), "pair": (True, True)}
        if (bool(self.strategy), bool(self.symbol)) != wanted[self.scope]:
            raise ValueError(
                f"scope {self.scope} names {'a strategy' if wanted[self.scope][0] else 'no strategy'} and "
                f"{'a symbol' if wanted[self.scope][1] else 'no symbol'}, got strategy {self.strategy!r} and "
                f"symbol {self.symbol!r}"
            )


class TradingStateApplied(Message, frozen=True, kw_only=True, tag="trading_state_applied.v1"):
    """An execution instance applied a trading state (``revision`` of its key in the bucket): from now on it
    refuses what the state refuses; ``canceled`` counts the open orders it canceled for it."""

    shard: Annotated[int, msgspec.Meta(ge=0, le=1023)]
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_PRINTABLE)]
    revision: Annotated[int, msgspec.Meta(ge=0)]
    state: TradingStateName
    canceled: Annotated[int, msgspec.Meta(ge=0)] = 0


class CurrencyRisk(msgspec.Struct, frozen=True, array_like=True):
    """One shard's exposure in one quote currency: gross (sum of |qty| x mark), net (sum of qty x mark), and
    the PnL (realized and at the marks) since the start of its UTC day."""

    currency: Annotated[str, msgspec.Meta(max_length=12)]
    gross: Decimal
    net: Decimal
    pnl_today: Decimal


class ShardRisk(Message, frozen=True, kw_only=True, tag="shard_risk.v1"):
    """What one execution instance holds, as the account-wide risk view reads it (one key per shard).

    ``day`` is the UTC day (days since the epoch, in event time) its ``pnl_today`` counts from.
    """

    shard: Annotated[int, msgspec.Meta(ge=0, le=1023)]
    shards: Annotated[int, msgspec.Meta(ge=1, le=1024)]
    day: Annotated[int, msgspec.Meta(ge=0)]
    currencies: Annotated[list[CurrencyRisk], msgspec.Meta(max_length=1000)] = []

    def __post_init__(self) -> None:
        for row in self.currencies:
            check_number("gross", row.gross)
            check_number("net", row.net, signed=True)
            check_number("pnl_today", row.pnl_today, signed=True)


MarketData = Quote | Trade | QuoteBatch
OrderCommand = SubmitOrder | CancelOrder | ReplaceOrder
# What ``cmd.order.<shard>.*`` carries: the commands, and the strategies' lockstep markers.
Command = OrderCommand | StrategyAt
# What happens to an order, each on ``evt.order.<shard>.<symbol>``.
OrderUpdate = (
    OrderAccepted
    | OrderRejected
    | OrderFilled
    | OrderTriggered
    | OrderCanceled
    | OrderExpired
    | OrderReplaced
    | OrderCancelRejected
)
# What ``evt.*.<shard>.*`` carries: order events, positions, and execution's lockstep progress.
OrderEvent = OrderUpdate | PositionUpdated | MatchedThrough
AnyMessage = (
    Quote
    | Trade
    | QuoteBatch
    | Signal
    | SubmitOrder
    | CancelOrder
    | ReplaceOrder
    | StrategyAt
    | MatchedThrough
    | OrderAccepted
    | OrderRejected
    | OrderFilled
    | OrderTriggered
    | OrderCanceled
    | OrderExpired
    | OrderReplaced
    | OrderCancelRejected
    | PositionUpdated
    | Heartbeat
    | TradingState
    | TradingStateApplied
    | ShardRisk
)

# The messages each family of per-symbol subjects carries, and nothing else.
FAMILY_TYPES: Final[Mapping[str, tuple[type[Message], ...]]] = {
    subjects.QUOTE: (Quote,),
    subjects.TRADE: (Trade,),
    subjects.SIGNAL: (Signal,),
    subjects.ORDER_COMMAND: (SubmitOrder, CancelOrder, ReplaceOrder),
    subjects.ORDER_EVENT: (
        OrderAccepted,
        OrderRejected,
        OrderFilled,
        OrderTriggered,
        OrderCanceled,
        OrderExpired,
        OrderReplaced,
        OrderCancelRejected,
    ),
    subjects.POSITION: (PositionUpdated,),
}
_FAMILY_OF: Final = {kind: family for family, kinds in FAMILY_TYPES.items() for kind in kinds}
SymbolMessage = Quote | Trade | Signal | OrderCommand | OrderUpdate | PositionUpdated
# Messages of one shard of a family, on ``<family>.<shard>._step``: no symbol, their shard in a field.
ShardMessage = StrategyAt | MatchedThrough
SHARD_TYPES: Final[Mapping[str, tuple[type[Message], ...]]] = {
    subjects.ORDER_COMMAND: (StrategyAt,),
    subjects.ORDER_EVENT: (MatchedThrough,),
}
_SHARD_FAMILY_OF: Final = {kind: family for family, kinds in SHARD_TYPES.items() for kind in kinds}


ControlMessage = TradingState | TradingStateApplied | ShardRisk


def subject_of(message: SymbolMessage | ShardMessage | QuoteBatch | Heartbeat | ControlMessage, shards: int) -> str:
    """The one subject ``message`` belongs on in a system of ``shards`` shards.

    A per-symbol message: ``<family>.<shard>.<symbol>`` of its type's family, its symbol and that symbol's
    shard. A quote batch: ``md.quotes.<shard>.<source>`` of its first symbol's shard (``check_subject``
    holds every other row to it). A heartbeat: ``ctl.heartbeat.<service>.<shard>`` of its own service and
    shard. A trading state, or a shard's holdings: the key of its scope, or of its shard, in its bucket; a
    confirmation: ``ctl.trading.<shard>``. A lockstep marker or progress: ``<family>.<shard>._step`` of its
    family and its own shard.
    """
    if isinstance(message, QuoteBatch):
        return subjects.quote_batch(_shard_of(message.quotes[0].symbol, shards), message.source)
    if isinstance(message, StrategyAt | MatchedThrough):
        return subjects.step(_SHARD_FAMILY_OF[type(message)], message.shard)
    if isinstance(message, Heartbeat):
        return subjects.heartbeat(message.service, message.shard)
    if isinstance(message, TradingState):
        return subjects.kv(subjects.TRADING_BUCKET, subjects.trading_key(message.strategy, message.symbol))
    if isinstance(message, ShardRisk):
        return subjects.kv(subjects.RISK_BUCKET, subjects.risk_key(message.shard))
    if isinstance(message, TradingStateApplied):
        return subjects.trading_applied(message.shard)
    return subjects.for_symbol(_FAMILY_OF[type(message)], message.symbol, shards)


@functools.lru_cache(maxsize=65_536)
def _shard_of(symbol: str, shards: int) -> int:
    # Every row of every batch is checked: the crc32 of a symbol is computed once.
    return subjects.shard_of(symbol, shards)


def check_subject(subject: str, message: Message, shards: int) -> None:
    """Raise MisroutedMessageError unless ``subject`` is the one ``message`` belongs on (``subject_of``).

    A retry (``retry.<service>.<subject>``) is held to the subject it was first sent on.
    """
    original = subjects.retried_subject(subject)
    tag = message.__struct_config__.tag
    if not isinstance(message, SymbolMessage | ShardMessage | QuoteBatch | Heartbeat | ControlMessage):
        raise MisroutedMessageError(subject, "a message that travels on a subject", f"{tag} {message.id}")
    expected = subject_of(message, shards)
    if original != expected:
        raise MisroutedMessageError(subject, f"{tag} {message.id} on {expected} (shards: {shards})", original)
    if isinstance(message, QuoteBatch):
        shard = _shard_of(message.quotes[0].symbol, shards)
        # Each symbol once: a batch names few symbols many times.
        if shards > 1 and any(_shard_of(symbol, shards) != shard for symbol in {row.symbol for row in message.quotes}):
            index, symbol = next(
                (i, row.symbol) for i, row in enumerate(message.quotes) if _shard_of(row.symbol, shards) != shard
            )
            raise MisroutedMessageError(
                subject, f"every quote of {tag} {message.id} in shard {shard}", f"{symbol} at index {index}"
            )


# The most messages one envelope carries.
ENVELOPE_MAX = 4096


class Envelope(msgspec.Struct, frozen=True, tag="envelope.v1", tag_field="type"):
    """Several messages of one per-symbol family and one shard, in the order they were sent, each encoded as it
    would travel alone: what goes out together (a batch's orders, its events) costs one JetStream message.

    It travels on ``<family>.<shard>._batch`` (``rrr.shared.subjects.envelope``). A consumer opens it into its
    messages (``rrr.shared.bus.envelopes``), each held to that family and shard and then handled as if it had
    come alone on its own subject.
    """

    items: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=ENVELOPE_MAX)]


def check_envelope_item(subject: str, family: str, shard: int, message: Message, shards: int) -> str:
    """The subject ``message`` would travel on alone, after checking it belongs in the envelope on ``subject``
    (its type of ``family``, its symbol of ``shard``).

    Raises:
        MisroutedMessageError: it does not.
    """
    if isinstance(message, StrategyAt | MatchedThrough) and type(message) in SHARD_TYPES.get(family, ()):
        if message.shard != shard:
            tag = message.__struct_config__.tag
            raise MisroutedMessageError(
                subject, f"messages of shard {shard} in its envelope", f"{tag} {message.id} of shard {message.shard}"
            )
        return subjects.step(family, shard)
    if type(message) not in FAMILY_TYPES.get(family, ()):
        tag = message.__struct_config__.tag
        raise MisroutedMessageError(subject, f"messages of {family} in its envelope", f"{tag} {message.id}")
    # A per-symbol message checked its symbol when it was decoded.
    symbol: str = message.symbol  # type: ignore[attr-defined]
    if _shard_of(symbol, shards) != shard:
        tag = message.__struct_config__.tag
        own = subjects.for_symbol(family, symbol, shards)
        raise MisroutedMessageError(
            subject, f"messages of shard {shard} in its envelope", f"{tag} {message.id} of {own}"
        )
    return f"{family}.{shard}.{symbol}"


# Encoders and decoders are built once and reused: building them is the expensive part.
encoder = msgspec.msgpack.Encoder()
market_data_decoder = msgspec.msgpack.Decoder(MarketData)
signal_decoder = msgspec.msgpack.Decoder(Signal)
order_command_decoder = msgspec.msgpack.Decoder(Command)
order_event_decoder = msgspec.msgpack.Decoder(OrderEvent)
heartbeat_decoder = msgspec.msgpack.Decoder(Heartbeat)
trading_state_decoder = msgspec.msgpack.Decoder(TradingState)
trading_applied_decoder = msgspec.msgpack.Decoder(TradingStateApplied)
shard_risk_decoder = msgspec.msgpack.Decoder(ShardRisk)
any_decoder = msgspec.msgpack.Decoder(AnyMessage)
envelope_decoder = msgspec.msgpack.Decoder(Envelope)


def encode(message: Message) -> bytes:
    """Encode a message for the wire."""
    return encoder.encode(message)
