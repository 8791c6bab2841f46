"""The strategy service, declared: restored from its snapshot, then consuming its shard's quotes."""

from __future__ import annotations

import functools
import logging

from rrr.shared import subjects
from rrr.shared.bus import MARKET_DATA_STREAM, Consumer
from rrr.shared.messages import market_data_decoder
from rrr.shared.service import Context, Plan, Service
from rrr.strategy import handlers, snapshots
from rrr.strategy.config import StrategyConfig
from rrr.strategy.engine import Engine
from rrr.strategy.metrics import EngineMetrics

SERVICE = "strategy"
_log = logging.getLogger(__name__)


async def _start(ctx: Context[StrategyConfig]) -> Plan:
    config = ctx.config
    set_name, specs = config.load()
    engine = Engine(specs, clock=ctx.clock, universe=config.universe(), assume_fills=True)
    strategies = handlers.Strategies(engine=engine, shards=config.shards)
    name = snapshots.name(set_name, config.shard, config.shards)
    legacy_key = snapshots.legacy_key(set_name, config.shard, config.shards)
    strategies.seq = await snapshots.load(ctx.bus, name, legacy_key, engine)
    if len(engine.watermarks) > config.max_symbols:
        # Kept whole: it is what the strategy applied. Only new symbols are refused.
        _log.warning(
            "the snapshot holds %d symbols, more than --max-symbols %d: no new symbol is admitted",
            len(engine.watermarks),
            config.max_symbols,
        )
    saver = snapshots.Saver(ctx.bus, name, legacy_key, every_s=config.snapshot_every_ms / 1000)

    # Saved last on the way out (after the consumer stopped, before the connection drains), unless a batch
    # was cut short before its output was stored: then the previous snapshot stays.
    async def _final_snapshot() -> None:
        if strategies.published and not strategies.refusals_pending:
            await saver.save(strategies.seq, lambda: snapshots.encode_engine(strategies.seq, engine))

    ctx.stack.push_async_callback(_final_snapshot)
    quotes = Consumer(
        MARKET_DATA_STREAM,
        f"{SERVICE}-{set_name}-{config.shard}",
        subjects.plane_shard_filter(subjects.MARKET_DATA_ALL, config.shard),
        market_data_decoder,
        functools.partial(handlers.on_quotes, strategies, ctx.bus, saver, ctx.stop),
        ordered=True,
        batch_size=config.batch_size,
        start_seq=strategies.seq + 1,
        shards=config.shards,
        # Its snapshots hold the last sequence applied: no acknowledgements needed.
        acks=False,
        settled=strategies.settled,
    )
    return Plan(
        consumers=[quotes],
        counters=strategies.counters,
        gauges=lambda: {
            "symbols": len(engine.watermarks),
            "snapshot_failures": saver.failures,
            "strategies": len(engine.runners),
            "strategies_stopped": engine.stopped,
        },
        note=f"from stream sequence {strategies.seq + 1} with {', '.join(s.id for s in specs)}",
        metrics=[EngineMetrics(engine)],
    )


service = Service(
    SERVICE,
    StrategyConfig,
    _start,
    description="Strategy: consume md.*.<shard>.* (quotes), publish signals (sig.>) and order commands (cmd.order.>).",
)
run = service.run
