"""The strategy service, declared: restored from its snapshot, then consuming its shard's quotes."""

from __future__ import annotations

import functools

from rrr.shared import subjects
from rrr.shared.bus import MARKET_DATA_STREAM, Consumer
from rrr.shared.messages import market_data_decoder
from rrr.shared.service import Context, Plan, Service
from rrr.strategy import handlers, snapshots
from rrr.strategy.config import StrategyConfig
from rrr.strategy.sma_cross import SmaCrossParams

SERVICE = "strategy"


async def _start(ctx: Context[StrategyConfig]) -> Plan:
    config = ctx.config
    strategies = handlers.Strategies(
        name=config.strategy,
        params=SmaCrossParams(fast=config.fast, slow=config.slow, qty=config.qty),
        shards=config.shards,
        clock=ctx.clock,
    )
    bucket = await snapshots.open_bucket(ctx.bus)
    key = snapshots.key(config.strategy, config.shard, config.shards)
    strategies.seq, strategies.books, strategies.watermarks = await snapshots.load(
        bucket, key, strategies.name, strategies.params
    )
    saver = snapshots.Saver(bucket, key, every_s=config.snapshot_every_ms / 1000)

    # Saved last on the way out (after the consumer stopped, before the connection drains), unless a batch
    # was cut short before its output was stored: then the previous snapshot stays.
    async def _final_snapshot() -> None:
        if strategies.published:
            await saver.save(
                strategies.seq, strategies.name, strategies.params, strategies.books, strategies.watermarks
            )

    ctx.stack.push_async_callback(_final_snapshot)
    quotes = Consumer(
        MARKET_DATA_STREAM,
        f"{SERVICE}-{config.strategy}-{config.shard}",
        subjects.shard_filter(subjects.QUOTE, config.shard),
        market_data_decoder,
        functools.partial(handlers.on_quotes, strategies, ctx.bus, saver, ctx.stop),
        ordered=True,
        batch_size=config.batch_size,
        start_seq=strategies.seq + 1,
        shards=config.shards,
    )
    return Plan(
        consumers=[quotes],
        counters=strategies.counters,
        gauges=lambda: {"symbols": len(strategies.books)},
        note=f"from stream sequence {strategies.seq + 1}",
    )


service = Service(
    SERVICE,
    StrategyConfig,
    _start,
    description="Strategy: consume md.quote.<shard>.*, publish signals (sig.>) and order commands (cmd.order.>).",
)
run = service.run
