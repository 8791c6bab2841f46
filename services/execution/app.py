"""The execution service, declared: rebuilt from the event stream, then consuming its shard's orders."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

import nats.js.errors
from nats.js.kv import KeyValue

from rrr.execution import handlers, market, snapshots, trading
from rrr.execution.config import ExecutionConfig
from rrr.execution.metrics import BookMetrics
from rrr.execution.orders import Orders
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.restore import restore
from rrr.shared import subjects
from rrr.shared.bus import (
    COMMAND_STREAM,
    EVENT_STREAM,
    MARKET_DATA_STREAM,
    RETRY_STREAM,
    SNAPSHOT_STREAM,
    Consumer,
    FenceSpec,
)
from rrr.shared.messages import QUOTE_BATCH_MAX, order_command_decoder
from rrr.shared.service import Context, Plan, Service

SERVICE = "execution"
# Market-data messages waiting to be matched: beyond, the consumer that follows them waits.
_MATCHER_QUEUE = 1024
_log = logging.getLogger(__name__)


async def _start(ctx: Context[ExecutionConfig]) -> Plan:
    config = ctx.config
    book = handlers.Book(
        limits=config.limits(),
        venue=PaperVenue(slippage_bps=config.slippage_bps, fee_bps=config.fee_bps),
        shards=config.shards,
        orders=Orders(config.max_orders),
        clock=ctx.clock,
        universe=config.universe(),
        shard=config.shard,
        commands=handlers.HandledCommands(config.max_orders),
        instruments=config.instrument_table(),
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
    # The trading states and the other shards' holdings as they are now, before any order is handled; then
    # what changes, as it changes.
    trading_kv, risk_kv = await trading.trading_bucket(ctx.bus.js), await trading.risk_bucket(ctx.bus.js)
    on_state = functools.partial(handlers.on_trading_state, book, ctx.bus, saver, ctx.stop)

    async def _on_holdings(entry: KeyValue.Entry) -> None:
        handlers.on_shard_risk(book, entry)

    async def _held_at_start(entry: KeyValue.Entry) -> None:
        handlers.on_shard_risk(book, entry, measure=False)

    states = await trading.current(trading_kv, on_state)
    holdings = await trading.current(risk_kv, _held_at_start)
    book.risk.dirty = True  # the others learn where this shard stands now
    book.risk_changed.set()
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
    # The market data the open orders are matched against, from the oldest quote one of them has yet to see,
    # or from the first message after this start (not from whenever the consumer exists: what arrives from
    # now on is matched). A bounded queue: a matcher that falls behind holds the consumer back.
    matcher: asyncio.Queue[market.Raw] = asyncio.Queue(maxsize=_MATCHER_QUEUE)
    unseen = [order.matched_to[0] for order in book.venue.working()]
    start_seq = min(unseen) if unseen else (await ctx.bus.js.stream_info(MARKET_DATA_STREAM.name)).state.last_seq + 1
    # Everything before is behind the matcher: an order placed at an earlier quote is caught up on the quotes
    # after it, read back from the stream.
    book.market_at = (start_seq - 1, QUOTE_BATCH_MAX)
    follow = functools.partial(
        market.follow, ctx.bus, config.shard, book.market, ctx.stop, start_seq=start_seq, matcher=matcher
    )
    match = functools.partial(
        market.drain, matcher, ctx.stop, functools.partial(handlers.on_market_data, book, ctx.bus, saver, ctx.stop)
    )
    return Plan(
        consumers=consumers,
        tasks=[
            follow,
            match,
            functools.partial(trading.follow, states, ctx.stop, on_state),
            functools.partial(trading.follow, holdings, ctx.stop, _on_holdings),
            functools.partial(trading.keep_account, book, risk_kv, trading_kv, ctx.stop, config.risk_publish_ms / 1000),
        ],
        counters=book.counters,
        note=f"commands from stream sequence {book.command_seq + 1}, market data from {start_seq}",
        gauges=lambda: {
            "positions": len(book.positions),
            "orders": len(book.orders),
            "symbols": len(book.symbols),
            "market_messages_held": len(book.market),
            "open_orders": sum(1 for _ in book.venue.working()),
            "lockstep_gates": len(book.gates),
            "snapshot_failures": saver.failures,
            "trading_halted": book.risk.trading.count("halted"),
            "trading_reducing": book.risk.trading.count("reducing"),
            "account_shards_seen": len(book.risk.others) + 1,
            "account_view_revision": book.risk_view_revision,
            "risk_view_lag_max_us": _take_lag(book),
        },
        metrics=[BookMetrics(book)],
    )


def _take_lag(book: handlers.Book) -> int:
    """The largest age of another shard's holdings when read since the last heartbeat, in us; then reset."""
    lag, book.risk_lag_max = book.risk_lag_max, 0
    return max(lag, 0) // 1000


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
    description="Execution: consume cmd.order.<shard>.* (orders, cancels, replaces, lockstep markers), publish "
    "order events, fills and lockstep progress (evt.order.>) and positions (evt.position.>).",
    fences=_fences,
)
run = service.run
