"""Kraken (WebSocket API v2): best bid/ask from the ``ticker`` channel, trades from ``trade``.

The fields relied on, from Kraken's public WebSocket v2 documentation:

- Endpoint ``wss://ws.kraken.com/v2``. On connect the server sends ``{"channel": "status", "type":
  "update", "data": [{"system": "online", "api_version": "v2", ...}]}``, then ``{"channel": "heartbeat"}``
  about once a second while anything is subscribed.
- Subscribe: ``{"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD"],
  "event_trigger": "bbo"}, "req_id": 1}`` (the ticker on every change of the best bid/offer) and
  ``{"method": "subscribe", "params": {"channel": "trade", "symbol": [...], "snapshot": true}, "req_id": 2}``
  (the last 50 trades first: after a reconnect, what was missed is recovered). Each symbol is
  acknowledged on its own: ``{"method": "subscribe", "result": {"channel": "ticker", "symbol": "BTC/USD",
  ...}, "success": true, "req_id": 1, ...}``; a refusal has ``"success": false`` and ``"error": "..."``.
- Ping: ``{"method": "ping", "req_id": 3}`` answered ``{"method": "pong", "req_id": 3, ...}``.
- ``ticker``: ``{"channel": "ticker", "type": "snapshot"|"update", "data": [{"symbol": "BTC/USD",
  "bid": 26500.1, "bid_qty": 0.5, "ask": 26500.2, "ask_qty": 1.2, "last": ..., "timestamp":
  "2023-09-25T07:48:36.925533Z"}]}``: prices are JSON numbers (read from their text, exactly); ``timestamp``
  is the event time (a frame without one is stamped with its receive time). There is no sequence number:
  an update earlier than the last one of its symbol, or at the same time with the same prices, is a
  repeat.
- ``trade``: ``{"channel": "trade", "type": "snapshot"|"update", "data": [{"symbol": "BTC/USD",
  "side": "buy", "price": 26500.1, "qty": 0.01, "ord_type": "limit", "trade_id": 4665846,
  "timestamp": "2023-09-25T07:48:36.925533Z"}]}``: ``side`` is the taker's, ``trade_id`` grows per symbol.
- Limits: no documented cap on symbols per connection; the feed takes at most 100 a connection and paces
  its requests, under the connection-rate limits in front of the API.

Ids: quotes ``kraken:<SYMBOL>:<event time ns>-<crc32 of the prices>``, trades ``kraken:<SYMBOL>:t<trade_id>``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from rrr.market_data.venues.base import (
    Decoded,
    MalformedFrameError,
    Sequence64,
    Sequencer,
    Tick,
    Venue,
    VenueSymbolText,
    number,
    rfc3339_ns,
)
from rrr.shared.messages import Quote, Trade

NAME = "kraken"
URL = "wss://ws.kraken.com/v2"
MAX_SYMBOLS_PER_CONNECTION = 100
SUBSCRIBE_MESSAGES_PER_S = 4.0
# Entries one frame may carry: a snapshot of every symbol of a connection, or of 50 trades each.
_MAX_ENTRIES = 10_000
_Time = Annotated[str, msgspec.Meta(max_length=40)]
_Text = Annotated[str, msgspec.Meta(max_length=1024)]


class _Envelope(msgspec.Struct):
    channel: _Text | None = None
    method: _Text | None = None
    type: _Text | None = None
    data: msgspec.Raw = msgspec.Raw()
    success: bool | None = None
    error: _Text | None = None


class _Ticker(msgspec.Struct):
    symbol: VenueSymbolText
    bid: Decimal
    ask: Decimal
    bid_qty: Decimal | None = None
    ask_qty: Decimal | None = None
    timestamp: _Time | None = None


class _Trade(msgspec.Struct):
    symbol: VenueSymbolText
    side: Literal["buy", "sell"]
    price: Decimal
    qty: Decimal
    trade_id: Sequence64
    timestamp: _Time


_envelope = msgspec.json.Decoder(_Envelope)
_tickers = msgspec.json.Decoder(Annotated[list[_Ticker], msgspec.Meta(max_length=_MAX_ENTRIES)])
_trades = msgspec.json.Decoder(Annotated[list[_Trade], msgspec.Meta(max_length=_MAX_ENTRIES)])


def subscribe(symbols: Sequence[str], first_id: int) -> list[bytes]:
    """A ticker (best bid/offer) and a trade subscription for ``symbols``."""
    return [
        msgspec.json.encode(
            {
                "method": "subscribe",
                "params": {"channel": "ticker", "symbol": list(symbols), "event_trigger": "bbo"},
                "req_id": first_id,
            }
        ),
        msgspec.json.encode(
            {
                "method": "subscribe",
                "params": {"channel": "trade", "symbol": list(symbols), "snapshot": True},
                "req_id": first_id + 1,
            }
        ),
    ]


def expected_acks(symbols: Sequence[str]) -> int:
    """One acknowledgement per symbol and channel."""
    return 2 * len(symbols)


def ping(req_id: int) -> bytes:
    """Kraken's own ping, answered by a ``pong``."""
    return msgspec.json.encode({"method": "ping", "req_id": req_id})


