"""How fast persistence can write quotes: rows/s of each way of writing a QuoteBatch to PostgreSQL.

    python bench/persistence_write.py [--rows 65536] [--repeats 5] [--batch 512 --batch 4096]

Against a real PostgreSQL (the embedded server in a temporary directory, fsync on, synchronous commit,
the project's migrations applied), one connection, one transaction per batch of ``--batch`` rows (one
QuoteBatch message of that many quotes, all with sizes: the most a row can hold), committed before the next
batch starts, as persistence writes. Each run writes ``--rows`` rows of 100 symbols into an empty
``quotes`` table (truncated before each run), and times everything from the decoded QuoteBatch objects to
the last commit: building the parameters in Python, sending them, the insert and the commit. Reported:
the median of ``--repeats`` runs, in rows/s. Methods:

1. ``unnest numeric``: today's ``INSERT ... SELECT FROM unnest($1::text[], ..., $5::numeric[], ...) ON
   CONFLICT (id) DO NOTHING``, prices and sizes as Decimals from ``to_decimal()``.
2. ``COPY numeric -> staging``: ``copy_records_to_table`` (binary COPY) of Decimals into a temporary table
   (``ON COMMIT DELETE ROWS``, made once per connection), then ``INSERT INTO quotes SELECT ... FROM staging
   ON CONFLICT (id) DO NOTHING``.
3. ``unnest units``: what persistence ships (``rrr.persistence.store.write_batch``): the unnest INSERT with
   prices and sizes as integer units and places (``bigint[]``, ``smallint[]``), made NUMERIC in SQL
   (``units * 10^-places``, exact, at that scale).
4. ``COPY units -> staging``: binary COPY of integer units into the staging table, the same conversion
   in the ``INSERT ... SELECT ... ON CONFLICT``.
5. ``COPY numeric -> quotes`` (reference only: no ON CONFLICT, so it cannot take a duplicate quote; a file
   replayed after the duplicate window brings those).

Every server and this process share the machine's cores; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from rrr.deploy.postgres_server import PostgresServer
from rrr.persistence.schema import migrate
from rrr.persistence.store import write_batch
from rrr.shared.fixed import to_decimal
from rrr.shared.messages import PLACES_MAX, QuoteBatch, QuoteRow

SYMBOLS = [f"SYM{i:03d}" for i in range(100)]
# 10^-p for p = 0 ... 18, each at scale p: times an integer, it gives exactly that scale.
_SCALES = [to_decimal(1, places) for places in range(PLACES_MAX + 1)]

_UNNEST_NUMERIC = """
INSERT INTO quotes (id, symbol, ts_event, ts_init, bid, ask, bid_size, ask_size)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],
                     $5::numeric[], $6::numeric[], $7::numeric[], $8::numeric[])
ON CONFLICT (id) DO NOTHING"""

_STAGE_NUMERIC = """
CREATE TEMPORARY TABLE stage_numeric (
    id text, symbol text, ts_event bigint, ts_init bigint, bid numeric, ask numeric, bid_size numeric,
    ask_size numeric) ON COMMIT DELETE ROWS"""
_FROM_STAGE_NUMERIC = """
INSERT INTO quotes (id, symbol, ts_event, ts_init, bid, ask, bid_size, ask_size)
SELECT * FROM stage_numeric ON CONFLICT (id) DO NOTHING"""

_STAGE_UNITS = """
CREATE TEMPORARY TABLE stage_units (
    id text, symbol text, ts_event bigint, ts_init bigint, bid bigint, ask bigint, places smallint,
    bid_size bigint, ask_size bigint, size_places smallint) ON COMMIT DELETE ROWS"""
_FROM_STAGE_UNITS = """
INSERT INTO quotes (id, symbol, ts_event, ts_init, bid, ask, bid_size, ask_size)
SELECT u.id, u.symbol, u.ts_event, u.ts_init, u.bid * k.s[u.places + 1], u.ask * k.s[u.places + 1],
       u.bid_size * k.s[u.size_places + 1], u.ask_size * k.s[u.size_places + 1]
  FROM stage_units AS u, (SELECT $1::numeric[] AS s) AS k
