"""Handlers of the subjects persistence consumes: one function per subject family."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from rrr.persistence.store import write_batch
from rrr.shared.bus import Bus, Delivery
from rrr.shared.errors import TransientError

_log = logging.getLogger(__name__)


async def _store(pool: asyncpg.Pool, bus: Bus, batch: Sequence[Delivery[Any]], family: str) -> None:
    # One transaction per batch; the bus acknowledges the batch only after this returns, i.e. after the
    # commit. If PostgreSQL is down the transaction fails, nothing is acknowledged, and JetStream
    # redelivers the batch later.
    try:
        async with pool.acquire() as conn, conn.transaction():
            written = await write_batch(conn, (d.message for d in batch))
    except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError) as exc:  # fmt: skip
        raise TransientError(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}") from exc
    bus.counters[f"{family}_messages"] += len(batch)
    for table, rows in written.items():
        bus.counters[f"rows_{table}"] += rows


async def on_market_data(pool: asyncpg.Pool, bus: Bus, batch: Sequence[Delivery[Any]]) -> None:
    """``md.*.<shard>.*``: quotes and trades."""
    await _store(pool, bus, batch, "md")


async def on_signals(pool: asyncpg.Pool, bus: Bus, batch: Sequence[Delivery[Any]]) -> None:
    """``sig.*.<shard>.*``: strategy signals."""
    await _store(pool, bus, batch, "sig")


async def on_events(pool: asyncpg.Pool, bus: Bus, batch: Sequence[Delivery[Any]]) -> None:
    """``evt.*.<shard>.*``: order events, fills and positions."""
    await _store(pool, bus, batch, "evt")
