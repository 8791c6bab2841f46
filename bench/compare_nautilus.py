"""Side by side: the same ``sma_cross`` on the same quotes, in NautilusTrader's BacktestEngine and in RRR.

    python bench/compare_nautilus.py [--quotes 1000000] [--rrr-quotes N] [--repeats 3]
                                     [--out bench/results/compare.json] [--only nautilus|rrr]

What it does:

1. Generates ``--quotes`` EURUSD quotes (seeded random walk on 0.00001 ticks, bid < ask, one every 1 ms from
   2020-01-01T00:00:00Z) and writes them once, in a temporary directory, as a CSV in the replay layout
   ``ts,symbol,bid,ask``. ``--rrr-quotes`` (default: the same) replays only the first N of them on the RRR
   side, for when the full file would take too long there; the output says so when they differ.
2. NautilusTrader: builds QuoteTicks from the generated integer arrays (timed on its own, not part of the
   run), then, ``--repeats`` times with a fresh BacktestEngine each, runs bench/_nautilus_sma.py (our
   ``sma_cross`` semantics, exact integer arithmetic) against a simulated venue: margin account, no fees,
   no latency, default fill model (market orders fill at the touch), top-of-book sizes far above the
   order size. Only ``engine.run()`` is timed.
3. RRR: per repeat, a fresh nats-server and PostgreSQL from the embedded binaries and the four services as
   separate processes (tests.support.system.System, feed none), then ``rrr-market-data replay FILE
   --no-progress``. Timed from the start of the replay command until the strategy has handled every quote,
   execution has filled (or rejected) every order the strategy emitted (the orders in RRR_CMD) and
   persistence has stored every quote, as the services' heartbeat counters report (every 100 ms).
   Also reported: the replay's own publish rate, and the time until signals, orders and fills are in
   PostgreSQL too.
4. Checks both sides' orders against the exact reference tests.support.reference.sma_cross_expectations
   (line, side, quantity and fill price of every order), prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from tqdm import tqdm

SYMBOL = "EURUSD"
PRICE_PRECISION = 5
START = datetime(2020, 1, 1, tzinfo=UTC)
START_NS = int(START.timestamp()) * 1_000_000_000
STEP_NS = 1_000_000  # 1 ms between quotes
TOP_SIZE = 1_000_000  # top-of-book size on the Nautilus side: a 1 or 2 unit order never walks the book
HERE = Path(__file__).resolve().parent


def log(message: str) -> None:
    """A progress line on stderr, flushed (the run may go to a log file)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class CpuMeter:
    """CPU seconds used during a timed run: by this process and its descendants, and by everything else.

    The machine may be shared: "other" is the machine's busy time minus this process tree's, so a run
    disturbed by someone else's load shows it.
    """

    def __init__(self) -> None:
        self._busy0 = self._busy()
        self._tree0 = self._tree()
        self._reaped0 = self._reaped()
        self._wall0 = time.perf_counter()

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    @staticmethod
    def _reaped() -> float:
        # Children that ended and were waited for meanwhile (the replay): their CPU lands here.
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    @staticmethod
    def _tree() -> dict[int, float]:
        me = psutil.Process()
        out = {}
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system
        return out

    def stop(self) -> dict[str, float]:
        """CPU seconds since creation: own tree, others, and the machine's busy fraction."""
        wall = time.perf_counter() - self._wall0
        busy = self._busy() - self._busy0
        tree1 = self._tree()
        own = sum(v - self._tree0.get(pid, 0.0) for pid, v in tree1.items()) + self._reaped() - self._reaped0
        cores = os.cpu_count() or 1
        return {
            "own_cpu_s": round(own, 2),
            "other_cpu_s": round(max(busy - own, 0.0), 2),
            "machine_busy_fraction": round(busy / (wall * cores), 3) if wall > 0 else 0.0,
        }


QUIET = {"max_wait_s": 0.0, "threshold": 0.25}  # set from the command line


def wait_for_quiet(label: str) -> dict[str, Any]:
    """Before a timed run: wait (bounded) until other processes use under ``threshold`` of one core.

    The machine may be shared; a run measured while someone else's test suite runs says little. Returns
    what was seen, for the JSON.
    """
    deadline = time.monotonic() + QUIET["max_wait_s"]
    waited_from = time.monotonic()
    while True:
        meter = CpuMeter()
        time.sleep(2.0)  # a sampling window of the machine's load, not a wait on a condition
        other = meter.stop()["other_cpu_s"] / 2.0
        if other < QUIET["threshold"] or time.monotonic() >= deadline:
            waited = time.monotonic() - waited_from
            if waited > 3:
                log(f"{label}: waited {waited:.0f} s for other processes to quiet down (now {other:.2f} cores)")
            return {"waited_s": round(waited, 1), "other_cores_before": round(other, 2)}
        log(f"{label}: other processes use {other:.2f} cores; waiting for the machine to be quiet")


