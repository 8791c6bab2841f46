"""Lifecycle of the execution service."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

import msgspec
from opentelemetry.sdk.trace import TracerProvider

from rrr.execution import handlers
from rrr.execution.config import ExecutionConfig
from rrr.execution.orders import Orders
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.risk import RiskLimits
from rrr.shared import subjects
from rrr.shared.bus import COMMAND_STREAM, EVENT_STREAM, RETRY_STREAM, Bus
from rrr.shared.messages import (
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    PositionUpdated,
    order_command_decoder,
    order_event_decoder,
)
from rrr.shared.runner import heartbeat_loop, instance_name, now_ns
from rrr.shared.telemetry import setup_tracing

SERVICE = "execution"
_log = logging.getLogger(__name__)


async def _restore(book: handlers.Book, bus: Bus, shard: int, stop: asyncio.Event) -> None:
    """Rebuild order statuses and positions of this shard from the event stream, before trading.

    The fills on the stream are the truth: positions are their fold, in stream order, with the same
    exact arithmetic as live trading. A position whose last published update misses a fill (a crash
    between publishing the fill and the update) is published again, so downstream catches up.
    """
    skipped = 0
    for msg in await bus.read_stream(EVENT_STREAM.name, subjects.shard_filter(subjects.ORDER_EVENT, shard)):
        try:
            event = order_event_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Not ours to judge here (persistence dead-letters it); it carries no state execution wrote.
            skipped += 1
            _log.warning("restore: skipped an undecodable event on %s: %s", msg.subject, exc)
            continue
        if isinstance(event, OrderAccepted):
            book.orders.restore(event.client_order_id, "accepted")
        elif isinstance(event, OrderRejected):
            book.orders.restore(event.client_order_id, "rejected")
        elif isinstance(event, OrderFilled):
            book.replay_fill(event)
    published: dict[str, int] = {}
    for msg in await bus.read_stream(
        EVENT_STREAM.name, subjects.shard_filter(subjects.POSITION, shard), last_per_subject=True
    ):
        try:
            event = order_event_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            skipped += 1
            continue
        if isinstance(event, PositionUpdated):
            published[event.symbol] = event.version
    now = now_ns()
    stale = [
        bus.prepare(subjects.position(symbol, book.shards), handlers.position_updated(book, symbol, now))
        for symbol, position in book.positions.items()
        if published.get(symbol, 0) < position.fills
    ]
    if stale:
        await bus.publish_persistent_many(stale, retry_until=stop)
    open_orders = sum(1 for order_id in book.orders if book.orders.status(order_id) == "accepted")
    _log.info(
        "restored %d orders (%d accepted without a fill yet, completed when redelivered) and %d positions; "
        "republished %d stale position updates; skipped %d undecodable events",
        len(book.orders),
        open_orders,
        len(book.positions),
        len(stale),
        skipped,
    )


async def run(config: ExecutionConfig, stop: asyncio.Event, *, tracer_provider: TracerProvider | None = None) -> None:
    """Consume this shard's order commands until ``stop`` is set."""
    provider = tracer_provider or setup_tracing(SERVICE, config.otel_exporter)
    book = handlers.Book(
        limits=RiskLimits(max_order_qty=config.max_order_qty, max_notional_quote=config.max_notional_quote),
        venue=PaperVenue(slippage_bps=config.slippage_bps, fee_bps=config.fee_bps),
        shards=config.shards,
        orders=Orders(config.max_orders),
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
        await _restore(book, bus, config.shard, stop)
        _log.info("serving shard %d of %d with %r", config.shard, config.shards, config)
        async with asyncio.TaskGroup() as tasks:
            command_filter = subjects.shard_filter(subjects.ORDER_COMMAND, config.shard)
            for stream, durable, filter_subject, ordered in (
                # Commands in stream order: the order of fills decides average prices and PnL.
                (COMMAND_STREAM, f"{SERVICE}-{config.shard}", command_filter, True),
                # Retries and dead letters handed back after a fix (rrr-dlq republish): late by nature.
                (RETRY_STREAM, f"{SERVICE}-retry-{config.shard}", subjects.retry(SERVICE, command_filter), False),
            ):
                tasks.create_task(
                    bus.consume(
                        stream=stream.name,
                        durable=durable,
                        filter_subject=filter_subject,
                        decoder=order_command_decoder,
                        handle_batch=functools.partial(handlers.on_order_commands, book, bus, stop),
                        stop=stop,
                        batch_size=config.batch_size,
                        ack_wait_s=config.ack_wait_s,
                        retries=True,
                        ordered=ordered,
                    )
                )
            tasks.create_task(
                heartbeat_loop(
                    bus,
                    SERVICE,
                    config,
                    stop,
                    lambda: {"positions": len(book.positions), "orders": len(book.orders)},
                )
            )
