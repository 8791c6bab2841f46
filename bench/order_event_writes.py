"""What a batch of order events costs persistence and PostgreSQL, and whether it grows with the tables.

    python bench/order_event_writes.py [--orders 0 --orders 100000 --orders 1000000] [--batches 600]
                                       [--batch-orders 8] [--plans]

The embedded PostgreSQL in a temporary directory (fsync on, synchronous commit, the project's migrations,
``pg_stat_statements`` loaded), one connection. For each ``--orders`` size in turn, the tables are filled up to
that many orders (made in SQL: per order its acceptance and fill in ``order_events``, its row in ``orders``
filled, its fill; then VACUUM ANALYZE, as autovacuum would have), and then ``--batches`` batches of order events
are written the way persistence writes a batch read in stream order: ``store.write_batch_at`` (one call) where
the checkout has it, else a transaction that reads the position FOR UPDATE, ``store.write_batch(in_order=True)``
and moves the position (main before the one-call write). A batch holds ``--batch-orders`` market orders
(acceptance, fill, position each), a limit order's acceptance and the cancel of the previous batch's limit order,
as execution's envelopes bring them. The first 50 batches warm up (plans cached, generic after five runs).

Reported per size, per order written: the client's CPU (this process: building the rows, asyncpg), the server
backend's CPU (``/proc`` of ``pg_backend_pid()``), all of PostgreSQL's (every process of the cluster, autovacuum
and WAL writer included), and the wall time; and the sequential scans and tuples they read on ``orders`` and
``order_events`` during the batches (``pg_stat_user_tables``). ``--plans`` also logs every statement's plan,
those run inside functions included (``auto_explain``), and prints the plan nodes that scan those tables.

Run it with each checkout's interpreter to compare them: it imports ``rrr.persistence`` from wherever that
interpreter's project is installed (``/work/wt-persist-before/.venv/bin/python bench/order_event_writes.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from rrr.deploy.postgres_server import PostgresServer
from rrr.persistence import positions, schema, store
from rrr.shared.messages import Message, OrderAccepted, OrderCanceled, OrderFilled, PositionUpdated

SYMBOLS = [f"SYM{i:03d}" for i in range(100)]
WARMUP = 50
_CONSUMER, _STREAM = "bench", "RRR_EVT"
_TICK = os.sysconf("SC_CLK_TCK")

# Orders up to ``$2`` (from ``$1``) made in SQL, as persistence would have stored them: each accepted and filled.
_FILL = [
    """
INSERT INTO orders (client_order_id, strategy, symbol, side, qty, order_type, status, ts_event, ts_updated,
                    filled_qty)
SELECT 'pre-' || n, 'pre', 'SYM' || lpad((n % 100)::text, 3, '0'), 'buy', 1, 'market', 'filled', n, n + 1, 1
  FROM generate_series($1::bigint, $2::bigint - 1) AS n""",
    """
INSERT INTO order_events (id, client_order_id, symbol, kind, status, qty, filled_qty, price, ts_event, ts_init)
SELECT 'pre-' || n || ':' || k, 'pre-' || n, 'SYM' || lpad((n % 100)::text, 3, '0'),
       CASE k WHEN 0 THEN 'accepted' ELSE 'filled' END, CASE k WHEN 0 THEN 'accepted' ELSE 'filled' END,
       1, k, CASE k WHEN 0 THEN NULL ELSE 100 END, n + k, n + k
  FROM generate_series($1::bigint, $2::bigint - 1) AS n, generate_series(0, 1) AS k""",
    """
