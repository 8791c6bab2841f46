"""Handlers of the subjects persistence consumes: one function per subject family."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from opentelemetry.trace import SpanKind

from rrr.persistence.store import RowsWritten, write_batch
from rrr.shared.bus import Bus, Delivery, Rejected
from rrr.shared.counters import Counters
from rrr.shared.errors import TransientError
from rrr.shared.messages import AnyMessage, MarketData, Message, OrderEvent, Signal

_log = logging.getLogger(__name__)
ACQUIRE_TIMEOUT_S = 10.0

# PostgreSQL is down, restarting, unreachable or out of resources: nothing is wrong with the data.
# InternalClientError: a connection the server dropped in the middle of an operation ("cannot switch to
# state ..."), seen when PostgreSQL shuts down under load.
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
# SQLSTATE classes of the same kind: connection (08), serialization and deadlock (40), insufficient
# resources such as a full disk (53), operator intervention such as a shutdown (57), system errors (58).
_UNAVAILABLE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_UNAVAILABLE_STATES = frozenset({"25006"})  # read-only transaction: a replica after a failover


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES


class PersistenceCounters(Counters, kw_only=True):
    """What persistence counts, reported in its heartbeats: messages stored per consumer, rows per table."""

    md_messages: int = 0
    sig_messages: int = 0
    evt_messages: int = 0
    retry_messages: int = 0
    rows_quotes: int = 0
    rows_trades: int = 0
    rows_signals: int = 0
    rows_orders: int = 0
    rows_fills: int = 0
    rows_positions: int = 0
    rows_orders_filled: int = 0

    def add_rows(self, written: RowsWritten) -> None:
        """Count the rows of one write."""
        self.rows_quotes += written.quotes
        self.rows_trades += written.trades
        self.rows_signals += written.signals
        self.rows_orders += written.orders
        self.rows_fills += written.fills
        self.rows_positions += written.positions
        self.rows_orders_filled += written.orders_filled


@dataclass(slots=True)
class Writer:
    """What the handlers write with: the pool, the bus (for trace links) and the counters."""

    pool: asyncpg.Pool
    bus: Bus
    counters: PersistenceCounters = field(default_factory=PersistenceCounters)


async def _write(pool: asyncpg.Pool, messages: Sequence[Message], acquire_timeout_s: float) -> RowsWritten:
    # One transaction per call; the bus acknowledges the batch only after this returns, i.e. after the
    # commit. If PostgreSQL is unavailable, nothing is acknowledged and the batch is redelivered later.
    try:
        async with pool.acquire(timeout=acquire_timeout_s) as conn, conn.transaction():
            return await write_batch(conn, messages)
    except Exception as exc:
        if _unavailable(exc):
            raise TransientError(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}") from exc
        raise


async def _store(writer: Writer, batch: Sequence[Delivery[Any]], family: str) -> tuple[int, list[Rejected]]:
    """Write a batch; return how many of its messages were stored, and those the database refused."""
    # One span for the batch, linked to each message's sender: the OpenTelemetry way for a batch consumer.
    with writer.bus.tracer.start_as_current_span(
        f"persistence.write_{family}", kind=SpanKind.CONSUMER, links=writer.bus.links([d.msg for d in batch])
    ) as span:
        span.set_attribute("messaging.batch.message_count", len(batch))
        rejected: list[Rejected] = []
        try:
            writer.counters.add_rows(await _write(writer.pool, [d.message for d in batch], ACQUIRE_TIMEOUT_S))
        except asyncpg.PostgresError:
            # The database refuses something in the batch (bad data, say): write the messages one by one, so
            # that only the culprit is retried and, in the end, dead-lettered.
            for delivery in batch:
                try:
                    writer.counters.add_rows(await _write(writer.pool, [delivery.message], ACQUIRE_TIMEOUT_S))
                except asyncpg.PostgresError as exc:
                    rejected.append(Rejected(delivery, f"postgres: {type(exc).__name__}: {exc}"))
        return len(batch) - len(rejected), rejected


async def on_market_data(writer: Writer, batch: Sequence[Delivery[MarketData]]) -> list[Rejected]:
    """``md.*.<shard>.*``: quotes and trades."""
    stored, rejected = await _store(writer, batch, "md")
    writer.counters.md_messages += stored
    return rejected


async def on_signals(writer: Writer, batch: Sequence[Delivery[Signal]]) -> list[Rejected]:
    """``sig.*.<shard>.*``: strategy signals."""
    stored, rejected = await _store(writer, batch, "sig")
    writer.counters.sig_messages += stored
    return rejected


async def on_events(writer: Writer, batch: Sequence[Delivery[OrderEvent]]) -> list[Rejected]:
    """``evt.*.<shard>.*``: order events, fills and positions."""
    stored, rejected = await _store(writer, batch, "evt")
    writer.counters.evt_messages += stored
    return rejected


async def on_retries(writer: Writer, batch: Sequence[Delivery[AnyMessage]]) -> list[Rejected]:
    """``retry.persistence.*.*.<shard>.*``: dead letters handed back with ``rrr-dlq republish``."""
    stored, rejected = await _store(writer, batch, "retry")
    writer.counters.retry_messages += stored
    return rejected
