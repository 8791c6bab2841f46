"""``rrr-stack collect``: the health of nats-server and PostgreSQL as Prometheus metrics.

Neither server speaks Prometheus. At each scrape this process reads nats-server's monitoring endpoint
(``/healthz``, ``/varz``, ``/jsz``: connections, traffic, slow consumers, memory, the JetStream store and
each stream) and a few of PostgreSQL's statistics views as ``rrr_reader`` (connections, commits and
rollbacks, the database's and each table's size and rows), and serves them on its own ``/metrics``. What it
cannot reach is said, not hidden: ``rrr_nats_up`` and ``rrr_postgres_up`` are then 0. ``rrr-stack up`` runs
one, on 127.0.0.1, under the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from rrr.shared.config import redact
from rrr.shared.metrics import counter, gauge, serve

__all__ = ["DATABASE_URL_ENV", "InfraCollector", "collect"]

_log = logging.getLogger("rrr.collector")

# The collector's database identity reaches it through the environment, never its command line.
DATABASE_URL_ENV = "RRR_COLLECTOR_DATABASE_URL"
_TIMEOUT_S = 3.0

# nats-server /varz figures: (field, metric, kind, help).
_VARZ = (
    ("connections", "rrr_nats_connections", "gauge", "Client connections open."),
    ("total_connections", "rrr_nats_connections_opened", "counter", "Client connections opened since start."),
    ("subscriptions", "rrr_nats_subscriptions", "gauge", "Subscriptions."),
    ("slow_consumers", "rrr_nats_slow_consumers", "counter", "Clients the server cut off as too slow."),
    ("in_msgs", "rrr_nats_received_messages", "counter", "Messages received by the server."),
    ("out_msgs", "rrr_nats_sent_messages", "counter", "Messages sent by the server."),
    ("in_bytes", "rrr_nats_received_bytes", "counter", "Bytes received by the server."),
    ("out_bytes", "rrr_nats_sent_bytes", "counter", "Bytes sent by the server."),
    ("mem", "rrr_nats_resident_memory_bytes", "gauge", "The server's resident memory."),
    ("cpu", "rrr_nats_cpu_percent", "gauge", "The server's CPU use, in percent of one core."),
)
# /jsz figures.
_JSZ = (
    ("streams", "rrr_nats_jetstream_streams", "Streams."),
    ("consumers", "rrr_nats_jetstream_consumers", "Consumers."),
    ("messages", "rrr_nats_jetstream_messages", "Messages stored in all streams."),
    ("bytes", "rrr_nats_jetstream_bytes", "Bytes stored in all streams."),
    ("storage", "rrr_nats_jetstream_storage_bytes", "File storage in use."),
    ("reserved_storage", "rrr_nats_jetstream_reserved_storage_bytes", "File storage reserved by the streams' limits."),
)

_PG_DATABASE = """
SELECT numbackends, xact_commit, xact_rollback, deadlocks, pg_database_size(datname) AS size,
       current_setting('max_connections')::int AS max_connections
  FROM pg_stat_database WHERE datname = current_database()"""
_PG_TABLES = """
SELECT relname, pg_total_relation_size(relid) AS size, n_live_tup FROM pg_stat_user_tables
 WHERE schemaname = 'public' ORDER BY relname"""


async def _get_json(url: str) -> Any:
    """GET ``url`` (plain HTTP on this machine) and decode its JSON body."""
    parts = urlsplit(url)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), _TIMEOUT_S)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        # HTTP/1.0: the body comes whole, never in chunks, and the connection closes after it.
        writer.write(f"GET {target} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), _TIMEOUT_S)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
    if status != b"200":
        raise OSError(f"{url} answered {status.decode(errors='replace') or 'nothing'}")
    return json.loads(body)


class InfraCollector(Collector):
    """nats-server's and PostgreSQL's figures as of the last ``refresh``."""

    def __init__(self, nats_monitor_url: str, database_url: str | None) -> None:
        self._nats = nats_monitor_url.rstrip("/")
        self._database_url = database_url
        self._varz: Mapping[str, Any] | None = None
        self._jsz: Mapping[str, Any] | None = None
        self._database: asyncpg.Record | None = None
        self._tables: list[asyncpg.Record] = []

    async def refresh(self) -> None:
        """Read both servers now (each in at most a few seconds); what fails reads as down."""
        await asyncio.gather(self._refresh_nats(), self._refresh_postgres())

    async def _refresh_nats(self) -> None:
        try:
            await _get_json(f"{self._nats}/healthz")
            self._varz = await _get_json(f"{self._nats}/varz")
            self._jsz = await _get_json(f"{self._nats}/jsz?streams=true")
        except (OSError, TimeoutError, ValueError) as exc:
            _log.warning("nats-server's monitoring at %s: %s", self._nats, exc)
            self._varz = self._jsz = None

    async def _refresh_postgres(self) -> None:
        if self._database_url is None:
            return
        try:
            conn = await asyncpg.connect(self._database_url, timeout=_TIMEOUT_S)
            try:
                self._database = await conn.fetchrow(_PG_DATABASE, timeout=_TIMEOUT_S)
                self._tables = list(await conn.fetch(_PG_TABLES, timeout=_TIMEOUT_S))
            finally:
                await conn.close()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _log.warning("PostgreSQL at %s: %s", redact(self._database_url), exc)
            self._database, self._tables = None, []

    def collect(self) -> Iterator[Metric]:
        """Every family, from the last refresh."""
        yield from self._nats_families()
        if self._database_url is not None:
            yield from self._postgres_families()

    def _nats_families(self) -> Iterator[Metric]:
        up = gauge("rrr_nats_up", "1 when nats-server's monitoring endpoint answered the last scrape, else 0.")
        up.add_metric([], 1 if self._varz is not None else 0)
        yield up
        if self._varz is None or self._jsz is None:
            return
        for field, name, kind, text in _VARZ:
            family = counter(name, text) if kind == "counter" else gauge(name, text)
            family.add_metric([], float(self._varz.get(field, 0)))
            yield family
        for field, name, text in _JSZ:
            family = gauge(name, text)
            family.add_metric([], float(self._jsz.get(field, 0)))
            yield family
        messages = gauge("rrr_nats_stream_messages", "Messages a stream holds.", ["stream"])
        size = gauge("rrr_nats_stream_bytes", "Bytes a stream holds.", ["stream"])
        consumers = gauge("rrr_nats_stream_consumers", "Consumers of a stream.", ["stream"])
        for account in self._jsz.get("account_details") or ():
            for stream in account.get("stream_detail") or ():
                state = stream.get("state") or {}
                name = str(stream.get("name", ""))
                messages.add_metric([name], float(state.get("messages", 0)))
                size.add_metric([name], float(state.get("bytes", 0)))
                consumers.add_metric([name], float(state.get("consumer_count", 0)))
        yield from (messages, size, consumers)

    def _postgres_families(self) -> Iterator[Metric]:
        up = gauge("rrr_postgres_up", "1 when PostgreSQL answered the last scrape, else 0.")
        up.add_metric([], 1 if self._database is not None else 0)
        yield up
        if self._database is None:
            return
        db = self._database
        for name, kind, value, text in (
            ("rrr_postgres_connections", "gauge", db["numbackends"], "Connections to the system's database."),
            ("rrr_postgres_max_connections", "gauge", db["max_connections"], "The server's max_connections."),
            ("rrr_postgres_commits", "counter", db["xact_commit"], "Transactions committed in the database."),
            ("rrr_postgres_rollbacks", "counter", db["xact_rollback"], "Transactions rolled back in the database."),
            ("rrr_postgres_deadlocks", "counter", db["deadlocks"], "Deadlocks detected in the database."),
            ("rrr_postgres_database_bytes", "gauge", db["size"], "The database's size on disk."),
        ):
            family = counter(name, text) if kind == "counter" else gauge(name, text)
            family.add_metric([], float(value))
            yield family
        size = gauge("rrr_postgres_table_bytes", "A table's size on disk, indexes and TOAST included.", ["table"])
        rows = gauge("rrr_postgres_table_rows", "A table's live rows, as PostgreSQL estimates them.", ["table"])
        for table in self._tables:
            size.add_metric([table["relname"]], float(table["size"]))
            rows.add_metric([table["relname"]], float(table["n_live_tup"]))
        yield from (size, rows)


async def run_collector(
    collector: InfraCollector, host: str, port: int, stop: asyncio.Event, *, ready: asyncio.Event | None = None
) -> None:
    """Serve ``collector`` on ``http://<host>:<port>/metrics`` until ``stop`` is set."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server = await serve(registry, host, port, before=collector.refresh)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def collect(nats_monitor_url: str, host: str, port: int) -> int:
    """``rrr-stack collect``: serve the servers' health until SIGTERM or SIGINT."""
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    collector = InfraCollector(nats_monitor_url, os.environ.get(DATABASE_URL_ENV) or None)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        _log.info("serving the health of nats-server (%s) and PostgreSQL at http://%s:%d/metrics",
                  nats_monitor_url, host, port)  # fmt: skip
        await run_collector(collector, host, port, stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
    return 0