INSERT INTO fills (fill_id, client_order_id, symbol, side, qty, price, fee, venue, ts_event, ts_init, cum_qty)
SELECT 'pre-' || n || ':1', 'pre-' || n, 'SYM' || lpad((n % 100)::text, 3, '0'), 'buy', 1, 100, 0, 'paper',
       n + 1, n + 1, 1
  FROM generate_series($1::bigint, $2::bigint - 1) AS n""",
]

_SCANS = """
SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan
  FROM pg_stat_user_tables WHERE relname IN ('orders', 'order_events', 'fills', 'positions')"""


def _batch(size: int, n: int, k: int, version: int) -> list[Message]:
    """Batch ``n`` of the run at ``size`` orders: ``k`` market orders filled, one limit order accepted and the
    previous batch's limit order canceled."""
    out: list[Message] = []
    ts = 10**18 + n * 1000
    for i in range(k):
        oid = f"m{size}-{n}-{i}"
        symbol = SYMBOLS[(n * k + i) % len(SYMBOLS)]
        common: dict[str, Any] = {"client_order_id": oid, "symbol": symbol, "side": "buy", "qty": Decimal(1)}
        out.append(OrderAccepted(id=f"{oid}:accepted", ts_event=ts, ts_init=ts, strategy="m", **common))
        out.append(
            OrderFilled(
                id=f"{oid}:1", ts_event=ts + 1, ts_init=ts + 1, price=Decimal("100.25"), fee=Decimal("0.01"),
                venue="paper", **common,
            )
        )  # fmt: skip
        out.append(
            PositionUpdated(
                id=f"{oid}:position", ts_event=ts + 1, ts_init=ts + 1, symbol=symbol, qty=Decimal(n),
                avg_price=Decimal(100), realized_pnl=Decimal(0), version=version + i,
            )
        )  # fmt: skip
    limit: dict[str, Any] = {"strategy": "m", "symbol": SYMBOLS[n % 100], "side": "sell", "qty": Decimal(2)}
    out.append(
        OrderAccepted(
            id=f"l{size}-{n}:accepted", ts_event=ts + 2, ts_init=ts + 2, client_order_id=f"l{size}-{n}",
            order_type="limit", limit_price=Decimal(101), **limit,
        )
    )  # fmt: skip
    if n > 0:
        out.append(
            OrderCanceled(
                id=f"l{size}-{n - 1}:canceled", ts_event=ts + 3, ts_init=ts + 3, client_order_id=f"l{size}-{n - 1}",
                filled_qty=Decimal(0), reason="canceled by request", command_id=f"c{n}", **limit,
            )
        )  # fmt: skip
    return out


