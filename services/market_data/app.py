"""Lifecycle of the market-data service."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from cachetools import LRUCache
from opentelemetry.sdk.trace import TracerProvider

from rrr.market_data import handlers
from rrr.market_data.config import MarketDataConfig
from rrr.market_data.feeds import run_simulator
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import market_data_decoder
from rrr.shared.runner import heartbeat_loop, instance_name
from rrr.shared.telemetry import setup_tracing

_log = logging.getLogger(__name__)
SERVICE = "market_data"


async def run(config: MarketDataConfig, stop: asyncio.Event, *, tracer_provider: TracerProvider | None = None) -> None:
    """Serve until ``stop`` is set: the feed, the latest-quote cache and its request endpoint."""
    provider = tracer_provider or setup_tracing(SERVICE, config.otel_exporter)
    async with contextlib.AsyncExitStack() as stack:
        if tracer_provider is None:
            stack.callback(provider.shutdown)
        bus = await Bus.connect(
            config.nats_url,
            service=SERVICE,
            name=instance_name(SERVICE, config),
            tracer=provider.get_tracer("rrr"),
        )
        stack.push_async_callback(bus.close)
        await bus.ensure_streams(max_age_s=config.stream_max_age_s)
        await bus.check_shards(config.shards)

        latest = handlers.LatestQuotes(LRUCache(maxsize=config.cache_max_symbols))
        await bus.subscribe(
            subjects.shard_filter(subjects.QUOTE, config.shard),
            market_data_decoder,
            functools.partial(handlers.on_quote, latest),
        )
        await bus.subscribe(
            subjects.shard_filter(subjects.LATEST_QUOTE, config.shard),
            None,
            functools.partial(handlers.on_latest_request, latest, bus),
        )
        _log.info("serving shard %d of %d with %r", config.shard, config.shards, config)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(heartbeat_loop(bus, SERVICE, config, stop, lambda: {"symbols_cached": len(latest.cache)}))
            if config.feed == "sim":
                tasks.create_task(run_simulator(bus, config, latest, stop))
