"""Fixtures of the integration tier: the test's own view of the real servers that tests/conftest.py starts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from rrr.shared.bus import Bus
from tests.support.services import Heartbeats, client_bus


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A bus for the test itself on its nats-server, with the system's streams created."""
    async with client_bus(nats_url) as bus:
        yield bus


@pytest.fixture
async def heartbeats(bus: Bus) -> Heartbeats:
    """Every service heartbeat on the test's nats-server, watched from before any service starts."""
    return await Heartbeats.watch(bus.nc)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's own database."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()
