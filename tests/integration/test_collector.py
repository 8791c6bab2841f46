"""The servers' collector (`rrr-stack collect`) against a real nats-server and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from rrr.deploy.collector import InfraCollector, run_collector
from rrr.deploy.nats_server import NatsEndpoint
from rrr.deploy.processes import free_port
from rrr.persistence.schema import migrate
from rrr.shared.bus import Bus
from tests.support.metrics import Scrape, scrape


@contextlib.asynccontextmanager
async def _collector(monitor_url: str, database_url: str | None) -> AsyncIterator[str]:
    port = free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_collector(InfraCollector(monitor_url, database_url), "127.0.0.1", port, stop,
                                             ready=ready))  # fmt: skip
    await asyncio.wait_for(ready.wait(), timeout=10)
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_the_collector_exports_nats_servers_traffic_streams_and_postgresqls_tables(
    nats_server: NatsEndpoint, bus: Bus, database_url: str, db: asyncpg.Connection
) -> None:
    assert nats_server.server is not None
    await migrate(db)
    await db.execute("INSERT INTO consumer_positions (consumer, stream, last_seq) VALUES ('c', 's', 1)")
    await bus.js.publish("md.quote.0.EURUSD", b"x")

    async with _collector(nats_server.server.monitor_url, database_url) as url:
        page: Scrape = await scrape(url)

    assert page.value("rrr_nats_up") == 1
    assert page.value("rrr_nats_connections") >= 1
    assert page.value("rrr_nats_received_messages_total") >= 1
    assert page.value("rrr_nats_jetstream_streams") >= 1
    assert page.value("rrr_nats_stream_messages", stream="RRR_MD") == 1
    assert page.value("rrr_nats_stream_bytes", stream="RRR_MD") > 0
    assert page.value("rrr_postgres_up") == 1
    assert page.value("rrr_postgres_connections") >= 1
    assert page.value("rrr_postgres_max_connections") > 0
    assert page.value("rrr_postgres_database_bytes") > 0
    assert page.value("rrr_postgres_table_bytes", table="quotes") > 0
    assert page.label_values("rrr_postgres_table_rows", "table") >= {"quotes", "fills", "orders", "consumer_positions"}


async def test_the_collector_says_a_server_it_cannot_reach_is_down(database_url: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with _collector(nowhere, database_url.replace("/test_", "/missing_")) as url:
        page = await scrape(url)

    assert page.value("rrr_nats_up") == 0
    assert page.value("rrr_postgres_up") == 0
    assert not page.values("rrr_nats_connections")
