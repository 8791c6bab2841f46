"""What a restart of execution costs after a long history: time to serving and peak memory, with and without
its snapshot.

    python bench/restore.py [--fills 200000] [--symbols 100] [--after 10000] [--max-orders N] [--before CMD]
                            [--repeats 3] [--cases empty,history,snapshot,after]

Method:

1. A nats-server (JetStream, file storage) from the embedded binary, in a temporary directory.
2. A history of ``--fills`` orders of shard 0 over ``--symbols`` symbols, each as execution publishes it
   (OrderAccepted, OrderFilled, PositionUpdated: three events per fill), made by execution's own handler
   (``on_submit_order``) and published in batches to RRR_EVT.
3. ``rrr-execution`` started as a process (with ``--max-orders`` if given), for each case in turn:

   - ``empty``: before the history is published, for the cost of the process itself;
   - ``before`` (with ``--before CMD``): another build of the service, say an earlier version's
     ``rrr-execution`` installed in a virtual environment of its own, on the same history;
   - ``history``: no snapshot (deleted first), so it reads the whole history;
   - ``snapshot``: with the snapshot the previous start saved, which covers the whole history;
   - ``after``: with that snapshot and ``--after`` more fills stored after it (a crash before the next save).

   Each start is timed from the spawn to its "serving" log line (restore done, consuming), and its peak RSS
   is read then (``VmHWM`` in ``/proc/<pid>/status``, Linux). It is then stopped with SIGTERM. Each case
   runs ``--repeats`` times (``after`` stores ``--after`` more fills before each); the median time is
   reported, with the largest peak RSS.

"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from rrr.deploy.nats_server import NatsServer
from rrr.execution import handlers, snapshots
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.risk import RiskLimits
from rrr.shared.bus import SNAPSHOT_STREAM, Bus
from rrr.shared.config import ServiceConfig
from rrr.shared.messages import Quote, SubmitOrder

_BATCH = 3000
_START_NS = 1_577_836_800_000_000_000


def _orders(first: int, count: int, symbols: int) -> Iterator[SubmitOrder]:
    for i in range(first, first + count):
        ts = _START_NS + i
        # Buys and sells of uneven sizes: positions cross zero, average prices are fractions.
        yield SubmitOrder(
            id=f"bench-{i}",
            ts_event=ts,
            ts_init=ts,
            strategy="bench",
            symbol=f"SYM{i % symbols:04d}",
            side="buy" if i % 3 else "sell",
            qty=Decimal(1 + i % 7),
            quote_ts=ts,
            quote_bid=Decimal("100") + Decimal(i % 97) / 100,
            quote_ask=Decimal("100.01") + Decimal(i % 97) / 100,
        )


async def _history(url: str, first: int, fills: int, symbols: int) -> None:
    bus = await Bus.connect(url, service="bench", name="bench-restore")
    try:
        await bus.ensure_streams(max_age_s=ServiceConfig().stream_max_age_s)
        book = handlers.Book(
            limits=RiskLimits(max_order_qty=Decimal(10**9), max_notional_quote=Decimal(10**15)),
            venue=PaperVenue(),
            shards=1,
        )
        # The book that made the earlier fills: positions continue where they were.
        for order in _orders(0, first, symbols):
            book.position(order.symbol).fills += 1
        batch = []
        published = 0
        for order in _orders(first, fills, symbols):
            # Priced at the quote it names, as execution prices it from the market-data stream.
            quote = Quote(
                id=f"q-{order.id}", ts_event=order.quote_ts, ts_init=order.quote_ts, symbol=order.symbol,
                bid=order.quote_bid, ask=order.quote_ask,
            )  # fmt: skip
            batch.extend(handlers.on_submit_order(book, bus, order, quote))
            if len(batch) >= _BATCH:
                published += await bus.publish_persistent_many(batch, ack_timeout_s=60)
                batch = []
        if batch:
            published += await bus.publish_persistent_many(batch, ack_timeout_s=60)
        print(f"  published {published:,} events ({fills:,} fills)", flush=True)
    finally:
        await bus.close()


async def _drop_snapshot(url: str) -> None:
    bus = await Bus.connect(url, service="bench", name="bench-restore")
    try:
        await bus.js.purge_stream(SNAPSHOT_STREAM.name, subject=f"snap.{snapshots.name(0, 1)}.>")
    finally:
        await bus.close()


async def _snapshot_bytes(url: str) -> int:
    bus = await Bus.connect(url, service="bench", name="bench-restore")
    try:
        return len(await bus.load_snapshot(snapshots.name(0, 1)) or b"")
    finally:
        await bus.close()


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match, status
    return int(match.group(1)) / 1024


def _restart(service: list[str], url: str, log: Path, max_orders: int | None) -> tuple[float, float, str]:
    """Start the service, wait for it to serve; return seconds to serving, peak RSS in MB, its restore line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RRR_")}
    env.update({"RRR_NATS_URL": url, "RRR_LOG_LEVEL": "INFO", "RRR_EXECUTION_HEARTBEAT_MS": "1000"})
    if max_orders is not None:
        env["RRR_EXECUTION_MAX_ORDERS"] = str(max_orders)
    started = time.monotonic()
    proc = subprocess.Popen(service, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    restored = ""
    try:
        assert proc.stderr is not None
        with log.open("a") as out:
            for line in proc.stderr:
                out.write(line)
                if "restored" in line:
                    restored = line.split(": ", 1)[-1].strip()
                if "serving shard" in line:
                    seconds = time.monotonic() - started
                    rss = _peak_rss_mb(proc.pid)
                    break
            else:
                raise RuntimeError(f"the service exited with {proc.wait()} before serving; see {log}")
            proc.send_signal(signal.SIGTERM)
            rest, _ = proc.communicate(timeout=120)
            out.write(rest or "")
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    return seconds, rss, restored


def main() -> int:
    """Run the benchmark; print one line per case."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--after", type=int, default=10_000, help="fills stored after the snapshot (case after)")
    parser.add_argument("--max-orders", type=int, help="order statuses the service keeps (its --max-orders)")
    parser.add_argument("--before", help="command of another build of rrr-execution, run first (case before)")
    parser.add_argument("--cases", default="empty,history,snapshot,after")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = args.cases.split(",")
    if args.before:
        cases.insert(cases.index("empty") + 1 if "empty" in cases else 0, "before")
    service = [str(Path(sys.executable).with_name("rrr-execution"))]
    with tempfile.TemporaryDirectory(prefix="rrr-bench-restore-") as tmp:
        server = NatsServer(data_dir=Path(tmp) / "nats")
        server.start()
        log = Path(tmp) / "execution.log"
        try:
            history = False
            fills = args.fills
            for case in cases:
                if case != "empty" and not history:
                    print(f"history: {args.fills:,} fills over {args.symbols} symbols", flush=True)
                    asyncio.run(_history(server.url, 0, args.fills, args.symbols))
                    history = True
                runs = []
                for _ in range(args.repeats):
                    if case == "history":
                        asyncio.run(_drop_snapshot(server.url))
                    elif case == "after":
                        asyncio.run(_history(server.url, fills, args.after, args.symbols))
                        fills += args.after
                    command = args.before.split() if case == "before" else service
                    runs.append(_restart(command, server.url, log, args.max_orders))
                seconds = statistics.median(run[0] for run in runs)
                rss = max(run[1] for run in runs)
                times = ", ".join(f"{run[0]:.2f}" for run in runs)
                print(f"  {case:9} {seconds:7.2f} s to serving ({times}), peak RSS {rss:7.1f} MB", flush=True)
                print(f"            {runs[-1][2]}", flush=True)
            if "snapshot" in cases or "after" in cases:
                print(f"snapshot: {asyncio.run(_snapshot_bytes(server.url)):,} bytes", flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
