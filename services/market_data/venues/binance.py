"""Binance spot: best bid/ask (``<symbol>@bookTicker``) and trades (``<symbol>@trade``).

The fields relied on, from Binance's public WebSocket Streams documentation for spot:

- Endpoint ``wss://stream.binance.com:9443/stream`` (combined streams): every data frame is
  ``{"stream": "<streamName>", "data": <payload>}``; stream names are lower case.
- Subscribe: ``{"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker", "btcusdt@trade"], "id": 1}``,
  answered ``{"result": null, "id": 1}``; an error is ``{"code": 2, "msg": "...", "id": 1}`` (some servers
  nest it: ``{"error": {"code": 2, "msg": "..."}, "id": 1}``).
- ``bookTicker``: ``{"u": 400900217, "s": "BNBUSDT", "b": "25.35190000", "B": "31.21000000",
  "a": "25.36520000", "A": "40.66000000"}``: ``u`` the order book update id (grows per symbol), ``b``/``B``
  best bid price/quantity, ``a``/``A`` best ask. Spot's bookTicker carries no event time: a quote's
  ``ts_event`` is its receive time.
- ``trade``: ``{"e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.001", "q": "100",
  "T": 1672515782136, "m": true, "M": true}``: ``t`` the trade id (contiguous per symbol, so a jump is a gap),
  ``T`` the trade time in ms (the tick's ``ts_event``), ``m`` true when the buyer was the maker (the seller
  the aggressor).
- Limits: at most 1024 streams per connection, 5 incoming messages a second per connection (pings and
  subscribes alike), 300 connections per 5 minutes per IP; a connection is closed after 24 hours. The
  server pings every 20 s and drops a connection that has not answered within a minute.

Ids: quotes ``binance:<SYMBOL>:<u>``, trades ``binance:<SYMBOL>:t<t>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from rrr.market_data.venues.base import (
    DecimalText,
    Decoded,
    Gap,
    MalformedFrameError,
    MillisSinceEpoch,
    Sequence64,
    Sequencer,
    Venue,
    VenueSymbolText,
    number,
)
from rrr.shared.messages import Quote, Trade

NAME = "binance"
URL = "wss://stream.binance.com:9443/stream"
# Two streams a symbol within the 1024 a connection may carry, with room to spare.
MAX_SYMBOLS_PER_CONNECTION = 400
# Under the 5 incoming messages a second a connection may send (pongs count too).
SUBSCRIBE_MESSAGES_PER_S = 3.0
STREAMS_PER_SUBSCRIBE = 200
MAX_CONNECTION_LIFETIME_S = 24 * 3600.0


class _Envelope(msgspec.Struct):
    stream: VenueSymbolText | None = None
    data: msgspec.Raw = msgspec.Raw()
    id: Sequence64 | None = None
    result: msgspec.Raw = msgspec.Raw()
    code: int | None = None
    msg: str | None = None
    error: msgspec.Raw = msgspec.Raw()


class _BookTicker(msgspec.Struct):
    u: Sequence64
    s: VenueSymbolText
    b: DecimalText
    B: DecimalText
    a: DecimalText
    A: DecimalText


class _Trade(msgspec.Struct):
    e: Literal["trade"]
    s: VenueSymbolText
    t: Sequence64
    p: DecimalText
    q: DecimalText
    T: MillisSinceEpoch
    m: bool


_envelope = msgspec.json.Decoder(_Envelope)
_book_ticker = msgspec.json.Decoder(_BookTicker)
_trade = msgspec.json.Decoder(_Trade)


def subscribe(symbols: Sequence[str], first_id: int) -> list[bytes]:
    """The SUBSCRIBE messages for ``symbols``: both streams of each, at most STREAMS_PER_SUBSCRIBE a message."""
    streams = [f"{s.lower()}@{kind}" for s in symbols for kind in ("bookTicker", "trade")]
    return [
        msgspec.json.encode(
            {"method": "SUBSCRIBE", "params": streams[i : i + STREAMS_PER_SUBSCRIBE], "id": first_id + n}
        )
        for n, i in enumerate(range(0, len(streams), STREAMS_PER_SUBSCRIBE))
    ]


def expected_acks(symbols: Sequence[str]) -> int:
    """One ``{"result": null}`` per SUBSCRIBE message."""
    return -(-2 * len(symbols) // STREAMS_PER_SUBSCRIBE)


class Normaliser:
    """Binance frames to ticks; one per feed, shared by its connections."""

    def __init__(self, symbols: Mapping[str, str]) -> None:
        self.symbols = dict(symbols)
        self.sequencer = Sequencer()

    def decode(self, frame: bytes, ts_init: int) -> Decoded:
        """Decode one frame (see the module's documentation of the fields)."""
        try:
            envelope = _envelope.decode(frame)
        except msgspec.DecodeError as exc:
            raise MalformedFrameError(NAME, str(exc), frame) from None
        if envelope.stream is None or not envelope.data:
            return self._control(envelope, frame)
        kind = envelope.stream.rpartition("@")[2]
        try:
            if kind == "bookTicker":
                return self._quote(_book_ticker.decode(envelope.data), frame, ts_init)
            if kind == "trade":
                return self._trade(_trade.decode(envelope.data), frame, ts_init)
        except msgspec.DecodeError as exc:
            raise MalformedFrameError(NAME, f"{kind}: {exc}", frame) from None
        raise MalformedFrameError(NAME, "a stream not subscribed", frame)

    def _control(self, envelope: _Envelope, frame: bytes) -> Decoded:
        if envelope.id is not None and envelope.result and not envelope.error:
            return Decoded(acks=1)
        if envelope.code is not None or envelope.error:
            detail = envelope.msg or bytes(envelope.error).decode("utf-8", "replace")
            return Decoded(error=f"code {envelope.code}: {detail}" if envelope.code is not None else detail)
        raise MalformedFrameError(NAME, "neither data, a response nor an error", frame)

    def _symbol(self, venue_symbol: str, frame: bytes) -> str:
        symbol = self.symbols.get(venue_symbol)
        if symbol is None:
            raise MalformedFrameError(NAME, "a symbol not subscribed", frame)
        return symbol

    def _quote(self, book: _BookTicker, frame: bytes, ts_init: int) -> Decoded:
        symbol = self._symbol(book.s, frame)
        bid = number(NAME, "bid", book.b, frame)
        ask = number(NAME, "ask", book.a, frame)
        bid_size = number(NAME, "bid_size", book.B, frame, positive=False)
        ask_size = number(NAME, "ask_size", book.A, frame, positive=False)
        if bid > ask:
            raise MalformedFrameError(NAME, f"crossed book: bid {bid} > ask {ask}", frame)
        if not self.sequencer.check(f"q:{symbol}", book.u):
            return Decoded(duplicates=1)
        quote = Quote(
            id=f"{NAME}:{symbol}:{book.u}",
            ts_event=ts_init,
            ts_init=ts_init,
            symbol=symbol,
            bid=bid,
            ask=ask,
            bid_size=bid_size,
            ask_size=ask_size,
        )
        return Decoded(ticks=[quote])

    def _trade(self, trade: _Trade, frame: bytes, ts_init: int) -> Decoded:
        symbol = self._symbol(trade.s, frame)
        price = number(NAME, "price", trade.p, frame)
        size = number(NAME, "size", trade.q, frame)
        new, skipped = self.sequencer.check_contiguous(f"t:{symbol}", trade.t)
        if not new:
            return Decoded(duplicates=1)
        tick = Trade(
            id=f"{NAME}:{symbol}:t{trade.t}",
            ts_event=trade.T * 1_000_000,
            ts_init=ts_init,
            symbol=symbol,
            price=price,
            size=size,
            aggressor="sell" if trade.m else "buy",
        )
        decoded = Decoded(ticks=[tick])
        if skipped is not None:
            decoded.gaps.append(Gap(symbol, "trades", *skipped))
        return decoded


VENUE = Venue(
    name=NAME,
    url=URL,
    max_symbols_per_connection=MAX_SYMBOLS_PER_CONNECTION,
    subscribe_messages_per_s=SUBSCRIBE_MESSAGES_PER_S,
    max_connect_lifetime_s=MAX_CONNECTION_LIFETIME_S,
    subscribe=subscribe,
    expected_acks=expected_acks,
    normaliser=Normaliser,
)
