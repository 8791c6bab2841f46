"""What ``sma_cross`` costs per quote: exact Decimal arithmetic against exact fixed-point integers.

    python bench/strategy_cost.py [--passes 10] [--repeats 5]

One process, no I/O. The quotes are the EUR/USD sample (tests/data, 9,500 quotes of one symbol), read and
converted before any clock starts. Three ways of feeding them to ``sma_cross(5, 20, qty 1)``:

1. ``decimal``: ``DecimalSmaCross.on_quote(bid, ask)`` on Decimal prices, the implementation before prices
   were fixed-point (kept below, unchanged, for this comparison only): sums in a 100-digit trapping context.
2. ``units``: ``SmaCross.on_quote(bid_units, ask_units, places)`` on integer prices, as a fixed-point wire
   format delivers them.
3. ``decimal -> units``: ``SmaCross.on_decimal_quote(bid, ask)``, Decimal prices converted by
   ``rrr.shared.fixed.to_units`` and then the integer path: what the service pays while quotes carry Decimals.

And two ways that include everything the service does per quote but the bus (watermark, messages built):

4. ``handler (before the API)``: the service's quote handler as it was before strategies were plug-ins (kept
   below): the symbol's watermark, ``SmaCross.on_quote`` called directly, the Signal and SubmitOrder built.
5. ``api engine``: ``rrr.strategy.engine.Engine.on_row`` running the ``sma_cross`` built-in through the strategy
   API (``SmaCrossStrategy``, its context building the same messages): what the service runs now.

The difference between 4 and 5 is the API's own cost per quote.

Each repeat times ``--passes`` passes over the whole file per way, every pass with a fresh state (one symbol
from its first quote), the ways alternating which goes first; one warm-up repeat is not recorded. The
figure is the median over ``--repeats`` repeats of the time per quote. Before timing, the three ways are
checked to make exactly the same crosses (direction, shown means, target and order) on the file.
"""

from __future__ import annotations

import argparse
import csv
import decimal
import gc
import os
import platform
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

from rrr.shared.fixed import to_decimal, to_units
from rrr.shared.messages import QuoteRow, Signal, SubmitOrder
from rrr.shared.watermark import Watermark
from rrr.strategy import loading
from rrr.strategy.engine import Engine
from rrr.strategy.sma_cross import Cross, SmaCross, SmaCrossParams

EURUSD = Path(__file__).parents[1] / "tests" / "data" / "eurusd_quotes_2020-01-01.csv"


# -- the Decimal implementation before fixed-point prices (rrr.strategy.sma_cross at 5d417c3) -----------------