# --------------------------------------------------------------------------------------------- the quotes


@dataclass(frozen=True, slots=True)
class Quotes:
    """Generated quotes: prices in units of 10**-PRICE_PRECISION, times in ns since the epoch."""

    bid: np.ndarray
    ask: np.ndarray
    ts_ns: np.ndarray

    def __len__(self) -> int:
        return len(self.bid)


def generate(n: int, seed: int) -> Quotes:
    """A seeded random walk of the bid in 0.00001 steps, spread of 1 to 3 ticks, one quote per ms."""
    rng = np.random.default_rng(seed)
    steps = rng.choice(np.array([-1, 0, 1], dtype=np.int64), size=n, p=[0.3, 0.4, 0.3])
    bid = 112_000 + np.cumsum(steps, dtype=np.int64)  # 1.12000
    ask = bid + rng.integers(1, 4, size=n, dtype=np.int64)
    if n and int(bid.min()) <= 0:
        raise ValueError("the random walk went to zero; use another --seed")
    ts_ns = START_NS + np.arange(n, dtype=np.int64) * STEP_NS
    return Quotes(bid, ask, ts_ns)


def _price_text(units: int) -> str:
    scale = 10**PRICE_PRECISION
    return f"{units // scale}.{units % scale:0{PRICE_PRECISION}d}"


def write_csv(path: Path, quotes: Quotes, n: int) -> Path:
    """The first ``n`` quotes as ``ts,symbol,bid,ask`` with ISO-8601 UTC times to the millisecond."""
    chunk = 100_000
    with path.open("w", newline="") as fh, tqdm(total=n, unit="row", desc=f"write {path.name}", file=sys.stderr) as bar:
        fh.write("ts,symbol,bid,ask\n")
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            times = np.datetime_as_string(quotes.ts_ns[lo:hi].astype("datetime64[ns]").astype("datetime64[ms]"))
            bids = quotes.bid[lo:hi].tolist()
            asks = quotes.ask[lo:hi].tolist()
            fh.writelines(
                f"{t}Z,{SYMBOL},{_price_text(b)},{_price_text(a)}\n" for t, b, a in zip(times, bids, asks, strict=True)
            )
            bar.update(hi - lo)
    return path


# ------------------------------------------------------------------------------------------- reference


@dataclass(frozen=True, slots=True)
class RefOrder:
    """An order as (0-based quote index, side, quantity, fill price in 10**-5 units)."""

    index: int
    side: str
    qty: int
    price_units: int


def reference_orders(csv_path: Path) -> tuple[list[RefOrder], int, float]:
    """The exact reference's orders for a file, its cross count, and how long it took."""
    from tests.support.reference import sma_cross_expectations

    started = time.perf_counter()
    expected = sma_cross_expectations(csv_path)
    seconds = time.perf_counter() - started
    scale = 10**PRICE_PRECISION
    orders = []
    for o in expected.orders:
        units = o.price * scale
        assert units.denominator == 1, o
        assert o.qty.denominator == 1, o
        orders.append(RefOrder(o.line - 2, o.side, int(o.qty), int(units)))  # line 2 is the first quote
    return orders, expected.crosses, seconds


def first_differences(got: Sequence[Any], want: Sequence[Any], limit: int = 5) -> list[str]:
    """Where two order lists part ways, as text."""
    out = [f"#{i}: got {g} want {w}" for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w][:limit]
    if len(got) != len(want):
        out.append(f"lengths differ: got {len(got)} want {len(want)}")
    return out


# -------------------------------------------------------------------------------------- NautilusTrader


def nautilus_version() -> str:
    import nautilus_trader

    return str(nautilus_trader.__version__)


