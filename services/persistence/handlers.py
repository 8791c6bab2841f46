"""Handlers of the subjects persistence consumes: one function per subject family."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg

from rrr.persistence.store import write_batch
from rrr.shared.bus import Bus, Delivery, Rejected
from rrr.shared.errors import TransientError
from rrr.shared.messages import Message

_log = logging.getLogger(__name__)

# PostgreSQL is down, restarting or unreachable: nothing is wrong with the data, retry it later.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


async def _write(pool: asyncpg.Pool, messages: Sequence[Message]) -> Counter[str]:
    # One transaction per call; the bus acknowledges the batch only after this returns, i.e. after the
    # commit. If PostgreSQL is down, nothing is acknowledged and JetStream redelivers the batch later.
    try:
        async with pool.acquire() as conn, conn.transaction():
            return await write_batch(conn, messages)
    except _UNAVAILABLE as exc:
        raise TransientError(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}") from exc


async def _store(pool: asyncpg.Pool, bus: Bus, batch: Sequence[Delivery[Any]], family: str) -> list[Rejected]:
    rejected: list[Rejected] = []
    try:
        written = await _write(pool, [d.message for d in batch])
    except asyncpg.PostgresError:
        # The database refuses something in the batch (a value out of range, say): write the messages one
        # by one, so that only the culprit is retried and, in the end, dead-lettered.
        written = Counter()
        for delivery in batch:
            try:
                written += await _write(pool, [delivery.message])
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
