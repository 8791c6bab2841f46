"""Lifecycle of the persistence service."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

import asyncpg
from opentelemetry.sdk.trace import TracerProvider

from rrr.persistence import handlers
from rrr.persistence.config import PersistenceConfig
from rrr.persistence.schema import migrate
from rrr.shared import subjects
from rrr.shared.bus import EVENT_STREAM, MARKET_DATA_STREAM, RETRY_STREAM, SIGNAL_STREAM, Bus
from rrr.shared.config import redact
from rrr.shared.errors import RRRError
from rrr.shared.messages import any_decoder, market_data_decoder, order_event_decoder, signal_decoder
from rrr.shared.runner import heartbeat_loop, instance_name
from rrr.shared.telemetry import setup_tracing

SERVICE = "persistence"
_log = logging.getLogger(__name__)


class DatabaseUnavailableError(RRRError):
    """PostgreSQL could not be reached at start-up."""

    def __init__(self, dsn: str, reason: str) -> None:
        super().__init__(f"cannot connect to PostgreSQL at {dsn}: {reason}")


async def _open_pool(config: PersistenceConfig) -> asyncpg.Pool:
    try:
        # A statement stuck on a vanished server fails after command_timeout instead of blocking shutdown.
        pool = await asyncpg.create_pool(
            config.database_url, min_size=1, max_size=config.pool_max_size, timeout=10, command_timeout=60
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailableError(str(redact(config.database_url)), str(exc)) from None
    assert pool is not None
    return pool


async def run(config: PersistenceConfig, stop: asyncio.Event, *, tracer_provider: TracerProvider | None = None) -> None:
    """Write this shard's market data, signals and order events to PostgreSQL until ``stop`` is set."""
    provider = tracer_provider or setup_tracing(SERVICE, config.otel_exporter)
    async with contextlib.AsyncExitStack() as stack:
        if tracer_provider is None:
            stack.callback(provider.shutdown)
        pool = await _open_pool(config)
        # Closed last, after the consumers stopped and the bus drained: in-flight batches commit first.
        stack.push_async_callback(lambda: asyncio.wait_for(pool.close(), timeout=config.drain_timeout_s))
        async with pool.acquire() as conn:
            await migrate(conn)
        bus = await Bus.connect(
            config.nats_url,
            service=SERVICE,
            name=instance_name(SERVICE, config),
            tracer=provider.get_tracer("rrr"),
        )
        stack.push_async_callback(bus.close)
        await bus.ensure_streams(max_age_s=config.stream_max_age_s)
        await bus.check_shards(config.shards)
        shard = config.shard
        consumers = (
            (MARKET_DATA_STREAM, "md", subjects.plane_shard_filter(subjects.MARKET_DATA_ALL, shard),
             market_data_decoder, handlers.on_market_data),
            (SIGNAL_STREAM, "sig", subjects.plane_shard_filter(subjects.SIGNAL_ALL, shard),
             signal_decoder, handlers.on_signals),
            (EVENT_STREAM, "evt", subjects.plane_shard_filter(subjects.EVENT_ALL, shard),
             order_event_decoder, handlers.on_events),
            # Dead letters handed back after a fix (rrr-dlq republish), of any plane.
            (RETRY_STREAM, "retry", f"retry.{SERVICE}.*.*.{shard}.*", any_decoder, handlers.on_retries),
        )  # fmt: skip
        _log.info("serving shard %d of %d with %r", config.shard, config.shards, config)
        async with asyncio.TaskGroup() as tasks:
            for stream, family, filter_subject, decoder, handler in consumers:
                tasks.create_task(
                    bus.consume(
                        stream=stream.name,
                        durable=f"{SERVICE}-{family}-{config.shard}",
                        filter_subject=filter_subject,
                        decoder=decoder,
                        handle_batch=functools.partial(handler, pool, bus),
                        stop=stop,
                        batch_size=config.batch_max_rows,
                        ack_wait_s=config.ack_wait_s,
                        max_wait_s=config.batch_max_ms / 1000,
                        retries=True,
                    )
                )
            tasks.create_task(heartbeat_loop(bus, SERVICE, config, stop))