def build_ticks(quotes: Quotes, n: int) -> tuple[list[Any], Any]:
    """QuoteTicks straight from the integer arrays (exact raw fixed-point prices), and the instrument."""
    from nautilus_trader.model.currencies import EUR, USD
    from nautilus_trader.model.data import QuoteTick
    from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
    from nautilus_trader.model.instruments import CurrencyPair
    from nautilus_trader.model.objects import FIXED_PRECISION, Money, Price, Quantity

    instrument = CurrencyPair(
        instrument_id=InstrumentId(Symbol("EUR/USD"), Venue("SIM")),
        raw_symbol=Symbol("EUR/USD"),
        base_currency=EUR,
        quote_currency=USD,
        price_precision=PRICE_PRECISION,
        size_precision=0,
        price_increment=Price.from_str("0.00001"),
        size_increment=Quantity.from_int(1),
        lot_size=Quantity.from_int(1),
        min_quantity=Quantity.from_int(1),  # our orders are for 1 or 2 units
        max_quantity=Quantity.from_int(10_000_000),
        max_notional=Money(50_000_000, USD),
        margin_init=Decimal("0.03"),
        margin_maint=Decimal("0.03"),
        maker_fee=Decimal(0),
        taker_fee=Decimal(0),
        ts_event=0,
        ts_init=0,
    )
    iid = instrument.id
    scale = 10 ** (FIXED_PRECISION - PRICE_PRECISION)
    size_raw = Quantity.from_int(TOP_SIZE).raw
    from_raw = QuoteTick.from_raw
    ticks: list[Any] = []
    chunk = 100_000
    with tqdm(total=n, unit="tick", desc="build QuoteTicks", file=sys.stderr) as bar:
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            ticks.extend(
                from_raw(iid, b * scale, a * scale, PRICE_PRECISION, PRICE_PRECISION, size_raw, size_raw, 0, 0, t, t)
                for b, a, t in zip(
                    quotes.bid[lo:hi].tolist(), quotes.ask[lo:hi].tolist(), quotes.ts_ns[lo:hi].tolist(), strict=True
                )
            )
            bar.update(hi - lo)
    return ticks, instrument


