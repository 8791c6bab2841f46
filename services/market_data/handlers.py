"""Handlers of the subjects market-data subscribes to: one function per subject."""

from __future__ import annotations

from dataclasses import dataclass, field

from cachetools import LRUCache
from nats.aio.msg import Msg

from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.counters import Counters
from rrr.shared.errors import RRRError
from rrr.shared.messages import MarketData, Quote, QuoteBatch, QuoteRow, encode

NO_QUOTE_HEADER = "Rrr-Error"


class MarketDataCounters(Counters, kw_only=True):
    """What market-data counts, reported in its heartbeats."""

    # Quotes the simulator published.
    published: int = 0
    # Quotes and trades the live venue feeds published.
    live_published: int = 0
    # Live ticks dropped while the broker was away (stale by the time they could be sent).
    dropped_disconnected: int = 0
    # Quotes of batches the market-data stream did not acknowledge in time: stored or not.
    quotes_unconfirmed: int = 0
    # Latest-quote requests not answered: their reply subject was no inbox.
    replies_refused: int = 0


@dataclass(slots=True)
class LatestQuotes:
    """The latest quote of each symbol this instance saw, bounded in size (least recently used goes).

    A quote of a batch is held as its row and the batch's ``ts_init``, and made a Quote only when asked
    for: most are replaced before anyone asks.
    """

    cache: LRUCache[str, Quote | tuple[QuoteRow, int]] = field(default_factory=lambda: LRUCache(maxsize=100_000))

    def update(self, quote: Quote) -> None:
        """Keep ``quote`` unless a later one of the same symbol is already held."""
        held = self.cache.get(quote.symbol)
        if held is None or quote.ts_event >= _ts_event(held):
            self.cache[quote.symbol] = quote

    def update_batch(self, batch: QuoteBatch) -> None:
        """Keep each quote of ``batch`` unless a later one of its symbol is already held."""
        cache = self.cache
        for row in batch.quotes:
            held = cache.get(row.symbol)
            if held is None or row.ts_event >= _ts_event(held):
                cache[row.symbol] = (row, batch.ts_init)

    def get(self, symbol: str) -> Quote | None:
        """The latest quote of ``symbol``, or None."""
        held = self.cache.get(symbol)
        if held is None or isinstance(held, Quote):
            return held
        row, ts_init = held
        return row.to_quote(ts_init)


def _ts_event(held: Quote | tuple[QuoteRow, int]) -> int:
    return held.ts_event if isinstance(held, Quote) else held[0].ts_event


async def on_quote(latest: LatestQuotes, msg: Msg, message: MarketData) -> None:
    """``md.quote.<shard>.*`` and ``md.quotes.<shard>.*``: every quote on the bus, from any feed, single
    or in a batch, updates the latest-quote cache."""
    if isinstance(message, Quote):
        latest.update(message)
    elif isinstance(message, QuoteBatch):
        latest.update_batch(message)


async def on_latest_request(
    latest: LatestQuotes, bus: Bus, shards: int, counters: MarketDataCounters, msg: Msg, _: None
) -> None:
    """``req.quote.<shard>.<symbol>``: reply with the symbol's latest quote, or an empty reply whose
    ``Rrr-Error`` header says why (an invalid symbol, or a shard that does not own it).

    Only to a reply inbox: a reply subject such as ``md.quote.0.RATE`` would have the reply published
    into the system's own streams, once per request.
    """
    if not msg.reply:
        return
    if not subjects.is_inbox(msg.reply):
        counters.replies_refused += 1
        return
    try:
        symbol = subjects.parse_owned(msg.subject, shards).symbol
    except RRRError as exc:
        await bus.nc.publish(msg.reply, b"", headers={NO_QUOTE_HEADER: str(exc)})
        return
    quote = latest.get(symbol)
    if quote is None:
        await bus.nc.publish(msg.reply, b"", headers={NO_QUOTE_HEADER: f"no quote for {symbol} yet"})
    else:
        await bus.nc.publish(msg.reply, encode(quote))