ON CONFLICT (id) DO NOTHING"""


def _batches(rows: int, batch: int) -> list[QuoteBatch]:
    out = []
    for start in range(0, rows, batch):
        quotes = []
        for i in range(start, min(start + batch, rows)):
            bid = 11_000 + i % 977
            quotes.append(
                QuoteRow(
                    id=f"f3b9c0d4e5a6b7c8:{i}",
                    symbol=SYMBOLS[i % len(SYMBOLS)],
                    ts_event=1_577_836_800_000_000_000 + i,
                    bid=bid,
                    ask=bid + 2,
                    places=5,
                    bid_size=100 + i % 13,
                    ask_size=250,
                    bid_size_places=2,
                    ask_size_places=2,
                )
            )
        out.append(
            QuoteBatch(
                id=f"b{start}", ts_event=quotes[0].ts_event, ts_init=quotes[0].ts_event, source="bench", quotes=quotes
            )
        )
    return out


def _numeric_rows(m: QuoteBatch) -> list[tuple[Any, ...]]:
    rows = []
    for r in m.quotes:
        bid_size = None if r.bid_size is None else to_decimal(r.bid_size, r.bid_size_places)
        ask_size = None if r.ask_size is None else to_decimal(r.ask_size, r.ask_size_places)
        rows.append(
            (
                r.id,
                r.symbol,
                r.ts_event,
                m.ts_init,
                to_decimal(r.bid, r.places),
                to_decimal(r.ask, r.places),
                bid_size,
                ask_size,
            )
        )
    return rows


def _unit_rows(m: QuoteBatch) -> list[tuple[Any, ...]]:
    return [
        (r.id, r.symbol, r.ts_event, m.ts_init, r.bid, r.ask, r.places, r.bid_size, r.ask_size, r.bid_size_places)
        for r in m.quotes
    ]


async def _unnest_numeric(conn: asyncpg.Connection, m: QuoteBatch) -> None:
    await conn.execute(_UNNEST_NUMERIC, *(list(c) for c in zip(*_numeric_rows(m), strict=True)))


async def _unnest_units(conn: asyncpg.Connection, m: QuoteBatch) -> None:
    await write_batch(conn, [m])


async def _copy_numeric(conn: asyncpg.Connection, m: QuoteBatch) -> None:
    await conn.copy_records_to_table("stage_numeric", records=_numeric_rows(m))
    await conn.execute(_FROM_STAGE_NUMERIC)


async def _copy_units(conn: asyncpg.Connection, m: QuoteBatch) -> None:
    await conn.copy_records_to_table("stage_units", records=_unit_rows(m))
    await conn.execute(_FROM_STAGE_UNITS, _SCALES)


async def _copy_direct(conn: asyncpg.Connection, m: QuoteBatch) -> None:
    await conn.copy_records_to_table(
        "quotes",
        records=_numeric_rows(m),
        columns=["id", "symbol", "ts_event", "ts_init", "bid", "ask", "bid_size", "ask_size"],
    )


METHODS: dict[str, Callable[[asyncpg.Connection, QuoteBatch], Awaitable[None]]] = {
    "unnest numeric": _unnest_numeric,
    "COPY numeric -> staging": _copy_numeric,
    "unnest units (store.write_batch)": _unnest_units,
    "COPY units -> staging": _copy_units,
    "COPY numeric -> quotes (reference)": _copy_direct,
}


async def _run(conn: asyncpg.Connection, write: Callable[..., Awaitable[None]], batches: list[QuoteBatch]) -> float:
    await conn.execute("TRUNCATE quotes")
    await conn.execute("CHECKPOINT")
    rows = sum(len(b.quotes) for b in batches)
    start = time.perf_counter()
    for m in batches:
        async with conn.transaction():
            await write(conn, m)
    elapsed = time.perf_counter() - start
    assert await conn.fetchval("SELECT count(*) FROM quotes") == rows
    return rows / elapsed


async def _check_exact(conn: asyncpg.Connection) -> None:
    """Every method stores the same text for every number: compare a units write with a Decimal write."""
    m = _batches(64, 64)[0]
    await conn.execute("TRUNCATE quotes")
    async with conn.transaction():
        await _unnest_numeric(conn, m)
    want = await conn.fetch("SELECT id, bid::text, ask::text, bid_size::text, ask_size::text FROM quotes ORDER BY id")
    for write in (_copy_units, _unnest_units):
        await conn.execute("TRUNCATE quotes")
        async with conn.transaction():
            await write(conn, m)
        got = await conn.fetch(
            "SELECT id, bid::text, ask::text, bid_size::text, ask_size::text FROM quotes ORDER BY id"
        )
        assert got == want, (got[:2], want[:2])


async def main(rows: int, sizes: list[int], repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rrr-bench-pg-") as tmp:
        pg = PostgresServer(data_dir=Path(tmp))
        await asyncio.to_thread(pg.start)
        try:
            conn = await asyncpg.connect(pg.dsn)
            await migrate(conn)
            await conn.execute(_STAGE_NUMERIC)
            await conn.execute(_STAGE_UNITS)
            settings = {n: await conn.fetchval(f"SHOW {n}") for n in ("fsync", "synchronous_commit", "server_version")}
            print(f"PostgreSQL {settings}, {os.cpu_count()} cores, {rows} rows per run, median of {repeats}")
            await _check_exact(conn)
            for size in sizes:
                batches = _batches(rows, size)
                for name, write in METHODS.items():
                    runs = [await _run(conn, write, batches) for _ in range(repeats)]
                    print(f"batch {size:>5}  {name:<36} {statistics.median(runs):>9,.0f} rows/s"
                          f"  (runs: {', '.join(f'{r:,.0f}' for r in runs)})")  # fmt: skip
            await conn.close()
        finally:
            await asyncio.to_thread(pg.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, action="append", dest="sizes")
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.sizes or [512, 4096], args.repeats))
