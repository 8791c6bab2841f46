"""The execution service, declared: rebuilt from the event stream, then consuming its shard's orders."""

from __future__ import annotations

import functools
import logging

from rrr.execution import handlers, snapshots
from rrr.execution.config import ExecutionConfig
from rrr.execution.orders import Orders
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.restore import restore
from rrr.execution.risk import RiskLimits
from rrr.shared import subjects
from rrr.shared.bus import COMMAND_STREAM, RETRY_STREAM, Consumer
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
        saved_seq=snapshot_seq,
    )
    # What the restore read after the snapshot is saved at once: the next start does not read it again.
    await saver.save(book)

    # Saved last on the way out (after the consumers stopped, before the connection drains), unless a batch
    # was cut short before its events were stored: then the previous snapshot stays.
    async def _final_snapshot() -> None:
        async with book.lock:
            await saver.save(book)

    ctx.stack.push_async_callback(_final_snapshot)
    commands = subjects.shard_filter(subjects.ORDER_COMMAND, config.shard)
    handle = functools.partial(handlers.on_order_commands, book, ctx.bus, saver, ctx.stop)
    consumers = [
        # Commands in stream order: the order of fills decides average prices and PnL.
        Consumer(COMMAND_STREAM, f"{SERVICE}-{config.shard}", commands, order_command_decoder, handle,
                 ordered=True, retries=True, batch_size=config.batch_size, shards=config.shards),
        # Retries and dead letters handed back after a fix (rrr-dlq republish): late by nature.
        Consumer(RETRY_STREAM, f"{SERVICE}-retry-{config.shard}", subjects.retry(SERVICE, commands),
                 order_command_decoder, handle, retries=True, batch_size=config.batch_size, shards=config.shards),
    ]  # fmt: skip
    return Plan(
        consumers=consumers,
        counters=book.counters,
        gauges=lambda: {
            "positions": len(book.positions),
            "orders": len(book.orders),
            "symbols": len(book.symbols),
            "snapshot_failures": saver.failures,
        },
    )


service = Service(
    SERVICE,
    ExecutionConfig,
    _start,
    description="Execution: consume cmd.order.<shard>.*, publish order events and fills (evt.order.>) "
    "and positions (evt.position.>).",
)
run = service.run