def nautilus_once(ticks: list[Any], instrument: Any, purge_every: int = 0) -> dict[str, Any]:
    """One fresh BacktestEngine over the ticks; only ``engine.run()`` is timed."""
    from _nautilus_sma import SmaCrossConfig, SmaCrossStrategy
    from nautilus_trader.backtest.engine import BacktestEngine
    from nautilus_trader.backtest.models import FillModel
    from nautilus_trader.config import BacktestEngineConfig, LoggingConfig
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.enums import AccountType, OmsType
    from nautilus_trader.model.identifiers import TraderId
    from nautilus_trader.model.objects import FIXED_PRECISION, Money

    engine = BacktestEngine(
        BacktestEngineConfig(trader_id=TraderId("BENCH-001"), logging=LoggingConfig(log_level="ERROR"))
    )
    try:
        engine.add_venue(
            venue=instrument.id.venue,
            oms_type=OmsType.NETTING,
            account_type=AccountType.MARGIN,
            base_currency=USD,
            starting_balances=[Money(1_000_000, USD)],
            fill_model=FillModel(),  # defaults: no slippage, market orders fill at the touch
            latency_model=None,  # no latency: an order is processed at the quote that triggered it
        )
        engine.add_instrument(instrument)
        engine.add_data(ticks, sort=False)  # already in time order
        tenth = max(len(ticks) // 10, 1)
        strategy = SmaCrossStrategy(
            SmaCrossConfig(instrument_id=instrument.id, mark_every=tenth, purge_every=purge_every)
        )
        engine.add_strategy(strategy)
        quiet = wait_for_quiet("nautilus")
        meter = CpuMeter()
        started = time.perf_counter()
        engine.run()
        ended = time.perf_counter()
        seconds = ended - started
        cpu = meter.stop()
        # Throughput along the run, per tenth of the quotes (the last tenth ends at the end of run()).
        marks = [*strategy.marks, ended]
        deciles = [tenth / (b - a) for a, b in itertools.pairwise(marks)]
        scale = 10 ** (FIXED_PRECISION - PRICE_PRECISION)
        fills = [
            RefOrder((f.ts_event - START_NS) // STEP_NS, f.side, f.qty, f.price_raw // scale) for f in strategy.fills
        ]
        assert all(f.price_raw % scale == 0 for f in strategy.fills)
        return {
            "seconds": seconds,
            "quotes_seen": strategy.quotes_seen,
            "crosses": strategy.crosses,
            "orders": strategy.orders_submitted,
            "order_indexes": [(t - START_NS) // STEP_NS for t in strategy.order_ts],
            "fills": fills,
            "orders_in_cache": len(engine.cache.orders()),
            "positions_in_cache": len(engine.cache.positions()),
            "closed_orders_in_cache": len(engine.cache.orders_closed()),
            "decile_quotes_per_s": deciles,
            "rejected": strategy.rejected,
            "denied": strategy.denied,
            "final_target": strategy.target,
            "cpu": {**cpu, **quiet},
        }
    finally:
        engine.dispose()


def bench_nautilus(
    quotes: Quotes, n: int, repeats: int, ref: list[RefOrder], ref_crosses: int, purge_every: int = 0
) -> dict[str, Any]:
    started = time.perf_counter()
    ticks, instrument = build_ticks(quotes, n)
    build_s = time.perf_counter() - started
    log(f"nautilus: built {len(ticks):,} QuoteTicks in {build_s:.2f} s (not part of the run time)")
    runs = []
    for i in range(1, repeats + 1):
        log(f"nautilus run {i}/{repeats}: engine.run() over {n:,} quotes ...")
        run = nautilus_once(ticks, instrument, purge_every)
        log(
            f"nautilus run {i}/{repeats}: {run['seconds']:.2f} s, {n / run['seconds']:,.0f} quotes/s, "
            f"orders={run['orders']} fills={len(run['fills'])}; cpu {run['cpu']}; quotes/s per tenth of the run: "
            + " ".join(f"{q:,.0f}" for q in run["decile_quotes_per_s"])
        )
        runs.append(run)
    del ticks
    last = runs[-1]
    if any((r["orders"], r["fills"]) != (last["orders"], last["fills"]) for r in runs):
        log("nautilus: WARNING the repeats did not produce the same orders")
    differences = first_differences(last["fills"], ref)
    qps = [n / r["seconds"] for r in runs]
    return {
        "quotes": n,
        "tick_build_seconds": build_s,
        "run_seconds": [r["seconds"] for r in runs],
        "run_cpu": [r["cpu"] for r in runs],
        "quotes_per_s": qps,
        "median_quotes_per_s": statistics.median(qps),
        "quotes_seen": last["quotes_seen"],
        "crosses": last["crosses"],
        "reference_crosses": ref_crosses,
        "orders": last["orders"],
        "orders_in_cache": last["orders_in_cache"],
        "positions_in_cache": last["positions_in_cache"],
        "closed_orders_in_cache": last["closed_orders_in_cache"],
        "decile_quotes_per_s_median_run": sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2][
            "decile_quotes_per_s"
        ],
        "purge_closed_orders_every": purge_every,
        "fills": len(last["fills"]),
        "rejected": last["rejected"],
        "denied": last["denied"],
        "reference_orders": len(ref),
        "fills_match_reference": not differences,
        "differences": differences,
        "_order_indexes": last["order_indexes"],
    }


# ------------------------------------------------------------------------------------------------ RRR


_RATE = re.compile(r"seconds=([\d.]+) rate=([\d,]+)/s")


def _server_versions() -> dict[str, str]:
    from rrr.deploy.nats_server import nats_server_binary
    from rrr.deploy.postgres_server import postgres_bin_dir

    out = {}
    with contextlib.suppress(Exception):
        out["nats_server"] = subprocess.run(
            [str(nats_server_binary()), "--version"], capture_output=True, text=True, check=False, timeout=10
        ).stdout.strip()
    with contextlib.suppress(Exception):
        out["postgres"] = subprocess.run(
            [str(postgres_bin_dir() / "postgres"), "--version"], capture_output=True, text=True, check=False, timeout=10
        ).stdout.strip()
    return out


async def _items(js: Any, stream: str) -> int:
    """The messages ``stream`` holds, an envelope counted as the messages in it (the strategy sends the
    signals and orders of a batch in one envelope each)."""
    from rrr.shared.bus.envelopes import unpacked

    state = (await js.stream_info(stream)).state
    total = 0
    for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        stored = await js.get_msg(stream, seq)
        total += len(unpacked(stored.subject, stored.data))
    return total


async def _rrr_system(
    csv_path: Path, n: int, nats_url: str, dsn: str, workdir: Path, label: str, timeout_s: float, ack_wait_s: int
) -> dict[str, Any]:
    import asyncpg
    import nats

    from tests.support.system import FAST_HEARTBEATS, System

    env = {**FAST_HEARTBEATS, "RRR_ACK_WAIT_S": str(ack_wait_s), "RRR_LOG_LEVEL": "WARNING"}
    async with System(nats_url=nats_url, database_url=dsn, workdir=workdir, env=env) as system:
        await system.start(timeout_s=120)
        nc = await nats.connect(nats_url)
        conn = await asyncpg.connect(dsn)
        replay = None
        try:
            js = nc.jetstream()
            quiet = await asyncio.to_thread(wait_for_quiet, label)
            meter = CpuMeter()
            started = time.perf_counter()
            replay = system.replay(csv_path)
            deadline = started + timeout_s
            cmd_total: int | None = None
            handled_at = None
            with tqdm(total=n, unit="quote", desc=f"{label} stored", file=sys.stderr, mininterval=1.0) as bar:
                while True:
                    for proc in system.procs.values():
                        if proc.returncode is not None:
                            raise RuntimeError(f"{proc.name} exited with {proc.returncode}:\n{proc.log_tail()}")
                    if replay.poll() not in (None, 0):
                        raise RuntimeError(f"replay failed ({replay.returncode}):\n{replay.stderr.read()}")  # type: ignore[union-attr]
                    strategy = system.counters("strategy-0")
                    execution = system.counters("execution-0")
                    stored = system.counters("persistence-0").get("rows_quotes", 0)
                    bar.update(stored - bar.n)
                    if cmd_total is None and strategy.get("quotes", 0) >= n:
                        # Everything up to the last quote is published before the batch is acknowledged
                        # and counted, so RRR_CMD now holds every order the strategy emitted for the file.
                        handled_at = time.perf_counter() - started
                        cmd_total = await _items(js, "RRR_CMD")
                    done_orders = execution.get("orders_filled", 0) + execution.get("orders_rejected", 0)
                    if cmd_total is not None and done_orders >= cmd_total and stored >= n:
                        # The strategy counts a batch's quotes before its orders are acknowledged: a heartbeat
                        # between the two showed every quote with the last orders still on their way.
                        latest = await _items(js, "RRR_CMD")
                        if latest == cmd_total:
                            seconds = time.perf_counter() - started
                            cpu = meter.stop()
                            break
                        cmd_total = latest
                    if time.perf_counter() > deadline:
                        raise TimeoutError(
                            f"{label}: not done after {timeout_s:g} s: strategy={strategy} execution={execution} "
                            f"quotes stored={stored} orders emitted={cmd_total}"
                        )
                    await asyncio.sleep(0.02)  # polling a condition of other processes, with a deadline
            out, err = await asyncio.to_thread(replay.communicate, timeout=120)
            if replay.returncode != 0:
                raise RuntimeError(f"replay failed ({replay.returncode}):\n{err}")
            match = _RATE.search(out)
            if match is None:
                raise RuntimeError(f"no rate= in the replay's output:\n{out}")
            signals_total = await _items(js, "RRR_SIG")
            filled = system.counters("execution-0").get("orders_filled", 0)

            async def table_counts() -> dict[str, int]:
                return {
                    t: int(await conn.fetchval(f"SELECT count(*) FROM {t}"))  # noqa: S608 - fixed table names
                    for t in ("signals", "orders", "fills")
                }

            want = {"signals": signals_total, "orders": cmd_total, "fills": filled}
            while (counts := await table_counts()) != want:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{label}: rows {counts}, expected {want}")
                await asyncio.sleep(0.05)  # polling PostgreSQL with a deadline
                signals_total = await _items(js, "RRR_SIG")
                cmd_total = await _items(js, "RRR_CMD")
                filled = system.counters("execution-0").get("orders_filled", 0)
                want = {"signals": signals_total, "orders": cmd_total, "fills": filled}
            all_stored_s = time.perf_counter() - started
            quotes_rows = int(await conn.fetchval("SELECT count(*) FROM quotes"))
            rows = await conn.fetch(
                """SELECT o.client_order_id, o.side, o.qty, o.status, f.price
                     FROM orders o LEFT JOIN fills f USING (client_order_id)"""
            )
            counters = {name: system.counters(name) for name in system.procs}
        finally:
            if replay is not None and replay.poll() is None:
                replay.kill()
                replay.wait(timeout=30)
            await conn.close()
            await nc.close()
    return {
        "seconds": seconds,
        "cpu": {**cpu, **quiet},
        "strategy_handled_all_s": handled_at,
        "all_stored_seconds": all_stored_s,
        "replay_seconds": float(match.group(1)),
        "replay_rate": float(match.group(2).replace(",", "")),
        "orders_emitted": cmd_total,
        "signals": signals_total,
        "orders_filled": filled,
        "orders_rejected": system.counters("execution-0").get("orders_rejected", 0),
        "rows": {**counts, "quotes": quotes_rows},
        "order_rows": [dict(r) for r in rows],
        "counters": counters,
    }


def rrr_once(csv_path: Path, n: int, workdir: Path, label: str, timeout_s: float, ack_wait_s: int) -> dict[str, Any]:
    """One run on fresh servers in ``workdir`` (deleted afterwards)."""
    from rrr.deploy.nats_server import NatsServer
    from rrr.deploy.postgres_server import PostgresServer

    nats_server = NatsServer(data_dir=workdir / "nats")
    postgres = PostgresServer(data_dir=workdir / "postgres")
    try:
        log(f"{label}: starting nats-server and PostgreSQL")
        nats_server.start()
        postgres.start()
        log(f"{label}: starting the four services, then replaying {n:,} quotes")
        return asyncio.run(
            _rrr_system(csv_path, n, nats_server.url, postgres.dsn, workdir / "services", label, timeout_s, ack_wait_s)
        )
    finally:
        postgres.stop()
        nats_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def bench_rrr(
    csv_path: Path,
    n: int,
    repeats: int,
    ref: list[RefOrder],
    ref_crosses: int,
    tmp: Path,
    timeout_s: float,
    ack_wait_s: int,
) -> dict[str, Any]:
    from rrr.market_data.replay import source_id

    source = source_id(csv_path)
    want = sorted(
        (f"sma_cross-{source}:{o.index + 2}", o.side, o.qty, "filled", Fraction(o.price_units, 10**PRICE_PRECISION))
        for o in ref
    )
    runs = []
    for i in range(1, repeats + 1):
        label = f"rrr run {i}/{repeats}"
        run = rrr_once(csv_path, n, tmp / f"rrr-{i}", label, timeout_s, ack_wait_s)
        got = sorted(
            (
                r["client_order_id"],
                r["side"],
                int(r["qty"]),
                r["status"],
                None if r["price"] is None else Fraction(r["price"]),
            )
            for r in run.pop("order_rows")
        )
        run["differences"] = first_differences(got, want)
        log(
            f"{label}: {run['seconds']:.2f} s, {n / run['seconds']:,.0f} quotes/s; replay rate "
            f"{run['replay_rate']:,.0f}/s; orders={run['orders_emitted']} filled={run['orders_filled']} "
            f"rows={run['rows']}; matches reference: {not run['differences']}; cpu {run['cpu']}"
        )
        runs.append(run)
    last = runs[-1]
    qps = [n / r["seconds"] for r in runs]
    all_qps = [n / r["all_stored_seconds"] for r in runs]
    return {
        "quotes": n,
        "run_seconds": [r["seconds"] for r in runs],
        "run_cpu": [r["cpu"] for r in runs],
        "quotes_per_s": qps,
        "median_quotes_per_s": statistics.median(qps),
        "replay_publish_rate": [r["replay_rate"] for r in runs],
        "median_replay_publish_rate": statistics.median(r["replay_rate"] for r in runs),
        "replay_seconds": [r["replay_seconds"] for r in runs],
        "strategy_handled_all_seconds": [r["strategy_handled_all_s"] for r in runs],
        "all_stored_seconds": [r["all_stored_seconds"] for r in runs],
        "all_stored_quotes_per_s": all_qps,
        "median_all_stored_quotes_per_s": statistics.median(all_qps),
        "signals": last["signals"],
        "reference_crosses": ref_crosses,
        "orders": last["orders_emitted"],
        "fills": last["orders_filled"],
        "rejected": last["orders_rejected"],
        "rows": last["rows"],
        "reference_orders": len(ref),
        "orders_match_reference": all(not r["differences"] for r in runs),
        "differences": last["differences"],
        "runs_orders": [r["orders_emitted"] for r in runs],
        "counters_last_run": last["counters"],
    }


# --------------------------------------------------------------------------------------------- report


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def print_table(result: dict[str, Any]) -> None:
    nt, rrr = result.get("nautilus"), result.get("rrr")
    m = result["method"]
    print()
    print(
        f"sma_cross(5, 20, qty 1) on {SYMBOL}: {m['cores']} cores, Python {m['python']}, "
        f"nautilus_trader {m['nautilus_trader']}, repeats {m['repeats']} (median)"
    )
    if m["quotes"] != m["rrr_quotes"] and nt and rrr:
        print(
            f"NOTE: NautilusTrader ran {m['quotes']:,} quotes, RRR ran the first {m['rrr_quotes']:,} of them "
            f"(--rrr-quotes); throughputs are per quote, order counts per file."
        )
    rows = [("", "NautilusTrader", "RRR")]
    rows.append(("quotes", _fmt(nt and nt["quotes"]), _fmt(rrr and rrr["quotes"])))
    rows.append(
        (
            "throughput, median (quotes/s)",
            _fmt(nt and nt["median_quotes_per_s"]),
            _fmt(rrr and rrr["median_quotes_per_s"]),
        )
    )
    rows.append(
        (
            "throughput, runs (quotes/s)",
            " ".join(_fmt(q) for q in nt["quotes_per_s"]) if nt else "-",
            " ".join(_fmt(q) for q in rrr["quotes_per_s"]) if rrr else "-",
        )
    )
    rows.append(
        (
            "time, runs (s)",
            " ".join(f"{s:.2f}" for s in nt["run_seconds"]) if nt else "-",
            " ".join(f"{s:.2f}" for s in rrr["run_seconds"]) if rrr else "-",
        )
    )
    rows.append(
        (
            "other processes' CPU during runs (s)",
            " ".join(f"{c['other_cpu_s']:.1f}" for c in nt["run_cpu"]) if nt else "-",
            " ".join(f"{c['other_cpu_s']:.1f}" for c in rrr["run_cpu"]) if rrr else "-",
        )
    )
    if rrr:
        rows.append(("RRR replay publish rate, median (/s)", "", _fmt(rrr["median_replay_publish_rate"])))
        rows.append(("RRR incl. signals/orders/fills stored (q/s)", "", _fmt(rrr["median_all_stored_quotes_per_s"])))
    if nt:
        rows.append(("Nautilus QuoteTick build (s, not timed)", f"{nt['tick_build_seconds']:.2f}", ""))
    rows.append(
        ("crosses (reference)", _side(nt, "crosses", "reference_crosses"), _side(rrr, "signals", "reference_crosses"))
    )
    rows.append(
        ("orders (reference)", _side(nt, "orders", "reference_orders"), _side(rrr, "orders", "reference_orders"))
    )
    rows.append(("fills", _fmt(nt and nt["fills"]), _fmt(rrr and rrr["fills"])))
    rows.append(
        (
            "orders identical to reference",
            str(nt["fills_match_reference"]) if nt else "-",
            str(rrr["orders_match_reference"]) if rrr else "-",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}")
    if "ratio_rrr_over_nautilus" in result:
        print(f"ratio RRR / NautilusTrader (median quotes/s): {result['ratio_rrr_over_nautilus']:.4f}")
    for line in result["comparison"]:
        print(line)
    print(f"NautilusTrader includes: {result['includes']['nautilus']}")
    print(f"RRR includes: {result['includes']['rrr']}")


def _side(side: dict[str, Any] | None, key: str, ref_key: str) -> str:
    return "-" if not side else f"{side[key]:,} ({side[ref_key]:,})"


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {"cores": os.cpu_count(), "cpu": cpu, "platform": platform.platform()}
    with contextlib.suppress(ImportError):
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quotes", type=int, default=1_000_000, help="quotes generated (and run by NautilusTrader)")
    parser.add_argument("--rrr-quotes", type=int, default=None, help="quotes replayed through RRR (default: --quotes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20200101)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "compare.json")
    parser.add_argument("--only", choices=("nautilus", "rrr"), default=None, help="run one side only")
    parser.add_argument("--rrr-timeout-s", type=float, default=3600.0, help="deadline of one RRR run")
    parser.add_argument("--ack-wait-s", type=int, default=30, help="RRR_ACK_WAIT_S for the services")
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=600.0,
        help="before each timed run, wait up to this long for other processes to use < 0.25 core (0: never wait)",
    )
    parser.add_argument(
        "--nautilus-purge-every",
        type=int,
        default=0,
        help="diagnostic, off by default: the Nautilus strategy purges closed orders from the cache every N quotes",
    )
    args = parser.parse_args(argv)
    n = args.quotes
    QUIET["max_wait_s"] = args.quiet_wait_s
    n_rrr = args.rrr_quotes if args.rrr_quotes is not None else n
    if n_rrr > n or n < 21 or n_rrr < 21 or args.repeats < 1:
        parser.error("need 21 <= --rrr-quotes <= --quotes and --repeats >= 1")
    do_nautilus, do_rrr = args.only in (None, "nautilus"), args.only in (None, "rrr")

    method: dict[str, Any] = {
        **_machine(),
        "python": platform.python_version(),
        "nautilus_trader": nautilus_version(),
        "quotes": n,
        "rrr_quotes": n_rrr,
        "repeats": args.repeats,
        "seed": args.seed,
        "symbol": SYMBOL,
        "strategy": "sma_cross fast=5 slow=20 qty=1 on quote mids, exact arithmetic on both sides",
        "data": "seeded random walk of the bid in 0.00001 steps, spread 1-3 ticks, one quote per ms from "
        "2020-01-01T00:00:00Z, written once as CSV ts,symbol,bid,ask",
        "nautilus_timing": "wall clock (perf_counter) of engine.run() only, fresh BacktestEngine per repeat; "
        "QuoteTick construction timed separately; default cache settings"
        + (
            f" EXCEPT closed orders purged from the cache every {args.nautilus_purge_every} quotes (diagnostic)"
            if args.nautilus_purge_every
            else ""
        ),
        "rrr_timing": "wall clock from starting `rrr-market-data replay FILE --no-progress` until strategy handled "
        "every quote, execution filled or rejected every order the strategy emitted (the orders in RRR_CMD) and "
        "persistence stored every quote (heartbeat counters, every 100 ms); fresh nats-server, PostgreSQL and "
        "services per repeat",
        "rrr_env": {"RRR_ACK_WAIT_S": str(args.ack_wait_s), "RRR_*_HEARTBEAT_MS": "100", "RRR_LOG_LEVEL": "WARNING"},
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": os.getloadavg(),
        "cpu_accounting": "per run: own_cpu_s (this process and its descendants: servers, services, replay), "
        "other_cpu_s (the machine's busy time minus that: other users of a shared machine); before each timed "
        f"run the script waits up to {args.quiet_wait_s:g} s for other processes to use < 0.25 core",
    }
    if do_rrr:
        method["servers"] = _server_versions()
    log(f"method: {json.dumps({k: method[k] for k in ('cores', 'cpu', 'python', 'nautilus_trader')})}")

    result: dict[str, Any] = {"method": method}
    with tempfile.TemporaryDirectory(prefix="rrr-compare-") as tmp_name:
        tmp = Path(tmp_name)
        quotes = generate(n, args.seed)
        csv_full = write_csv(tmp / f"eurusd_{n}.csv", quotes, n)
        csv_rrr = csv_full if n_rrr == n else write_csv(tmp / f"eurusd_{n_rrr}.csv", quotes, n_rrr)
        log(f"data: {csv_full} ({csv_full.stat().st_size / 2**20:.1f} MiB)")

        refs: dict[int, tuple[list[RefOrder], int, float]] = {}
        for count, path in ((n, csv_full), (n_rrr, csv_rrr)):
            if count not in refs and ((count == n and do_nautilus) or (count == n_rrr and do_rrr)):
                log(f"reference: sma_cross_expectations({path.name}) with fractions ...")
                refs[count] = reference_orders(path)
                log(f"reference: {len(refs[count][0]):,} orders, {refs[count][1]:,} crosses in {refs[count][2]:.1f} s")

        comparison: list[str] = []
        if do_nautilus:
            ref, crosses, _ = refs[n]
            result["nautilus"] = bench_nautilus(quotes, n, args.repeats, ref, crosses, args.nautilus_purge_every)
        if do_rrr:
            ref, crosses, _ = refs[n_rrr]
            result["rrr"] = bench_rrr(
                csv_rrr, n_rrr, args.repeats, ref, crosses, tmp, args.rrr_timeout_s, args.ack_wait_s
            )

    nt, rrr = result.get("nautilus"), result.get("rrr")
    if nt:
        indexes = nt.pop("_order_indexes")
        verdict = "identical to" if nt["fills_match_reference"] else "DIFFERENT from"
        comparison.append(
            f"NautilusTrader: {nt['orders']:,} orders, {nt['fills']:,} fills; every fill (quote, side, qty, price) "
            f"{verdict} the exact reference ({nt['reference_orders']:,} orders)"
        )
        comparison.extend(f"  {d}" for d in nt["differences"])
        deciles = nt["decile_quotes_per_s_median_run"]
        if len(deciles) == 10 and deciles[-1] < 0.75 * deciles[0]:
            comparison.append(
                f"  NautilusTrader slows down along the run: {deciles[0]:,.0f} quotes/s in the first tenth, "
                f"{deciles[-1]:,.0f} in the last, with {nt['closed_orders_in_cache']:,} closed orders in its cache "
                f"at the end: after every fill its simulated venue walks cache.orders_for_position(position) "
                f"(the reduce-only check), and with a NETTING OMS every order ever sent belongs to the one "
                f"position, so the cost per fill grows with the run; --nautilus-purge-every N purges closed "
                f"orders from the cache, as a diagnostic)"
            )
        if nt["denied"] or nt["rejected"]:
            comparison.append(f"  NautilusTrader denied {nt['denied']} and rejected {nt['rejected']} orders")
    if rrr:
        verdict = "identical to" if rrr["orders_match_reference"] else "DIFFERENT from"
        comparison.append(
            f"RRR: {rrr['orders']:,} orders emitted, {rrr['fills']:,} filled, rows {rrr['rows']}; every order and "
            f"fill in PostgreSQL {verdict} the exact reference ({rrr['reference_orders']:,} orders)"
        )
        comparison.extend(f"  {d}" for d in rrr["differences"])
    if nt and rrr:
        if n_rrr == n:
            same = nt["orders"] == rrr["orders"]
            comparison.append(
                f"order counts: NautilusTrader {nt['orders']:,}, RRR {rrr['orders']:,}: "
                + ("the same" if same else "DIFFERENT")
            )
        else:
            prefix = sum(1 for i in indexes if i < n_rrr)
            same = prefix == rrr["orders"]
            comparison.append(
                f"order counts on the first {n_rrr:,} quotes: NautilusTrader {prefix:,}, RRR {rrr['orders']:,}: "
                + ("the same" if same else "DIFFERENT")
            )
        result["order_counts_equal"] = same
        result["ratio_rrr_over_nautilus"] = rrr["median_quotes_per_s"] / nt["median_quotes_per_s"]
    result["comparison"] = comparison
    result["includes"] = {
        "nautilus": "one in-process BacktestEngine: data iteration, strategy callbacks, risk engine, simulated "
        "venue matching and fills, portfolio and post-run analysis; no I/O, nothing persisted, logging at ERROR",
        "rrr": "four service processes over NATS JetStream (file storage) plus the replay process: every quote "
        "published and acknowledged by JetStream, consumed by strategy and persistence, every signal, order "
        "command, order event and fill published through JetStream, and every quote, signal, order and fill "
        "persisted in PostgreSQL (fsync on) before acknowledgement",
    }
    method["load_average_at_end"] = os.getloadavg()
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))  # the test support (tests.support): the reference and the system
    raise SystemExit(main())
