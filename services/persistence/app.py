"""The persistence service, declared: the schema checked current, then one consumer per plane of its shard."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, TypeVar

import asyncpg
import msgspec

from rrr.persistence import handlers
from rrr.persistence.config import PersistenceConfig
from rrr.persistence.metrics import WriterMetrics
from rrr.persistence.positions import Position
from rrr.persistence.schema import ensure_current, ensure_writer
from rrr.persistence.store import prepare_session
from rrr.shared import subjects
from rrr.shared.bus import (
    EVENT_STREAM,
    MARKET_DATA_STREAM,
    RETRY_STREAM,
    SIGNAL_STREAM,
    Consumer,
    HandleBatch,
    StreamSpec,
)
from rrr.shared.config import redact
from rrr.shared.errors import RRRError
from rrr.shared.messages import Message, any_decoder, market_data_decoder, order_event_decoder, signal_decoder
from rrr.shared.service import Context, Plan, Service
from rrr.shared.subjects import EVENT_ALL, MARKET_DATA_ALL, SIGNAL_ALL

SERVICE = "persistence"
M = TypeVar("M", bound=Message)


class DatabaseUnavailableError(RRRError):
    """PostgreSQL could not be reached at start-up."""

    def __init__(self, dsn: str, reason: str) -> None:
        super().__init__(f"cannot connect to PostgreSQL at {dsn}: {reason}")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection given back to the pool is reset with: nothing beyond the rollback of a transaction
    left open, which the pool does itself. asyncpg's default resets the whole session (advisory locks,
    cursors, listeners, settings), a round trip per write; persistence never leaves any of those behind:
    its settings and locks are the transaction's own (``set_config(..., true)``, ``pg_advisory_xact_lock``)."""


async def _open_pool(config: PersistenceConfig) -> asyncpg.Pool:
    try:
        # A statement stuck on a vanished server fails after command_timeout instead of blocking shutdown.
        pool = await asyncpg.create_pool(
            config.database_url, min_size=1, max_size=config.pool_max_size, timeout=10, command_timeout=60,
            reset=_keep_session, init=prepare_session,
        )  # fmt: skip
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailableError(str(redact(config.database_url)), str(exc)) from None
    assert pool is not None
    return pool


def _consumer(
    config: PersistenceConfig, family: str, stream: StreamSpec, filter_subject: str,
    decoder: msgspec.msgpack.Decoder[M], handler: HandleBatch[M], start_seq: int | None = None,
) -> Consumer[M]:  # fmt: skip
    # Whatever is queued batch_linger_ms after a message arrived, up to batch_max_rows messages, as one batch
    # (the handler writes it in transactions of at most batch_max_rows rows, quote_batch_max_rows for market
    # data): a transaction costs about as much as a thousand rows. With acknowledgements, waiting at most
    # batch_max_ms for one to fill.
    return Consumer(
        stream, f"{SERVICE}-{family}-{config.shard}", filter_subject, decoder, handler,
        retries=True, batch_size=config.batch_max_rows, max_wait_s=config.batch_max_ms / 1000,
        shards=config.shards, start_seq=start_seq, acks=start_seq is None, linger_s=config.batch_linger_ms / 1000,
    )  # fmt: skip


async def _start(ctx: Context[PersistenceConfig]) -> Plan:
    config, shard = ctx.config, ctx.config.shard
    pool = await _open_pool(config)
    # Closed once the consumers have stopped, so every batch in hand has committed first.
    ctx.stack.push_async_callback(lambda: asyncio.wait_for(pool.close(), timeout=config.drain_timeout_s))
    writer = handlers.Writer(pool, ctx.bus, max_rows=config.batch_max_rows, max_quote_rows=config.quote_batch_max_rows)
    # md, sig and evt: persistence owns its position in each stream (stored with the rows), so they are read
    # without acknowledgements from the message after it.
    planes = {"md": MARKET_DATA_STREAM, "sig": SIGNAL_STREAM, "evt": EVENT_STREAM}
    positions = {family: Position(f"{SERVICE}-{family}-{shard}", stream.name) for family, stream in planes.items()}
    async with pool.acquire() as conn:
        await ensure_current(conn)
        await ensure_writer(conn)
        start = {family: await p.resume(conn, ctx.bus.js) for family, p in positions.items()}
    md, sig, evt = (subjects.plane_shard_filter(p, shard) for p in (MARKET_DATA_ALL, SIGNAL_ALL, EVENT_ALL))
    consumers: list[Consumer[Any]] = [
        _consumer(config, "md", MARKET_DATA_STREAM, md, market_data_decoder,
                  partial(handlers.on_market_data, writer, positions["md"]), start["md"]),
        _consumer(config, "sig", SIGNAL_STREAM, sig, signal_decoder,
                  partial(handlers.on_signals, writer, positions["sig"]), start["sig"]),
        _consumer(config, "evt", EVENT_STREAM, evt, order_event_decoder,
                  partial(handlers.on_events, writer, positions["evt"]), start["evt"]),
        # Dead letters handed back after a fix (rrr-dlq republish), of any plane; rare: acknowledged.
        _consumer(config, "retry", RETRY_STREAM, f"retry.{SERVICE}.*.*.{shard}.*", any_decoder,
                  partial(handlers.on_retries, writer)),
    ]  # fmt: skip
    note = ", ".join(f"{family} from {seq}" for family, seq in start.items())
    return Plan(
        consumers=consumers,
        counters=writer.counters,
        note=f"stream sequences: {note}",
        metrics=[WriterMetrics(writer)],
    )


service = Service(
    SERVICE,
    PersistenceConfig,
    _start,
    description="Persistence: consume md.>, sig.> and evt.> of this shard and write them to PostgreSQL, "
    "batched and idempotent.",
)
run = service.run
