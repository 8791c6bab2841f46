"""The execution service, declared: rebuilt from the event stream, then consuming its shard's orders."""

from __future__ import annotations

import contextlib
import functools
import logging

import nats.js.errors

from rrr.execution import handlers, market, snapshots
from rrr.execution.config import ExecutionConfig
from rrr.execution.metrics import BookMetrics
from rrr.execution.orders import Orders
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.restore import restore
from rrr.execution.risk import RiskLimits
from rrr.shared import subjects
from rrr.shared.bus import COMMAND_STREAM, EVENT_STREAM, RETRY_STREAM, SNAPSHOT_STREAM, Consumer, FenceSpec
from rrr.shared.messages import order_command_decoder
from rrr.shared.service import Context, Plan, Service

SERVICE = "execution"
_log = logging.getLogger(__name__)


async def _start(ctx: Context[ExecutionConfig]) -> Plan:
    config = ctx.config
    book = handlers.Book(
        limits=RiskLimits(max_order_qty=config.max_order_qty, max_notional_quote=config.max_notional_quote),
        venue=PaperVenue(slippage_bps=config.slippage_bps, fee_bps=config.fee_bps),
        shards=config.shards,
        orders=Orders(config.max_orders),
        clock=ctx.clock,
        universe=config.universe(),
    )
    snapshot_seq = await restore(book, ctx.bus, config.shard, ctx.stop)
    durable = f"{SERVICE}-{config.shard}"
    upgraded = book.command_seq == 0 and await _take_over_durable(ctx, book, durable)
    if len(book.symbols) > config.max_symbols:
        # Kept whole: it is what was traded. Only new symbols are refused.
        _log.warning(
            "restored %d symbols, more than --max-symbols %d: no new symbol is admitted",
            len(book.symbols),
            config.max_symbols,
        )
    saver = snapshots.Saver(
        ctx.bus,
        snapshots.name(config.shard, config.shards),
        every_s=config.snapshot_every_ms / 1000,
        saved=(snapshot_seq, book.command_seq),
    )
    # What the restore read after the snapshot is saved at once: the next start does not read it again.
    await saver.save(book)
    if upgraded:
        # Its position is in the snapshot now: the durable consumer of earlier versions would only linger.
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await ctx.bus.js.delete_consumer(COMMAND_STREAM.name, durable)

    # Saved last on the way out (after the consumers stopped, before the connection drains), unless a batch
    # was cut short before its events were stored: then the previous snapshot stays.
    async def _final_snapshot() -> None:
        async with book.lock:
            if not book.refusals_pending:
                await saver.save(book)

    ctx.stack.push_async_callback(_final_snapshot)
    commands = subjects.shard_filter(subjects.ORDER_COMMAND, config.shard)
    handle = functools.partial(handlers.on_order_commands, book, ctx.bus, saver, ctx.stop)
    consumers = [
        # Commands in stream order: the order of fills decides average prices and PnL. Execution owns its
        # position (in its snapshot, with the state): no acknowledgements.
        Consumer(COMMAND_STREAM, durable, commands, order_command_decoder, handle, ordered=True, retries=True,
                 batch_size=config.batch_size, shards=config.shards, start_seq=book.command_seq + 1, acks=False,
                 settled=book.settled),
        # Retries and dead letters handed back after a fix (rrr-dlq republish): late by nature.
        Consumer(RETRY_STREAM, f"{SERVICE}-retry-{config.shard}", subjects.retry(SERVICE, commands),
                 order_command_decoder, functools.partial(handle, commands=False), retries=True,
                 batch_size=config.batch_size, shards=config.shards),
    ]  # fmt: skip
    return Plan(
        consumers=consumers,
        tasks=[functools.partial(market.follow, ctx.bus, config.shard, book.market, ctx.stop)],
        counters=book.counters,
        note=f"commands from stream sequence {book.command_seq + 1}",
        gauges=lambda: {
            "positions": len(book.positions),
            "orders": len(book.orders),
            "symbols": len(book.symbols),
            "market_messages_held": len(book.market),
            "snapshot_failures": saver.failures,
        },
        metrics=[BookMetrics(book)],
    )


async def _take_over_durable(ctx: Context[ExecutionConfig], book: handlers.Book, durable: str) -> bool:
    """Resume where the durable consumer of an earlier version got to (its acknowledgement floor), once:
    True if there was one. Without it and without a position in the snapshot, commands are read from the
    stream's start; those already handled are known by their orders' events and are not handled twice."""
    try:
        info = await ctx.bus.js.consumer_info(COMMAND_STREAM.name, durable)
    except nats.js.errors.NotFoundError:
        return False
    book.command_seq = info.ack_floor.stream_seq
    _log.info("resuming %s from the acknowledgement floor %d of its durable consumer", durable, book.command_seq)
    return True


def _fences(config: ExecutionConfig) -> list[FenceSpec]:
    """With a standby beside it: the shard's order events and positions, and its snapshot, are fenced."""
    shard = config.shard
    return [
        FenceSpec(
            EVENT_STREAM.name,
            subjects.fence_filter("evt.*", shard),
            subjects.fence_marker(subjects.ORDER_EVENT, shard, SERVICE),
        ),
        FenceSpec(SNAPSHOT_STREAM.name, subjects.snapshot_head(snapshots.name(shard, config.shards)), None),
    ]


service = Service(
    SERVICE,
    ExecutionConfig,
    _start,
    description="Execution: consume cmd.order.<shard>.*, publish order events and fills (evt.order.>) "
    "and positions (evt.position.>).",
    fences=_fences,
)
run = service.run
