"""Handlers of the subjects persistence consumes: one function per subject family."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg
from opentelemetry.trace import SpanKind

from rrr.persistence.store import write_batch
from rrr.shared.bus import Bus, Delivery, Rejected
from rrr.shared.errors import TransientError
from rrr.shared.messages import Message

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


async def _write(pool: asyncpg.Pool, messages: Sequence[Message], acquire_timeout_s: float) -> Counter[str]:
    # One transaction per call; the bus acknowledges the batch only after this returns, i.e. after the
    # commit. If PostgreSQL is unavailable, nothing is acknowledged and the batch is redelivered later.
    try:
        async with pool.acquire(timeout=acquire_timeout_s) as conn, conn.transaction():
            return await write_batch(conn, messages)
    except Exception as exc:
        if _unavailable(exc):
            raise TransientError(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}") from exc
        raise


async def _store(pool: asyncpg.Pool, bus: Bus, batch: Sequence[Delivery[Any]], family: str) -> list[Rejected]:
    # One span for the batch, linked to each message's sender: the OpenTelemetry way for a batch consumer.
    with bus.tracer.start_as_current_span(
        f"persistence.write_{family}", kind=SpanKind.CONSUMER, links=bus.links(batch)
    ) as span:
        span.set_attribute("messaging.batch.message_count", len(batch))
        return await _store_batch(pool, bus, batch, family)


async def _store_batch(pool: asyncpg.Pool, bus: Bus, batch: Sequence[Delivery[Any]], family: str) -> list[Rejected]:
    rejected: list[Rejected] = []
    timeout = ACQUIRE_TIMEOUT_S
    try:
        written = await _write(pool, [d.message for d in batch], timeout)
    except asyncpg.PostgresError:
        # The database refuses something in the batch (bad data, say): write the messages one by one, so
        # that only the culprit is retried and, in the end, dead-lettered.
        written = Counter()
        for delivery in batch:
            try:
                written += await _write(pool, [delivery.message], timeout)
            except asyncpg.PostgresError as exc:
                rejected.append(Rejected(delivery, f"postgres: {type(exc).__name__}: {exc}"))
    bus.counters[f"{family}_messages"] += len(batch) - len(rejected)
    for table, rows in written.items():
        bus.counters[f"rows_{table}"] += rows
    return rejected


async def on_market_data(pool: asyncpg.Pool, bus: Bus, batch: Sequence[Delivery[Any]]) -> list[Rejected]:
    """``md.*.<shard>.*``: quotes and trades."""
    return await _store(pool, bus, batch, "md")


async def on_signals(pool: asyncpg.Pool, bus: Bus, batch: Sequence[Delivery[Any]]) -> list[Rejected]:
    """``sig.*.<shard>.*``: strategy signals."""
    return await _store(pool, bus, batch, "sig")


async def on_events(pool: asyncpg.Pool, bus: Bus, batch: Sequence[Delivery[Any]]) -> list[Rejected]:
    """``evt.*.<shard>.*``: order events, fills and positions."""
    return await _store(pool, bus, batch, "evt")


async def on_retries(pool: asyncpg.Pool, bus: Bus, batch: Sequence[Delivery[Any]]) -> list[Rejected]:
    """``retry.persistence.*.*.<shard>.*``: dead letters handed back with ``rrr-dlq republish``."""
    return await _store(pool, bus, batch, "retry")
