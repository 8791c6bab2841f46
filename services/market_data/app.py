"""The market-data service, declared: its feed, the latest-quote cache and the request endpoint."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from cachetools import LRUCache

from rrr.market_data import handlers, live
from rrr.market_data.config import MarketDataConfig
from rrr.market_data.feeds import run_simulator
from rrr.market_data.metrics import FeedMetrics
from rrr.market_data.venues.connection import VenueFeed
from rrr.shared import subjects
from rrr.shared.bus import Subscription
from rrr.shared.messages import market_data_decoder
from rrr.shared.service import Context, Plan, Service

SERVICE = "market_data"


async def _start(ctx: Context[MarketDataConfig]) -> Plan:
    config = ctx.config
    latest = handlers.LatestQuotes(LRUCache(maxsize=config.cache_max_symbols))
    counters = handlers.MarketDataCounters()
    feeds: list[Callable[[], Coroutine[Any, Any, None]]] = []
    if config.feed == "sim":
        feeds.append(functools.partial(run_simulator, ctx.bus, config, counters, ctx.stop, ctx.clock))
    venue_feeds: list[VenueFeed] = []
    if config.feed == "live":
        sink = live.BusTickSink(ctx.bus, config.shards, counters, clock=ctx.clock, max_bytes=config.max_msg_bytes)
        venue_feeds = live.feeds(config, sink, ctx.stop, clock=ctx.clock)
        # Before the first heartbeat: an unreachable venue stops the service at once, naming its host.
        await live.probe(venue_feeds, config.live_connect_timeout_s)
        feeds.extend(feed.run for feed in venue_feeds)
    return Plan(
        subscriptions=[
            Subscription(
                # Single quotes and quote batches of the shard, from any feed (its own simulator included).
                subjects.plane_shard_filter(subjects.MARKET_DATA_ALL, config.shard),
                market_data_decoder,
                functools.partial(handlers.on_quote, latest),
                shards=config.shards,
            ),
            Subscription(
                subjects.shard_filter(subjects.LATEST_QUOTE, config.shard),
                None,
                functools.partial(handlers.on_latest_request, latest, ctx.bus, config.shards, counters),
                shards=config.shards,
            ),
        ],
        tasks=feeds,
        counters=counters,
        gauges=lambda: {"symbols_cached": len(latest.cache)},
        metrics=[FeedMetrics(venue_feeds, ctx.clock)],
    )


service = Service(SERVICE, MarketDataConfig, _start)
run = service.run
