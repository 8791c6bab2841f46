"""The machine's floor: the least CPU that storing and moving one quote costs here, whatever the services do.

    python bench/floor.py [--quotes 200000] [--repeats 3]

Three parts, each measured alone on an otherwise idle machine (so each is a best case: together they also
compete for caches and cores), each the median of ``--repeats`` runs:

1. PostgreSQL: quotes written the cheapest way there is, binary COPY straight into ``quotes`` (the project's
   schema and indexes, fsync on), 1,000 rows a transaction with the consumer position updated in it, as an
   exactly-once writer must. CPU of the PostgreSQL server processes per row, and of the writing Python
   process per row (building the records, asyncpg encoding them).
2. nats-server: quote batches of ``--batch`` rows (the real QuoteBatch encoding) stored in a file stream and
   read by ``--readers`` ordered push consumers without acknowledgements (strategy, persistence, execution's
   market copy; market-data's cache), all in one Python process. CPU of nats-server per quote, and of the
   Python process per quote (publishing and receiving, no decoding).
3. Python's own least work per quote: decoding a QuoteBatch (msgspec) once per reader that must see the
   quotes, the ``sma_cross`` engine's ``on_row`` (what the strategy does per quote, with its orders and
   signals built), and building one quote row and batch as a generator or feed must.

The sum at a rate, against the machine's cores, says what rate the machine can hold at best; the rest of a
real run's CPU is what the services add (order flow, their own bookkeeping) and what could still go.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import asyncpg
import msgspec
import nats
import psutil
import uvloop
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from rrr.deploy.nats_server import NatsServer
from rrr.deploy.postgres_server import PostgresServer
from rrr.persistence.schema import migrate
from rrr.shared.fixed import to_decimal
from rrr.shared.messages import QuoteBatch, QuoteRow, SubmitOrder, encode
from rrr.strategy import loading
from rrr.strategy.engine import Engine

SYMBOLS = [f"LD{i:05d}" for i in range(100)]
ROWS_PER_TRANSACTION = 1000


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _family(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _rows(n: int, start: int = 0) -> list[QuoteRow]:
    """Quotes as ``just load`` makes them: a random walk of the mid per symbol, 100 symbols in turn (sma_cross
    then orders on about 6 % of them)."""
    rng = random.Random(7 + start)
    mids = dict.fromkeys(SYMBOLS, 10_000)
    rows = []
    for i in range(start, start + n):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        mid = mids[symbol] = max(mids[symbol] + rng.choice((-1, 0, 1)), 100)
        rows.append(QuoteRow(f"floor:{i}", symbol, 1_700_000_000_000_000_000 + i, mid - 1, mid + 1, 4))
    return rows


# -- 1. PostgreSQL ---------------------------------------------------------------------------------------


async def _postgres_once(pg: PostgresServer, quotes: int) -> tuple[float, float]:
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute("TRUNCATE quotes")
        await conn.execute("CHECKPOINT")
        await conn.execute(
            "INSERT INTO consumer_positions (consumer, stream, last_seq) VALUES ('floor', 'RRR_MD', 0) "
            "ON CONFLICT (consumer, stream) DO UPDATE SET last_seq = 0"
        )
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        server = [*_family(int(pg.pid_file.read_text().split()[0]))]
        assert any(p.pid == backend for p in server)
        rows = _rows(quotes)
        server_before, client_before = _cpu(server), time.process_time()
        for seq, first in enumerate(range(0, quotes, ROWS_PER_TRANSACTION), start=1):
            part = rows[first : first + ROWS_PER_TRANSACTION]
            records = [
                (r.id, r.symbol, r.ts_event, r.ts_event, to_decimal(r.bid, r.places), to_decimal(r.ask, r.places))
                for r in part
            ]
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "quotes", records=records, columns=["id", "symbol", "ts_event", "ts_init", "bid", "ask"]
                )
                await conn.execute("UPDATE consumer_positions SET last_seq = $1 WHERE consumer = 'floor'", seq)
        server_s, client_s = _cpu(server) - server_before, time.process_time() - client_before
        assert await conn.fetchval("SELECT count(*) FROM quotes") == quotes
    finally:
        await conn.close()
    return server_s / quotes * 1e6, client_s / quotes * 1e6


# -- 2. nats-server --------------------------------------------------------------------------------------


async def _nats_once(server: NatsServer, quotes: int, batch: int, readers: int) -> tuple[float, float]:
    nc = await nats.connect(server.url, pending_size=256 * 1024 * 1024)
    js = nc.jetstream()
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream("FLOOR")
        await js.add_stream(StreamConfig(name="FLOOR", subjects=["floor.>"], storage=StorageType.FILE))
        payloads = [
            encode(QuoteBatch(id=f"b{i}", ts_event=0, ts_init=0, source="floor", quotes=_rows(batch, i * batch)))
            for i in range(quotes // batch)
        ]
        done = [asyncio.Event() for _ in range(readers)]
        counts = [0] * readers
        subs = []
        for k in range(readers):

            async def _on(_msg: object, k: int = k) -> None:
                counts[k] += 1
                if counts[k] == len(payloads):
                    done[k].set()

            subs.append(
                await js.subscribe(
                    "floor.>", stream="FLOOR", cb=_on, ordered_consumer=True, pending_msgs_limit=0,
                    pending_bytes_limit=0, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
                )
            )  # fmt: skip
        proc = [psutil.Process(server.pid or 0)]
        server_before, client_before = _cpu(proc), time.process_time()
        window = 256
        for first in range(0, len(payloads), window):
            await asyncio.gather(*(js.publish("floor.q", p) for p in payloads[first : first + window]))
        for event in done:
            await event.wait()
        server_s, client_s = _cpu(proc) - server_before, time.process_time() - client_before
        for sub in subs:
            await sub.unsubscribe()
    finally:
        await nc.close()
    n = len(payloads) * batch
    return server_s / n * 1e6, client_s / n * 1e6


# -- 3. Python's least work per quote -------------------------------------------------------------------


def _timed(n: int, work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return (time.process_time() - started) / n * 1e6


def _python_once(quotes: int, batch: int) -> dict[str, float]:
    rows = _rows(quotes)
    payloads = [
        encode(QuoteBatch(id=f"b{i}", ts_event=0, ts_init=0, source="floor", quotes=rows[i : i + batch]))
        for i in range(0, quotes, batch)
    ]
    decoder = msgspec.msgpack.Decoder(QuoteBatch)
    engine = Engine([loading.spec("sma_cross", "sma_cross", {"qty": Decimal(1)})], clock=lambda: 0)

    orders = 0

    def _engine() -> None:
        nonlocal orders
        for i, row in enumerate(rows):
            orders += sum(1 for m in engine.on_row(row, i + 1, 0) if isinstance(m, SubmitOrder))

    def _generate() -> None:
        for i in range(0, quotes, batch):
            part = [QuoteRow(f"g:{j}", SYMBOLS[j % 100], j, 9_999, 10_001, 4) for j in range(i, min(i + batch, quotes))]
            encode(QuoteBatch(id=f"g{i}", ts_event=0, ts_init=0, source="floor", quotes=part))

    parts = {
        "decode a batch, per quote": _timed(quotes, lambda: [decoder.decode(p) for p in payloads]),
        "sma_cross engine per quote": _timed(quotes, _engine),
        "generate and encode per quote": _timed(quotes, _generate),
    }
    parts["(orders per quote, %)"] = 100 * orders / quotes
    return parts


def main() -> int:
    """Print the floor's parts and their sum at a few rates."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quotes", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=40, help="quotes per batch message (25k/s gave about 11)")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="rrr-floor-") as tmp:
        pg = PostgresServer(data_dir=Path(tmp) / "pg")
        pg.start()
        try:

            async def _pg_runs() -> list[tuple[float, float]]:
                conn = await asyncpg.connect(pg.dsn)
                await migrate(conn)
                await conn.close()
                return [await _postgres_once(pg, args.quotes) for _ in range(args.repeats)]

            pg_runs = uvloop.run(_pg_runs())
        finally:
            pg.stop()
        server = NatsServer(data_dir=Path(tmp) / "nats")
        server.start()
        try:

            async def _nats_runs() -> list[tuple[float, float]]:
                return [await _nats_once(server, args.quotes, args.batch, args.readers) for _ in range(args.repeats)]

            nats_runs = uvloop.run(_nats_runs())
        finally:
            server.stop()
    python_runs = [_python_once(args.quotes, args.batch) for _ in range(args.repeats)]

    def med(values: list[float]) -> float:
        return statistics.median(values)

    parts = {
        "PostgreSQL server, per row (COPY)": med([r[0] for r in pg_runs]),
        "its writer (records, COPY encoding)": med([r[1] for r in pg_runs]),
        f"nats-server, store + {args.readers} readers": med([r[0] for r in nats_runs]),
        "nats-py, publish + receive": med([r[1] for r in nats_runs]),
    }
    order_share = med([r.pop("(orders per quote, %)") for r in python_runs])
    for name in python_runs[0]:
        value = med([r[name] for r in python_runs])
        # Decoded by each reader that reads the quotes themselves (execution keeps them as they came).
        parts[name] = value * (args.readers - 1) if name.startswith("decode") else value
    print(f"the floor per quote, {cores} cores, {args.quotes:,} quotes, batches of {args.batch}, median of "
          f"{args.repeats} (each part alone):")  # fmt: skip
    for name, us in parts.items():
        print(f"  {name:<44} {us:7.2f} us")
    print(f"  (the engine sent an order on {order_share:.1f} % of the quotes; nothing else of the order flow is in)")
    total = sum(parts.values())
    print(f"  {'sum':<44} {total:7.2f} us  -> at most {cores * 1e6 / total:,.0f} quotes/s on {cores} cores")
    for rate in (25_000, 50_000, 100_000):
        print(f"  at {rate:>7,}/s: {rate * total / 1e6:.2f} cores of {cores}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