class Normaliser:
    """Kraken frames to ticks; one per feed, shared by its connections."""

    def __init__(self, symbols: Mapping[str, str]) -> None:
        self.symbols = dict(symbols)
        self.sequencer = Sequencer()

    def decode(self, frame: bytes, ts_init: int) -> Decoded:
        """Decode one frame (see the module's documentation of the fields)."""
        try:
            envelope = _envelope.decode(frame)
            if envelope.channel == "ticker" and envelope.data:
                return self._quotes(_tickers.decode(envelope.data), frame, ts_init)
            if envelope.channel == "trade" and envelope.data:
                return self._trades(_trades.decode(envelope.data), frame, ts_init)
        except msgspec.DecodeError as exc:
            raise MalformedFrameError(NAME, str(exc), frame) from None
        if envelope.channel in ("heartbeat", "status") or envelope.method == "pong":
            return Decoded()
        if envelope.method in ("subscribe", "unsubscribe") and envelope.success is not None:
            if envelope.success:
                return Decoded(acks=1 if envelope.method == "subscribe" else 0)
            return Decoded(error=envelope.error or "subscription refused")
        if envelope.error is not None:
            return Decoded(error=envelope.error)
        raise MalformedFrameError(NAME, "neither data, a response nor a heartbeat", frame)

    def _symbol(self, venue_symbol: str, frame: bytes) -> str:
        symbol = self.symbols.get(venue_symbol)
        if symbol is None:
            raise MalformedFrameError(NAME, "a symbol not subscribed", frame)
        return symbol

    def _quotes(self, tickers: list[_Ticker], frame: bytes, ts_init: int) -> Decoded:
        decoded = Decoded()
        # Every entry is checked before any is taken: a frame is published whole or not at all.
        checked = []
        for ticker in tickers:
            symbol = self._symbol(ticker.symbol, frame)
            bid = number(NAME, "bid", ticker.bid, frame)
            ask = number(NAME, "ask", ticker.ask, frame)
            bid_size = None if ticker.bid_qty is None else number(NAME, "bid_size", ticker.bid_qty, frame)
            ask_size = None if ticker.ask_qty is None else number(NAME, "ask_size", ticker.ask_qty, frame)
            if bid > ask:
                raise MalformedFrameError(NAME, f"crossed book: bid {bid} > ask {ask}", frame)
            ts_event = ts_init if ticker.timestamp is None else rfc3339_ns(NAME, ticker.timestamp, frame)
            checked.append((symbol, ts_event, bid, ask, bid_size, ask_size))
        for symbol, ts_event, bid, ask, bid_size, ask_size in checked:
            prices = (bid, ask, bid_size, ask_size)
            if not self.sequencer.check_timed(f"q:{symbol}", ts_event, prices):
                decoded.duplicates += 1
                continue
            digest = zlib.crc32(repr(prices).encode())
            decoded.ticks.append(
                Quote(
                    id=f"{NAME}:{symbol}:{ts_event}-{digest:08x}",
                    ts_event=ts_event,
                    ts_init=ts_init,
                    symbol=symbol,
                    bid=bid,
                    ask=ask,
                    bid_size=bid_size,
                    ask_size=ask_size,
                )
            )
        return decoded

    def _trades(self, trades: list[_Trade], frame: bytes, ts_init: int) -> Decoded:
        decoded = Decoded()
        checked: list[Tick] = []
        # In trade id order whatever order the venue lists them in (a snapshot may list the newest first).
        trades = sorted(trades, key=lambda t: t.trade_id)
        for trade in trades:
            symbol = self._symbol(trade.symbol, frame)
            checked.append(
                Trade(
                    id=f"{NAME}:{symbol}:t{trade.trade_id}",
                    ts_event=rfc3339_ns(NAME, trade.timestamp, frame),
                    ts_init=ts_init,
                    symbol=symbol,
                    price=number(NAME, "price", trade.price, frame),
                    size=number(NAME, "size", trade.qty, frame),
                    aggressor=trade.side,
                )
            )
        for tick, trade in zip(checked, trades, strict=True):
            if self.sequencer.check(f"t:{tick.symbol}", trade.trade_id):
                decoded.ticks.append(tick)
            else:
                decoded.duplicates += 1
        return decoded


VENUE = Venue(
    name=NAME,
    url=URL,
    max_symbols_per_connection=MAX_SYMBOLS_PER_CONNECTION,
    subscribe_messages_per_s=SUBSCRIBE_MESSAGES_PER_S,
    max_connect_lifetime_s=0.0,
    subscribe=subscribe,
    expected_acks=expected_acks,
    normaliser=Normaliser,
    app_ping=ping,
)
