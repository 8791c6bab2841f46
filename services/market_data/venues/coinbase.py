"""Coinbase Exchange: best bid/ask from the ``ticker`` channel, trades from ``matches``, life from ``heartbeat``.

The fields relied on, from Coinbase Exchange's public WebSocket feed documentation:

- Endpoint ``wss://ws-feed.exchange.coinbase.com``. Subscribe:
  ``{"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker", "matches", "heartbeat"]}``,
  answered by one ``{"type": "subscriptions", "channels": [...]}``; a refusal is
  ``{"type": "error", "message": "...", "reason": "..."}``.
- ``ticker`` (sent on every match, batched under load): ``{"type": "ticker", "sequence": 37475248783,
  "product_id": "BTC-USD", "best_bid": "1285.04", "best_bid_size": "0.46688654", "best_ask": "1285.27",
  "best_ask_size": "1.56637040", "time": "2022-10-19T23:28:22.061769Z", ...}``: ``sequence`` is the
  product's feed sequence (grows, but the ticker skips numbers: it orders, it does not count), ``time`` the
  event time.
- ``match`` (and ``last_match``, the last one before the subscription): ``{"type": "match",
  "trade_id": 10, "sequence": 50, "time": "...", "product_id": "BTC-USD", "size": "5.23512",
  "price": "400.23", "side": "sell"}``: ``trade_id`` is contiguous per product, so a jump is a gap of
  missed trades; ``side`` is the maker's, the aggressor took the other side.
- ``heartbeat``: ``{"type": "heartbeat", "sequence": 90, "last_trade_id": 20, "product_id": "BTC-USD",
  "time": "..."}`` once a second per product: the product's feed is alive even when nothing trades.
- Limits: a client may send 8 messages a second per IP (bursts of 20) and 100 a second per connection;
  no documented cap on products per connection, so the feed takes at most 100 a connection.

Ids: quotes ``coinbase:<SYMBOL>:<sequence>``, trades ``coinbase:<SYMBOL>:t<trade_id>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import msgspec

from rrr.market_data.venues.base import (
    DecimalText,
    Decoded,
    Gap,
    MalformedFrameError,
    Sequence64,
    Sequencer,
    Venue,
    VenueSymbolText,
    number,
    rfc3339_ns,
)
from rrr.shared.messages import Quote, Trade

NAME = "coinbase"
URL = "wss://ws-feed.exchange.coinbase.com"
MAX_SYMBOLS_PER_CONNECTION = 100
SUBSCRIBE_MESSAGES_PER_S = 4.0
CHANNELS = ("ticker", "matches", "heartbeat")
_Time = Annotated[str, msgspec.Meta(max_length=40)]
_Text = Annotated[str, msgspec.Meta(max_length=1024)]


class _Ticker(msgspec.Struct, tag="ticker", tag_field="type"):
    sequence: Sequence64
    product_id: VenueSymbolText
    best_bid: DecimalText
    best_ask: DecimalText
    time: _Time
    best_bid_size: DecimalText | None = None
    best_ask_size: DecimalText | None = None


class _Match(msgspec.Struct, tag="match", tag_field="type"):
    trade_id: Sequence64
    product_id: VenueSymbolText
    price: DecimalText
    size: DecimalText
    side: Literal["buy", "sell"]
    time: _Time


class _LastMatch(_Match, tag="last_match", tag_field="type"):
    pass


class _Heartbeat(msgspec.Struct, tag="heartbeat", tag_field="type"):
    product_id: VenueSymbolText


class _Subscriptions(msgspec.Struct, tag="subscriptions", tag_field="type"):
    pass


class _Error(msgspec.Struct, tag="error", tag_field="type"):
    message: _Text = ""
    reason: _Text = ""


_decoder = msgspec.json.Decoder(_Ticker | _Match | _LastMatch | _Heartbeat | _Subscriptions | _Error)


def subscribe(symbols: Sequence[str], first_id: int) -> list[bytes]:
    """One subscribe message for every product of the connection (Coinbase numbers no requests)."""
    del first_id
    return [msgspec.json.encode({"type": "subscribe", "product_ids": list(symbols), "channels": list(CHANNELS)})]


def expected_acks(symbols: Sequence[str]) -> int:
    """One ``subscriptions`` message answers the subscribe."""
    return 1


class Normaliser:
    """Coinbase frames to ticks; one per feed, shared by its connections."""

    def __init__(self, symbols: Mapping[str, str]) -> None:
        self.symbols = dict(symbols)
        self.sequencer = Sequencer()

    def decode(self, frame: bytes, ts_init: int) -> Decoded:
        """Decode one frame (see the module's documentation of the fields)."""
        try:
            message = _decoder.decode(frame)
        except msgspec.DecodeError as exc:
            raise MalformedFrameError(NAME, str(exc), frame) from None
        if isinstance(message, _Ticker):
            return self._quote(message, frame, ts_init)
        if isinstance(message, _Match):
            return self._trade(message, frame, ts_init)
        if isinstance(message, _Heartbeat):
            return Decoded(alive=[self._symbol(message.product_id, frame)])
        if isinstance(message, _Subscriptions):
            return Decoded(acks=1)
        return Decoded(error=f"{message.message}: {message.reason}" if message.reason else message.message)

    def _symbol(self, product_id: str, frame: bytes) -> str:
        symbol = self.symbols.get(product_id)
        if symbol is None:
            raise MalformedFrameError(NAME, "a product not subscribed", frame)
        return symbol

    def _quote(self, ticker: _Ticker, frame: bytes, ts_init: int) -> Decoded:
        symbol = self._symbol(ticker.product_id, frame)
        bid = number(NAME, "bid", ticker.best_bid, frame)
        ask = number(NAME, "ask", ticker.best_ask, frame)
        bid_size = None if ticker.best_bid_size is None else number(NAME, "bid_size", ticker.best_bid_size, frame)
        ask_size = None if ticker.best_ask_size is None else number(NAME, "ask_size", ticker.best_ask_size, frame)
        if bid > ask:
            raise MalformedFrameError(NAME, f"crossed book: bid {bid} > ask {ask}", frame)
        ts_event = rfc3339_ns(NAME, ticker.time, frame)
        if not self.sequencer.check(f"q:{symbol}", ticker.sequence):
            return Decoded(duplicates=1)
        quote = Quote(
            id=f"{NAME}:{symbol}:{ticker.sequence}",
            ts_event=ts_event,
            ts_init=ts_init,
            symbol=symbol,
            bid=bid,
            ask=ask,
            bid_size=bid_size,
            ask_size=ask_size,
        )
        return Decoded(ticks=[quote])

    def _trade(self, match: _Match, frame: bytes, ts_init: int) -> Decoded:
        symbol = self._symbol(match.product_id, frame)
        price = number(NAME, "price", match.price, frame)
        size = number(NAME, "size", match.size, frame)
        ts_event = rfc3339_ns(NAME, match.time, frame)
        new, skipped = self.sequencer.check_contiguous(f"t:{symbol}", match.trade_id)
        if not new:
            return Decoded(duplicates=1)
        trade = Trade(
            id=f"{NAME}:{symbol}:t{match.trade_id}",
            ts_event=ts_event,
            ts_init=ts_init,
            symbol=symbol,
            price=price,
            size=size,
            # ``side`` is the resting (maker) order's: the aggressor took the other side.
            aggressor="buy" if match.side == "sell" else "sell",
        )
        decoded = Decoded(ticks=[trade])
        if skipped is not None:
            decoded.gaps.append(Gap(symbol, "trades", *skipped))
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
)
