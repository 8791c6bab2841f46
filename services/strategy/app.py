"""The strategy service, declared: restored from its snapshot, then consuming its shard's quotes."""

from __future__ import annotations

import functools
import logging
from typing import Any

from rrr.shared import subjects
from rrr.shared.bus import (
    COMMAND_STREAM,
    EVENT_STREAM,
    MARKET_DATA_STREAM,
    SIGNAL_STREAM,
    SNAPSHOT_STREAM,
    Consumer,
    FenceSpec,
)
from rrr.shared.messages import market_data_decoder
from rrr.shared.service import Context, Plan, Service
from rrr.strategy import handlers, outcomes, snapshots
from rrr.strategy.config import StrategyConfig
from rrr.strategy.engine import Engine
from rrr.strategy.metrics import EngineMetrics

SERVICE = "strategy"
_log = logging.getLogger(__name__)


async def _start(ctx: Context[StrategyConfig]) -> Plan:
    config = ctx.config
    set_name, specs = config.load()
    engine = Engine(specs, clock=ctx.clock, universe=config.universe())
    strategies = handlers.Strategies(engine=engine, shards=config.shards)
    name = snapshots.name(set_name, config.shard, config.shards)
    legacy_key = snapshots.legacy_key(set_name, config.shard, config.shards)
    covered = await snapshots.load(ctx.bus, name, legacy_key, engine)
    strategies.seq = covered.seq
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
            await saver.save(strategies.seq, strategies.snapshot)

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
    consumers: list[Consumer[Any]] = [quotes]
    if engine.closed_loop:
        # Closed-loop strategies see what happened to their orders: the shard's order events and execution's
        # lockstep progress, read from the position in the snapshot (rrr.strategy.outcomes).
        strategies.outcomes = outcomes.Outcomes(engine)
        strategies.outcomes.start_at(covered.event_seq)
        consumers.append(
            Consumer(
                EVENT_STREAM,
                f"{SERVICE}-{set_name}-{config.shard}-events",
                subjects.shard_filter(subjects.ORDER_EVENT, config.shard),
                outcomes.decoder,
                functools.partial(handlers.on_order_events, strategies.outcomes, ctx.stop),
                ordered=True,
                batch_size=config.batch_size,
                start_seq=covered.event_seq + 1,
                shards=config.shards,
                acks=False,
            )
        )
    held = strategies.outcomes
    return Plan(
        consumers=consumers,
        counters=strategies.counters,
        gauges=lambda: {
            "symbols": len(engine.watermarks),
            "snapshot_failures": saver.failures,
            "strategies": len(engine.runners),
            "strategies_stopped": engine.stopped,
            "orders_open": sum(len(runner.ctx.open_orders) for runner in engine.runners),
            "order_events_held": 0 if held is None else held.held,
            "order_events_delivered": 0 if held is None else held.delivered,
            "order_events_stale": 0 if held is None else held.stale,
            "order_outcome_waits": 0 if held is None else held.waits,
            "order_outcome_wait_ms": 0 if held is None else round(held.waited_s * 1000),
        },
        note=f"from stream sequence {strategies.seq + 1} with {', '.join(s.id for s in specs)}",
        metrics=[EngineMetrics(engine)],
    )


def _fences(config: StrategyConfig) -> list[FenceSpec]:
    """With a standby beside it: the shard's signals and orders, and its snapshot, are fenced."""
    set_name, _ = config.load()
    shard = config.shard
    return [
        FenceSpec(
            SIGNAL_STREAM.name,
            subjects.fence_filter(subjects.SIGNAL, shard),
            subjects.fence_marker(subjects.SIGNAL, shard, SERVICE),
        ),
        FenceSpec(
            COMMAND_STREAM.name,
            subjects.fence_filter(subjects.ORDER_COMMAND, shard),
            subjects.fence_marker(subjects.ORDER_COMMAND, shard, SERVICE),
        ),
        FenceSpec(SNAPSHOT_STREAM.name, subjects.snapshot_head(snapshots.name(set_name, shard, config.shards)), None),
    ]


service = Service(
    SERVICE,
    StrategyConfig,
    _start,
    description=(
        "Strategy: consume md.*.<shard>.* (quotes) and, for closed-loop strategies, evt.order.<shard>.* (their"
        " orders' events, execution's lockstep progress); publish signals (sig.>), order commands and lockstep"
        " markers (cmd.order.>)."
    ),
    fences=_fences,
)
run = service.run
