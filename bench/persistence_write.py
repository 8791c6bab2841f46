"""How fast persistence can write quotes: rows/s of each way of writing a QuoteBatch to PostgreSQL.

    python bench/persistence_write.py [--rows 65536] [--repeats 5] [--batch 512 --batch 4096]

Against a real PostgreSQL (the embedded server in a temporary directory, fsync on, synchronous commit,
the project's migrations applied), one connection, one transaction per batch of ``--batch`` rows (one
QuoteBatch message of that many quotes, all with sizes: the most a row can hold), committed before the next
batch starts, as persistence writes. Each run writes ``--rows`` rows of 100 symbols into an empty
``quotes`` table (truncated before each run), and times everything from the decoded QuoteBatch objects to
the last commit: building the parameters in Python, sending them, the insert and the commit. Reported:
the median of ``--repeats`` runs, in rows/s, and the CPU per row of this process (client) and of the server's
backend (``/proc`` of ``pg_backend_pid()``). Methods:

1. ``unnest numeric``: today's ``INSERT ... SELECT FROM unnest($1::text[], ..., $5::numeric[], ...) ON
   CONFLICT (id) DO NOTHING``, prices and sizes as Decimals from ``to_decimal()``.
2. ``COPY numeric -> staging``: ``copy_records_to_table`` (binary COPY) of Decimals into a temporary table
   (``ON COMMIT DELETE ROWS``, made once per connection), then ``INSERT INTO quotes SELECT ... FROM staging
   ON CONFLICT (id) DO NOTHING``.
3. ``unnest units``: persistence's write of a batch in a transaction (``rrr.persistence.store.write_batch``,
   the way of a redelivered batch and of the retries; its stream's batches went this way before): the unnest INSERT with
   prices and sizes as integer units and places (``bigint[]``, ``smallint[]``), made NUMERIC in SQL
   (``units * 10^-places``, exact, at that scale).
4. ``COPY units -> staging``: binary COPY of integer units into the staging table, the same conversion
   in the ``INSERT ... SELECT ... ON CONFLICT``.
5. ``COPY numeric -> quotes`` (reference only: no ON CONFLICT, so it cannot take a duplicate quote; a file
   replayed after the duplicate window brings those).
6. ``COPY units, INSERT, position``: what persistence ships for the batches of its market-data stream
   (``rrr.persistence.store.write_quote_batches_at``): binary COPY of units into the session's temporary table,
   a plain INSERT from it (ON CONFLICT only if a quote was stored before, which these runs never meet), the
   consumer's position moved, in one transaction of its own.

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
from rrr.persistence.store import prepare_session, write_batch, write_quote_batches_at
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


_SEQ = {"last": 0}


async def _copy_units_at(conn: asyncpg.Connection, m: QuoteBatch) -> None:
    first = _SEQ["last"] + 1
    _SEQ["last"] = first
    # Its own transaction (COPY, INSERT, the position moved, COMMIT), as persistence writes a chunk.
    inserted = await write_quote_batches_at(conn, [m], "bench", "RRR_MD", first, first)
    assert inserted == len(m.quotes)


METHODS: dict[str, Callable[[asyncpg.Connection, QuoteBatch], Awaitable[None]]] = {
    "unnest numeric": _unnest_numeric,
    "COPY numeric -> staging": _copy_numeric,
    "unnest units (store.write_batch)": _unnest_units,
    "COPY units -> staging": _copy_units,
    "COPY numeric -> quotes (reference)": _copy_direct,
    "COPY units, INSERT, position (shipped)": _copy_units_at,
}


def _backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the server process ``pid``, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run(
    conn: asyncpg.Connection, write: Callable[..., Awaitable[None]], batches: list[QuoteBatch]
) -> tuple[float, float, float]:
    """Rows/s, and microseconds of this process's and of the server backend's CPU per row."""
    await conn.execute("TRUNCATE quotes")
    await conn.execute("CHECKPOINT")
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    rows = sum(len(b.quotes) for b in batches)
    client, server, start = time.process_time(), _backend_cpu(backend), time.perf_counter()
    for m in batches:
        if write is _copy_units_at:
            await write(conn, m)
            continue
        async with conn.transaction():
            await write(conn, m)
    elapsed = time.perf_counter() - start
    client, server = time.process_time() - client, _backend_cpu(backend) - server
    assert await conn.fetchval("SELECT count(*) FROM quotes") == rows
    return rows / elapsed, client / rows * 1e6, server / rows * 1e6


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
            await prepare_session(conn)
            await conn.execute(
                "INSERT INTO consumer_positions (consumer, stream, last_seq) VALUES ('bench', 'RRR_MD', 0)"
            )
            settings = {n: await conn.fetchval(f"SHOW {n}") for n in ("fsync", "synchronous_commit", "server_version")}
            print(f"PostgreSQL {settings}, {os.cpu_count()} cores, {rows} rows per run, median of {repeats}")
            await _check_exact(conn)
            for size in sizes:
                batches = _batches(rows, size)
                for name, write in METHODS.items():
                    runs = [await _run(conn, write, batches) for _ in range(repeats)]
                    rates = [r[0] for r in runs]
                    client = statistics.median(r[1] for r in runs)
                    server = statistics.median(r[2] for r in runs)
                    print(f"batch {size:>5}  {name:<38} {statistics.median(rates):>9,.0f} rows/s  CPU per row: "
                          f"client {client:.2f} us, backend {server:.2f} us"
                          f"  (runs: {', '.join(f'{r:,.0f}' for r in rates)})")  # fmt: skip
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