_EXACT = decimal.Context(prec=100, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
_DISPLAY = Decimal("1e-10")


@dataclass(frozen=True, slots=True)
class DecimalCross:
    """A crossing as the Decimal implementation returned it."""

    direction: Literal["up", "down"]
    fast: Decimal
    slow: Decimal
    target: Decimal
    order_qty: Decimal


class DecimalSmaCross:
    """``sma_cross`` for one symbol on Decimal prices, as it was: the baseline of this benchmark."""

    def __init__(self, params: SmaCrossParams) -> None:
        self.params = params
        self._window: deque[Decimal] = deque(maxlen=params.slow)
        self._sum_fast = Decimal(0)
        self._sum_slow = Decimal(0)
        self._prev_relation: int | None = None
        self.target = Decimal(0)
        self.quotes_seen = 0

    def on_quote(self, bid: Decimal, ask: Decimal) -> DecimalCross | None:
        p = self.params
        ctx = _EXACT
        window = self._window
        mid2 = ctx.add(bid, ask)
        sum_slow = ctx.add(ctx.subtract(self._sum_slow, window[0]) if len(window) == p.slow else self._sum_slow, mid2)
        sum_fast = ctx.add(
            ctx.subtract(self._sum_fast, window[-p.fast]) if len(window) >= p.fast else self._sum_fast, mid2
        )
        diff = None
        if len(window) + 1 >= p.slow:
            diff = ctx.subtract(ctx.multiply(sum_fast, p.slow), ctx.multiply(sum_slow, p.fast))

        window.append(mid2)
        self._sum_slow, self._sum_fast = sum_slow, sum_fast
        self.quotes_seen += 1
        if diff is None:
            return None
        relation = (diff > 0) - (diff < 0)
        prev, self._prev_relation = self._prev_relation, relation
        if prev is None:
            return None
        if prev <= 0 < relation:
            direction: Literal["up", "down"] = "up"
            new_target = p.qty
        elif prev >= 0 > relation:
            direction = "down"
            new_target = -p.qty
        else:
            return None
        order_qty = new_target - self.target
        self.target = new_target
        return DecimalCross(
            direction=direction,
            fast=(self._sum_fast / (2 * p.fast)).quantize(_DISPLAY),
            slow=(self._sum_slow / (2 * p.slow)).quantize(_DISPLAY),
            target=new_target,
            order_qty=order_qty,
        )


# -- the service's quote handler before the strategy API (rrr.strategy.handlers.on_row at 9ceff0d, minus the bus)


def _handler_before_api(
    books: dict[str, SmaCross], marks: dict[str, Watermark], params: SmaCrossParams, row: QuoteRow, seq: int
) -> list[Signal | SubmitOrder]:
    symbol = row.symbol
    mark = marks.get(symbol)
    if mark is None:
        mark = marks[symbol] = Watermark()
    if mark.seen(row.ts_event, row.id):
        return []
    book = books.get(symbol)
    if book is None:
        book = books[symbol] = SmaCross(params)
    cross = book.on_quote(row.bid, row.ask, row.places)
    mark.advance(row.ts_event, row.id)
    if cross is None:
        return []
    now = 0
    out: list[Signal | SubmitOrder] = [
        Signal(id=f"sma_cross:{row.id}", ts_event=row.ts_event, ts_init=now, strategy="sma_cross", symbol=symbol,
               quote_id=row.id, direction=cross.direction, fast=cross.fast, slow=cross.slow, target=cross.target)
    ]  # fmt: skip
    if cross.order_qty:
        out.append(
            SubmitOrder(id=f"sma_cross-{row.id}", ts_event=row.ts_event, ts_init=now, strategy="sma_cross",
                        symbol=symbol, side="buy" if cross.order_qty > 0 else "sell", qty=abs(cross.order_qty),
                        quote_ts=row.ts_event, quote_bid=to_decimal(row.bid, row.places),
                        quote_ask=to_decimal(row.ask, row.places), quote_seq=seq, quote_index=0)
        )  # fmt: skip
    return out


# -- the ways, each one pass over the quotes with a fresh state ---------------------------------------------

# A pass returns, per quote, its cross (None for none), or the messages the quote made (4 and 5).
Pass = Callable[[], Sequence[Cross | DecimalCross | list[Signal | SubmitOrder] | None]]


def _ways(params: SmaCrossParams) -> dict[str, Pass]:
    with EURUSD.open(newline="") as fh:
        decimals = [(Decimal(row["bid"]), Decimal(row["ask"])) for row in csv.DictReader(fh)]
    units = []
    for bid, ask in decimals:
        (bid_units, bid_places), (ask_units, ask_places) = to_units(bid), to_units(ask)
        if bid_places != ask_places:
            raise RuntimeError(f"the sample's bid and ask should have the same places: {bid} {ask}")
        units.append((bid_units, ask_units, bid_places))

    def decimal_pass() -> list[DecimalCross | None]:
        on_quote = DecimalSmaCross(params).on_quote
        return [on_quote(bid, ask) for bid, ask in decimals]

    def units_pass() -> list[Cross | None]:
        on_quote = SmaCross(params).on_quote
        return [on_quote(bid, ask, places) for bid, ask, places in units]

    def converting_pass() -> list[Cross | None]:
        on_quote = SmaCross(params).on_decimal_quote
        return [on_quote(bid, ask) for bid, ask in decimals]

    rows = [QuoteRow(f"q:{i}", "EURUSD", i + 1, bid, ask, places) for i, (bid, ask, places) in enumerate(units)]

    def handler_pass() -> list[list[Signal | SubmitOrder]]:
        books: dict[str, SmaCross] = {}
        marks: dict[str, Watermark] = {}
        return [_handler_before_api(books, marks, params, row, i + 1) for i, row in enumerate(rows)]

    def engine_pass() -> list[list[Signal | SubmitOrder]]:
        spec = loading.spec(
            "sma_cross", "sma_cross", {"fast": params.fast, "slow": params.slow, "qty": str(params.qty)}
        )
        on_row = Engine([spec], clock=lambda: 0).on_row
        return [on_row(row, i + 1, 0) for i, row in enumerate(rows)]

    return {
        "decimal": decimal_pass,
        "units": units_pass,
        "decimal -> units": converting_pass,
        "handler (before the API)": handler_pass,
        "api engine": engine_pass,
    }


def _as_cross(out: list[Signal | SubmitOrder]) -> Cross | None:
    """The cross a quote's messages stand for (to check every way makes the same ones)."""
    if not out:
        return None
    signal = out[0]
    assert isinstance(signal, Signal)
    order_qty = Decimal(0)
    if len(out) > 1:
        order = out[1]
        assert isinstance(order, SubmitOrder)
        order_qty = order.qty if order.side == "buy" else -order.qty
    return Cross(
        direction=signal.direction, fast=signal.fast, slow=signal.slow, target=signal.target, order_qty=order_qty
    )


def _check(ways: dict[str, Pass]) -> int:
    """The number of crosses, after checking that every way makes exactly the same ones."""
    results = {
        name: [
            None if c is None else (c.direction, c.fast, c.slow, c.target, c.order_qty)
            for c in (_as_cross(x) if isinstance(x, list) else x for x in run())
        ]
        for name, run in ways.items()
    }
    first = results["decimal"]
    for name, result in results.items():
        if result != first:
            raise RuntimeError(f"{name} makes other crosses than decimal")
    return sum(cross is not None for cross in first)


def _time(run: Pass, passes: int) -> float:
    gc.collect()
    started = time.perf_counter()
    for _ in range(passes):
        run()
    return time.perf_counter() - started


def measure(ways: dict[str, Pass], quotes: int, passes: int, repeats: int) -> dict[str, list[float]]:
    """Per way, the time per quote in ns of every recorded repeat."""
    names = list(ways)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats + 1):
        order = names if repeat % 2 == 0 else names[::-1]
        times = {name: _time(ways[name], passes) / (passes * quotes) * 1e9 for name in order}
        if repeat == 0:
            continue  # warm-up
        for name, ns in times.items():
            samples[name].append(ns)
        print(f"repeat {repeat}/{repeats}: " + ", ".join(f"{n} {t:.0f} ns" for n, t in times.items()), file=sys.stderr)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    """Print the time per quote of each way."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=10, help="passes over the file per way and repeat")
    parser.add_argument("--repeats", type=int, default=5, help="recorded repeats after one warm-up")
    args = parser.parse_args(argv)
    if args.passes < 1 or args.repeats < 1:
        parser.error("--passes and --repeats must be at least 1")
    ways = _ways(SmaCrossParams())
    quotes = len(ways["decimal"]())
    crosses = _check(ways)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{quotes:,} EUR/USD quotes ({crosses:,} crosses, the same for every way) x {args.passes} passes, "
        f"median of {args.repeats}; Python {platform.python_version()}, {os.cpu_count()} CPUs, load {load}"
    )
    samples = measure(ways, quotes, args.passes, args.repeats)
    baseline = statistics.median(samples["decimal"])
    for name, ns in samples.items():
        median = statistics.median(ns)
        print(f"  {name:<24} {median:6.0f} ns/quote  [{min(ns):.0f}-{max(ns):.0f}]  {baseline / median:4.1f}x decimal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