async def _write(conn: asyncpg.Connection, messages: list[Message], first: int, last: int) -> None:
    """As persistence's handlers write a batch read in stream order."""
    at = getattr(store, "write_batch_at", None)
    if at is not None and await at(conn, messages, _CONSUMER, _STREAM, first, last) is not None:
        return
    position = positions.Position(_CONSUMER, _STREAM)
    async with conn.transaction():
        covered = await position.locked(conn)
        assert covered < first, (covered, first)
        await store.write_batch(conn, messages, in_order=True)
        await position.advance(conn, last)


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def _postmaster(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


def _cluster(postmaster: int) -> list[int]:
    return [postmaster, *(c.pid for c in psutil.Process(postmaster).children(recursive=True))]


async def _scans(conn: asyncpg.Connection) -> dict[str, tuple[int, int, int]]:
    await conn.execute("SELECT pg_stat_force_next_flush()")
    return {r["relname"]: (r["seq_scan"], r["seq_tup_read"], r["idx_scan"]) for r in await conn.fetch(_SCANS)}


async def _measure(
    conn: asyncpg.Connection, postmaster: int, size: int, batches: int, k: int, seq: int
) -> tuple[dict[str, float], dict[str, tuple[int, int, int]], int]:
    backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
    version = 0
    for n in range(WARMUP):
        messages = _batch(size, n, k, version)
        version += k
        await _write(conn, messages, seq + 1, seq + len(messages))
        seq += len(messages)
    before = await _scans(conn)
    cluster = _cluster(postmaster)
    wall, client = time.perf_counter(), time.process_time()
    server, everything = _cpu_s([backend]), _cpu_s(cluster)
    orders = 0
    for n in range(WARMUP, WARMUP + batches):
        messages = _batch(size, n, k, version)
        version += k
        await _write(conn, messages, seq + 1, seq + len(messages))
        seq += len(messages)
        orders += k + 1
    figures = {
        "wall": time.perf_counter() - wall,
        "client": time.process_time() - client,
        "backend": _cpu_s([backend]) - server,
        "postgres": _cpu_s(cluster) - everything,
    }
    after = await _scans(conn)
    scans = {t: tuple(a - b for a, b in zip(after[t], before.get(t, (0, 0, 0)), strict=True)) for t in after}
    return {name: seconds / orders * 1e6 for name, seconds in figures.items()}, scans, seq  # type: ignore[return-value]


def _scan_nodes(log: Path, start: int) -> dict[str, int]:
    """Plan nodes of auto_explain's output since ``start`` that read orders or order_events whole."""
    found: dict[str, int] = {}
    with log.open(errors="replace") as f:
        f.seek(start)
        for line in f:
            match = re.search(r"(Seq Scan on (orders|order_events)\b.*?)\s+\(", line)
            if match:
                found[match.group(1)] = found.get(match.group(1), 0) + 1
    return found


async def main(sizes: list[int], batches: int, k: int, plans: bool, stale: bool) -> None:
    settings = {"shared_preload_libraries": "pg_stat_statements,auto_explain", "pg_stat_statements.track": "all"}
    if stale:
        # Nothing invalidates the plans the connection made on the first size's tables.
        settings["autovacuum"] = "off"
    with tempfile.TemporaryDirectory(prefix="rrr-bench-pg-") as tmp:
        pg = PostgresServer(data_dir=Path(tmp), settings=settings)
        await asyncio.to_thread(pg.start)
        try:
            conn = await asyncpg.connect(pg.dsn)
            await schema.migrate(conn)
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.execute("INSERT INTO consumer_positions (consumer, stream, last_seq) VALUES ($1, $2, 0)",
                               _CONSUMER, _STREAM)  # fmt: skip
            postmaster = _postmaster(pg.pgdata)
            version = await conn.fetchval("SHOW server_version")
            print(f"PostgreSQL {version}, {os.cpu_count()} cores, {batches} batches of {k} market orders and a limit "
                  f"order each, after {WARMUP} to warm up; code: {Path(store.__file__).parent}")  # fmt: skip
            print(f"{'orders stored':>14} {'client':>8} {'backend':>8} {'postgres':>9} {'wall':>8}   "
                  "us per order; seq scans (tuples read) during the batches")  # fmt: skip
            filled, seq = 0, 0
            for size in sizes:
                if size > filled:
                    for statement in _FILL:
                        await conn.execute(statement, filled, size)
                    filled = size
                if not stale:
                    await conn.execute("VACUUM ANALYZE")
                await conn.execute("SELECT pg_stat_statements_reset()")
                if plans:
                    await conn.execute("LOAD 'auto_explain'")
                    for name, value in (("log_min_duration", "0"), ("log_nested_statements", "on"),
                                        ("log_analyze", "on"), ("log_timing", "off")):  # fmt: skip
                        await conn.execute(f"SET auto_explain.{name} = {value}")
                log = Path(tmp) / "postgres.log"
                start = log.stat().st_size if log.exists() else 0
                per_order, scans, seq = await _measure(conn, postmaster, size, batches, k, seq)
                if plans:
                    await conn.execute("SET auto_explain.log_min_duration = -1")
                seqs = ", ".join(
                    f"{t} {s[0]} ({s[1]:,})" for t, s in sorted(scans.items()) if t in ("orders", "order_events")
                )
                print(f"{size:>14,} {per_order['client']:>8.1f} {per_order['backend']:>8.1f} "
                      f"{per_order['postgres']:>9.1f} {per_order['wall']:>8.1f}   {seqs}")  # fmt: skip
                if plans:
                    for node, count in sorted(_scan_nodes(log, start).items()):
                        print(f"{'':>14} plan node x{count}: {node}")
                    for row in await conn.fetch(
                        "SELECT calls, round(total_exec_time) AS ms, left(regexp_replace(query, '\\s+', ' ', 'g'), 110)"
                        " AS q FROM pg_stat_statements WHERE calls > 0 AND query NOT LIKE '%pg_stat%'"
                        " ORDER BY total_exec_time DESC LIMIT 8"
                    ):
                        print(f"{'':>14} {row['calls']:>6} calls {row['ms']:>7} ms  {row['q']}")
            await conn.close()
        finally:
            await asyncio.to_thread(pg.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, action="append", dest="sizes")
    parser.add_argument("--batches", type=int, default=600)
    parser.add_argument("--batch-orders", type=int, default=8)
    parser.add_argument("--plans", action="store_true")
    parser.add_argument("--stale", action="store_true")
    args = parser.parse_args()
    sizes = args.sizes or [0, 100_000, 1_000_000]
    asyncio.run(main(sizes, args.batches, args.batch_orders, args.plans, args.stale))
