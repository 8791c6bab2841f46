"""What pricing orders from the market-data stream costs execution: one JetStream read per order.

    python bench/venue_price.py [--quotes 10000] [--orders 2560] [--repeats 7]

Against a real nats-server (started from the embedded binary in a temporary directory, with the
system's users; execution's own user does the reads), with ``--quotes`` quotes of 10 symbols in
``RRR_MD``, measures:

1. Batched: ``rrr.execution.market.prices`` on batches of 256 orders (execution's default batch), each
   naming a random quote: the reads of a batch are in flight together. Reported per order.
2. Alone: ``rrr.execution.market.price`` for one order at a time, waiting for each: an order arriving
   by itself, as in live trading. Reported per order.
3. The rest of execution's work per order, for scale: ``on_submit_order`` (risk, state machine, venue,
   position, encoding its three events), in process, on the same orders.

Median of ``--repeats`` runs of all of ``--orders``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from rrr.deploy.nats_permissions import new_users
from rrr.deploy.nats_server import NatsEndpoint, NatsServer
from rrr.execution import handlers
from rrr.execution.market import price, prices
from rrr.execution.orders import Orders
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.risk import RiskLimits
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import Quote, SubmitOrder

SYMBOLS = [f"SYM{i}" for i in range(10)]
BATCH = 256


async def _setup(admin: Bus, quotes: int) -> list[tuple[int, Quote]]:
    await admin.ensure_streams(max_age_s=3600)
    stored: list[tuple[int, Quote]] = []
    for start in range(0, quotes, 1000):
        batch = []
        for i in range(start, min(start + 1000, quotes)):
            bid = Decimal(100) + Decimal(i % 97) / 100
            symbol = SYMBOLS[i % len(SYMBOLS)]
            quote = Quote(id=f"q{i}", ts_event=i + 1, ts_init=i + 1, symbol=symbol, bid=bid, ask=bid + Decimal("0.01"))
            batch.append(quote)
        acks = await asyncio.gather(*(admin.publish_persistent(subjects.quote(q.symbol, 1), q) for q in batch))
        stored.extend((ack.seq, q) for ack, q in zip(acks, batch, strict=True))
    return stored


def _orders(stored: list[tuple[int, Quote]], n: int, rng: random.Random) -> list[SubmitOrder]:
    out = []
    for i in range(n):
        seq, quote = rng.choice(stored)
        out.append(
            SubmitOrder(
                id=f"o{i}", ts_event=quote.ts_event, ts_init=1, strategy=f"b{i}", symbol=quote.symbol,
                side="buy" if i % 2 else "sell", qty=Decimal(1), quote_ts=quote.ts_event, quote_bid=quote.bid,
                quote_ask=quote.ask, quote_seq=seq,
            )
        )  # fmt: skip
    return out


async def _run(quotes: int, n: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(data_dir=Path(tmp) / "nats", users=new_users())
        server.start()
        endpoint = NatsEndpoint.of(server)
        try:
            admin = await Bus.connect(endpoint.url, service="bench", name="bench-admin", timeout_s=10)
            bus = await Bus.connect(endpoint.url_for("execution"), service="execution", name="bench", timeout_s=10)
            try:
                stored = await _setup(admin, quotes)
                orders = _orders(stored, n, random.Random(7))
                batched, alone, work = [], [], []
                for _ in range(repeats + 1):  # the first run warms up, unrecorded
                    t0 = time.perf_counter()
                    found = {}
                    for start in range(0, n, BATCH):
                        found.update(await prices(bus, orders[start : start + BATCH], 1))
                    t1 = time.perf_counter()
                    for order in orders:
                        await price(bus, order, 1)
                    t2 = time.perf_counter()
                    book = handlers.Book(
                        limits=RiskLimits(max_order_qty=Decimal(10), max_notional_quote=Decimal(10**9)),
                        venue=PaperVenue(),
                        shards=1,
                        orders=Orders(),
                    )
                    for order in orders:
                        handlers.on_submit_order(book, bus, order, found[order.id])
                    t3 = time.perf_counter()
                    assert book.counters.orders_filled == n
                    batched.append((t1 - t0) / n)
                    alone.append((t2 - t1) / n)
                    work.append((t3 - t2) / n)
                b, a, w = (statistics.median(x[1:]) * 1e6 for x in (batched, alone, work))
                print(f"{quotes} quotes in RRR_MD, {n} orders, median of {repeats} runs")
                print(f"price read per order, batches of {BATCH}: {b:8.1f} us")
                print(f"price read per order, one at a time:   {a:8.1f} us")
                print(f"the rest of execution's work per order: {w:8.1f} us (on_submit_order, in process)")
            finally:
                await bus.close()
                await admin.close()
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quotes", type=int, default=10_000)
    parser.add_argument("--orders", type=int, default=10 * BATCH)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(_run(args.quotes, args.orders, args.repeats))


if __name__ == "__main__":
    main()
