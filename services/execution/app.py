"""The execution service, declared: rebuilt from the event stream, then consuming its shard's orders."""

from __future__ import annotations

import functools

from rrr.execution import handlers
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


async def _start(ctx: Context[ExecutionConfig]) -> Plan:
    config = ctx.config
    book = handlers.Book(
        limits=RiskLimits(max_order_qty=config.max_order_qty, max_notional_quote=config.max_notional_quote),
        venue=PaperVenue(slippage_bps=config.slippage_bps, fee_bps=config.fee_bps),
        shards=config.shards,
        orders=Orders(config.max_orders),
        clock=ctx.clock,
    )
    await restore(book, ctx.bus, config.shard, ctx.stop)
    commands = subjects.shard_filter(subjects.ORDER_COMMAND, config.shard)
    handle = functools.partial(handlers.on_order_commands, book, ctx.bus, ctx.stop)
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
        gauges=lambda: {"positions": len(book.positions), "orders": len(book.orders)},
    )


service = Service(
    SERVICE,
    ExecutionConfig,
    _start,
    description="Execution: consume cmd.order.<shard>.*, publish order events and fills (evt.order.>) "
    "and positions (evt.position.>).",
)
run = service.run
