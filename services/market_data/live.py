"""The live feed of the service: venue feeds built from the config, their ticks published, their health.

``feeds`` builds one ``VenueFeed`` per venue of ``--venues`` with this shard's symbols; ``BusTickSink``
publishes their ticks the way every live tick is published (core NATS, quotes in batches on
``md.quotes.<shard>.<venue>``, trades on ``md.trade``, the market-data stream capturing them); ``probe``
checks at start-up that each venue's host can be reached, so that a machine offline or a mistyped
endpoint stops the service with one line naming the host.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from rrr.market_data.config import MarketDataConfig
from rrr.market_data.feeds import _publish_live
from rrr.market_data.handlers import MarketDataCounters
from rrr.market_data.venues import VENUES
from rrr.market_data.venues.base import Tick, TickSink
from rrr.market_data.venues.connection import FeedSettings, VenueFeed, VenueUnreachableError
from rrr.market_data.venues.recorder import Recorder, ReplayCounts, read_recording
from rrr.market_data.venues.symbols import parse_symbols, shard_symbols
from rrr.shared import subjects
from rrr.shared.bus import Bus, Outgoing, QuoteBatcher
from rrr.shared.clock import Clock, wall_clock
from rrr.shared.limits import DEFAULT_MAX_MSG_BYTES
from rrr.shared.messages import Quote, fixed_row

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class BusTickSink:
    """Publishes quotes in batches per shard and venue (``md.quotes.<shard>.<venue>``, natural batching:
    the ticks of one burst of frames travel together) and trades one by one.

    A quote whose numbers do not fit a batch's fixed point goes alone, on its symbol's subject, after what
    was gathered before it. A tick that cannot be sent now is dropped and counted (it would be stale).
    """

    bus: Bus
    shards: int
    counters: MarketDataCounters
    clock: Clock = wall_clock
    # The largest message the market-data stream takes: a batch is split to fit.
    max_bytes: int = DEFAULT_MAX_MSG_BYTES
    _batchers: dict[str, QuoteBatcher] = field(default_factory=dict)
    _dropped: int = 0
    _published_quotes: int = 0
    _unconfirmed: int = 0

    def _batcher(self, venue: str) -> QuoteBatcher:
        batcher = self._batchers.get(venue)
        if batcher is None:
            prefix = f"{venue}-{self.clock()}"
            batcher = self._batchers[venue] = QuoteBatcher(
                self.bus, venue, self.shards, prefix, clock=self.clock, max_bytes=self.max_bytes
            )
        return batcher

    async def put(self, ticks: Sequence[Tick]) -> None:
        """Publish ``ticks`` in order."""
        for tick in ticks:
            if isinstance(tick, Quote):
                # Every venue's ids begin with the venue's name (``binance:BTCUSDT:...``).
                batcher = self._batcher(tick.id.split(":", 1)[0])
                row = fixed_row(tick.id, tick.symbol, tick.ts_event, tick.bid, tick.ask, tick.bid_size, tick.ask_size)
                if row is not None:
                    batcher.add(row)
                    continue
                await batcher.close()
                if await _publish_live(self.bus, self.counters, subjects.quote(tick.symbol, self.shards), tick):
                    self.counters.live_published += 1
            else:
                if await _publish_live(self.bus, self.counters, subjects.trade(tick.symbol, self.shards), tick):
                    self.counters.live_published += 1
        for batcher in self._batchers.values():
            await batcher.close()
        quotes = sum(b.counters.quotes for b in self._batchers.values())
        dropped = sum(b.counters.dropped for b in self._batchers.values())
        unconfirmed = sum(b.counters.unconfirmed for b in self._batchers.values())
        self.counters.live_published += quotes - self._published_quotes
        self.counters.dropped_disconnected += dropped - self._dropped
        self.counters.quotes_unconfirmed += unconfirmed - self._unconfirmed
        self._published_quotes, self._dropped, self._unconfirmed = quotes, dropped, unconfirmed


class CountingSink:
    """Takes ticks and only counts them (``record`` writes frames, it publishes nothing)."""

    def __init__(self) -> None:
        self.ticks = 0

    async def put(self, ticks: Sequence[Tick]) -> None:
        """Count ``ticks``."""
        self.ticks += len(ticks)


def feeds(
    config: MarketDataConfig,
    sink: TickSink,
    stop: asyncio.Event,
    *,
    clock: Clock = wall_clock,
    recorder: Recorder | None = None,
) -> list[VenueFeed]:
    """One feed per venue with symbols of this shard (a venue with none is left out, with a warning)."""
    by_venue = parse_symbols(config.symbols, config.venues)
    urls = config.urls()
    built = []
    for name in config.venues:
        venue = VENUES[name]
        mine = shard_symbols(by_venue[name], config.shard, config.shards)
        if not mine:
            _log.warning("%s: none of its symbols belongs to shard %d of %d", name, config.shard, config.shards)
            continue
        if recorder is not None:
            recorder.venue(name, mine)
        per_connection = min(
            config.live_symbols_per_connection or venue.max_symbols_per_connection, venue.max_symbols_per_connection
        )
        settings = FeedSettings(
            url=urls.get(name, venue.url),
            symbols_per_connection=per_connection,
            max_frame_bytes=config.live_max_frame_bytes,
            connect_timeout_s=config.live_connect_timeout_s,
            ping_interval_s=config.live_ping_interval_s,
            stale_connection_s=config.live_stale_connection_s,
            stale_symbol_s=config.live_stale_symbol_s,
            backoff_initial_s=config.live_backoff_initial_s,
            backoff_max_s=max(config.live_backoff_max_s, config.live_backoff_initial_s),
            rollover_after_s=config.live_rollover_after_s,
        )
        built.append(VenueFeed(venue, mine, settings, sink, stop, clock=clock, recorder=recorder, rng=random.Random()))
    return built


async def probe(feeds: Sequence[VenueFeed], timeout_s: float) -> None:
    """Open and close a TCP connection to each venue's host.

    Raises:
        VenueUnreachableError: a host does not resolve or does not accept a connection, naming it.
    """
    for feed in feeds:
        url = urlsplit(feed.settings.url)
        host = url.hostname or ""
        port = url.port or (443 if url.scheme == "wss" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=timeout_s)
        except (OSError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise VenueUnreachableError(feed.venue.name, feed.settings.url, reason) from None
        writer.close()
        await writer.wait_closed()


def health(feeds: Sequence[VenueFeed], clock: Clock) -> Mapping[str, int]:
    """Every feed's health figures, for the heartbeat."""
    now = clock()
    figures: dict[str, int] = {}
    for feed in feeds:
        figures.update(feed.health.values(now))
    return figures


@dataclass(slots=True)
class RecordingReplay:
    """What publishing a recording did."""

    published: int = 0
    duplicates: int = 0
    interrupted: bool = False


async def replay_recording(
    bus: Bus, path: Path, *, shards: int, window: int, stop: asyncio.Event, counts: ReplayCounts
) -> RecordingReplay:
    """Publish the ticks of a recording (``record``'s JSON lines) to JetStream, through the live normalisers.

    Each tick keeps the id its venue event gives it, so a recording replayed twice, or beside the live feed
    that recorded it, stores each tick once.
    """
    report = RecordingReplay()
    pending: list[Outgoing] = []

    async def _flush() -> None:
        stored = await bus.publish_persistent_many(pending, retry_until=stop)
        report.published += stored
        report.duplicates += len(pending) - stored
        pending.clear()

    for tick in read_recording(path, counts):
        if stop.is_set():
            report.interrupted = True
            return report
        subject = (
            subjects.quote(tick.symbol, shards) if isinstance(tick, Quote) else subjects.trade(tick.symbol, shards)
        )
        pending.append(bus.prepare(subject, tick))
        if len(pending) >= window:
            await _flush()
    if pending:
        await _flush()
    return report
