"""Execution's own work per order, in process (no servers): what one market order costs beyond the transport.

    python bench/order_cost.py [--orders 20000] [--symbols 100] [--batch 1] [--repeats 5] [--profile]

``rrr.execution.handlers.on_submit_order`` on market orders spread over ``--symbols`` symbols, as the load
harness's ``sma_cross`` sends them: pre-trade risk with the default limits, the state machine, the paper
venue, the exact position and the risk state it moves, and its three events (accepted, filled, position
updated) encoded as they are published (``Bus.prepare``). Prices are of four decimal places, quantities of
one to five units, sides at random, so positions grow, shrink and flip. After every ``--batch`` orders the
risk state is asked whether it changed, as ``on_order_commands`` asks after each batch it handles.

Process CPU time per order (``time.process_time``), so other load on the machine does not count; median of
``--repeats`` runs, the first a warm-up. ``--profile`` prints where the time of one more run goes (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import time
from decimal import Decimal

from rrr.execution import handlers
from rrr.execution.orders import Orders
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.risk import RiskLimits
from rrr.shared.bus import Bus
from rrr.shared.messages import Quote, SubmitOrder


def _orders(n: int, symbols: int, rng: random.Random) -> list[tuple[SubmitOrder, Quote]]:
    names = [f"LD{i:05d}" for i in range(symbols)]
    mids = dict.fromkeys(names, 10_000)  # in ticks of 0.0001, as bench/load.py moves them
    out = []
    for i in range(n):
        symbol = names[rng.randrange(symbols)]
        mid = mids[symbol] = max(mids[symbol] + rng.randint(-5, 5), 100)
        bid, ask = Decimal(mid - 1).scaleb(-4), Decimal(mid + 1).scaleb(-4)
        ts = 1_700_000_000_000_000_000 + i * 100_000
        quote = Quote(id=f"q{i}", ts_event=ts, ts_init=ts, symbol=symbol, bid=bid, ask=ask, bid_size=Decimal(4),
                      ask_size=Decimal(4))  # fmt: skip
        order = SubmitOrder(
            id=f"sma_cross-load:{i}", ts_event=ts, ts_init=ts, strategy="sma_cross", symbol=symbol,
            side=rng.choice(("buy", "sell")), qty=Decimal(rng.randint(1, 5)), quote_ts=ts, quote_bid=bid,
            quote_ask=ask, quote_seq=i + 1,
        )  # fmt: skip
        out.append((order, quote))
    return out


def _run(bus: Bus, orders: list[tuple[SubmitOrder, Quote]], batch: int) -> float:
    book = handlers.Book(
        limits=RiskLimits(max_order_qty=Decimal(1000), max_notional_quote=Decimal(1_000_000)),
        venue=PaperVenue(),
        shards=1,
        orders=Orders(),
    )
    events = 0
    started = time.process_time()
    for i, (order, quote) in enumerate(orders, start=1):
        events += len(handlers.on_submit_order(book, bus, order, quote))
        if i % batch == 0 and book.risk.dirty:
            book.risk_changed.set()
    elapsed = time.process_time() - started
    assert book.counters.orders_filled == len(orders), book.counters
    assert events >= 3 * len(orders)
    return elapsed / len(orders)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1, help="orders per handled batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one more run")
    args = parser.parse_args()
    orders = _orders(args.orders, args.symbols, random.Random(7))
    # Only its encoding is used (Bus.prepare): no connection.
    bus = Bus.__new__(Bus)
    runs = [_run(bus, orders, args.batch) for _ in range(args.repeats + 1)][1:]
    low, mid, high = (value * 1e6 for value in (min(runs), statistics.median(runs), max(runs)))
    print(
        f"{args.orders} market orders over {args.symbols} symbols, batches of {args.batch}: {mid:.1f} us of CPU per "
        f"order (median of {args.repeats}; min {low:.1f}, max {high:.1f})"
    )
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(_run, bus, orders, args.batch)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
