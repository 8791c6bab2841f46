"""What exactly-once at any distance in time costs: the event-time watermarks' memory and time.

    python bench/dedup.py [--symbols 100000] [--quotes 1000000] [--repeats 7]

Measures, in one process on one core:

1. Memory: ``--symbols`` watermarks as the strategy holds them (one per symbol, each with the id of the
   last quote applied), by tracemalloc, and their encoded size in the strategy's snapshot (msgpack).
2. Time: the check and the update done for every quote (``seen`` then ``advance``), over ``--quotes``
   quotes spread over 100 symbols, against the work the strategy does for every quote anyway
   (``SmaCross.on_decimal_quote``: the Decimal prices to fixed-point units, then exact integer arithmetic)
   on the same quotes. Median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from decimal import Decimal

import msgspec

from rrr.shared.watermark import Watermark
from rrr.strategy.sma_cross import SmaCross, SmaCrossParams


def _memory(symbols: int) -> tuple[float, float]:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    marks: dict[str, Watermark] = {}
    for i in range(symbols):
        mark = marks[f"SYM{i:06d}"] = Watermark()
        mark.advance(1_577_836_800_000_000_000 + i, f"fb430db0ae3a2c6c1:{i + 2}")
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    encoded = len(msgspec.msgpack.encode(marks))
    return used / symbols, encoded / symbols


def _time_per_quote(quotes: int, repeats: int) -> tuple[float, float]:
    symbols = [f"SYM{i:03d}" for i in range(100)]
    ids = [f"fb430db0ae3a2c6c1:{i + 2}" for i in range(quotes)]
    bid, ask = Decimal("1.12131"), Decimal("1.12135")
    mark_runs, sma_runs = [], []
    for _ in range(repeats):
        marks = {s: Watermark() for s in symbols}
        started = time.perf_counter()
        for i in range(quotes):
            mark = marks[symbols[i % 100]]
            if not mark.seen(i, ids[i]):
                mark.advance(i, ids[i])
        mark_runs.append((time.perf_counter() - started) / quotes)
        books = {s: SmaCross(SmaCrossParams()) for s in symbols}
        started = time.perf_counter()
        for i in range(quotes):
            books[symbols[i % 100]].on_decimal_quote(bid, ask + Decimal(i % 7) / 100000)
        sma_runs.append((time.perf_counter() - started) / quotes)
    return statistics.median(mark_runs), statistics.median(sma_runs)


def main() -> int:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=100_000)
    parser.add_argument("--quotes", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    per_symbol, encoded = _memory(args.symbols)
    mark_s, sma_s = _time_per_quote(args.quotes, args.repeats)
    print(f"watermark memory: {per_symbol:.0f} bytes per symbol in the process ({args.symbols:,} symbols)")
    print(f"watermark in the snapshot: {encoded:.0f} bytes per symbol (msgpack)")
    print(f"check + update per quote: {mark_s * 1e9:.0f} ns (median of {args.repeats} x {args.quotes:,} quotes)")
    print(f"sma_cross per quote, for scale: {sma_s * 1e9:.0f} ns ({mark_s / sma_s:.1%} of it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
