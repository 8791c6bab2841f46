"""Lifecycle of the strategy service."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from opentelemetry.sdk.trace import TracerProvider

from rrr.shared import subjects
from rrr.shared.bus import MARKET_DATA_STREAM, Bus
from rrr.shared.messages import market_data_decoder
from rrr.shared.runner import heartbeat_loop, instance_name
from rrr.shared.telemetry import setup_tracing
from rrr.strategy import handlers, snapshots
from rrr.strategy.config import StrategyConfig
from rrr.strategy.sma_cross import SmaCrossParams

_log = logging.getLogger(__name__)
SERVICE = "strategy"


async def run(config: StrategyConfig, stop: asyncio.Event, *, tracer_provider: TracerProvider | None = None) -> None:
    """Consume this shard's quotes and run the strategy on them until ``stop`` is set."""
    provider = tracer_provider or setup_tracing(SERVICE, config.otel_exporter)
    strategies = handlers.Strategies(
        name=config.strategy,
        params=SmaCrossParams(fast=config.fast, slow=config.slow, qty=config.qty),
        shards=config.shards,
    )
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
        bucket = await snapshots.open_bucket(bus)
        key = snapshots.key(config.strategy, config.shard, config.shards)
        strategies.seq, strategies.books = await snapshots.load(bucket, key, strategies.name, strategies.params)
        saver = snapshots.Saver(bucket, key, every_s=config.snapshot_every_ms / 1000)

        # Saved last on the way out (after the consumer stopped, before the connection drains), unless a
        # batch was cut short before its output was stored: then the previous snapshot stays.
        async def _final_snapshot() -> None:
            if strategies.published:
                await saver.save(strategies.seq, strategies.name, strategies.params, strategies.books)

        stack.push_async_callback(_final_snapshot)
        _log.info(
            "serving shard %d of %d from stream sequence %d with %r",
            config.shard,
            config.shards,
            strategies.seq + 1,
            config,
        )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(
                bus.consume(
                    stream=MARKET_DATA_STREAM.name,
                    durable=f"{SERVICE}-{config.strategy}-{config.shard}",
                    filter_subject=subjects.shard_filter(subjects.QUOTE, config.shard),
                    decoder=market_data_decoder,
                    handle_batch=functools.partial(handlers.on_quotes, strategies, bus, saver, stop),
                    stop=stop,
                    batch_size=config.batch_size,
                    ack_wait_s=config.ack_wait_s,
                    start_seq=strategies.seq + 1,
                    ordered=True,
                )
            )
            tasks.create_task(heartbeat_loop(bus, SERVICE, config, stop, lambda: {"symbols": len(strategies.books)}))
