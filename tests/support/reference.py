"""An independent, deliberately plain reference of what the system must compute from quotes.

Written from the definitions alone (README: strategy, execution), with no code shared with the services, so
that a test comparing the two catches a mistake in either. ``sma_means`` and ``sma_cross`` take whatever
number type they are given: ``fractions.Fraction`` for the exact answer, ``float`` to show what binary
floating point would get wrong. ``sma_cross_expectations`` is the exact answer for a whole quote file.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Generic, TypeVar

N = TypeVar("N", Fraction, float)


def sma_means(mids: Iterable[N], fast: int = 5, slow: int = 20) -> Iterator[tuple[N, N] | None]:
    """Yield the (fast, slow) means at each mid: plain means of the last ``fast`` and ``slow`` mids.

    None until ``slow`` mids were seen, when the slow mean is not defined yet.
    """
    window: deque[N] = deque(maxlen=slow)
    for mid in mids:
        window.append(mid)
        yield _means(window, fast, slow)


@dataclass(frozen=True, slots=True)
class Cross(Generic[N]):
    """A cross of the fast mean through the slow one, and the order it implies."""

    index: int  # 0-based position of the triggering quote
    direction: str  # "up" or "down"
    fast: N  # the means at the triggering quote
    slow: N
    target: Fraction  # the position wanted from this quote on
    order_qty: Fraction  # the change of target, signed: what the order buys (> 0) or sells (< 0); 0 for none
    bid: N  # the triggering quote
    ask: N

    @property
    def side(self) -> str:
        """The order's side (meaningless when ``order_qty`` is 0)."""
        return "buy" if self.order_qty > 0 else "sell"


def sma_cross(
    quotes: Iterable[tuple[N, N]], fast: int = 5, slow: int = 20, qty: Fraction = Fraction(1)
) -> Iterator[Cross[N]]:
    """Yield every cross of ``sma_cross`` over ``(bid, ask)`` quotes, one quote at a time, by the letter.

    mid = (bid + ask) / 2. A cross up happens at a quote where both means were defined at the previous
    quote, fast <= slow there and fast > slow now; a cross down mirrors it. A cross up sets the target
    position to +qty, a cross down to -qty; the order is the change of target.
    """
    window: deque[N] = deque(maxlen=slow)
    prev: tuple[N, N] | None = None
    target = Fraction(0)
    for index, (bid, ask) in enumerate(quotes):
        window.append((bid + ask) / 2)
        now = _means(window, fast, slow)
        if prev is not None and now is not None:
            direction = None
            if prev[0] <= prev[1] and now[0] > now[1]:
                direction, new_target = "up", qty
            elif prev[0] >= prev[1] and now[0] < now[1]:
                direction, new_target = "down", -qty
            if direction is not None:
                yield Cross(index, direction, now[0], now[1], new_target, new_target - target, bid, ask)
                target = new_target
        prev = now


def _means(window: Sequence[N], fast: int, slow: int) -> tuple[N, N] | None:
    if len(window) < slow:
        return None
    mids = list(window)[-slow:]
    return _mean(mids[-fast:]), _mean(mids)


def _mean(values: Sequence[N]) -> N:
    # Starting from the first value keeps the values' type (sum()'s 0 would not), in the same order of additions.
    return sum(values[1:], values[0]) / len(values)


@dataclass(frozen=True, slots=True)
class ExpectedOrder:
    """An order the strategy must send and the fill the paper venue must give it."""

    line: int  # physical line of the triggering quote in the file
    side: str
    qty: Fraction
    price: Fraction
    # Refused by execution's pre-trade risk: no fill.
    rejected: bool = False


@dataclass(slots=True)
class ExpectedPosition:
    """Average-cost position after all fills."""

    qty: Fraction = Fraction(0)
    avg_price: Fraction = Fraction(0)
    realized_pnl: Fraction = Fraction(0)
    fills: int = 0


@dataclass(slots=True)
class Expected:
    """Everything a replay of one single-symbol file must produce."""

    quotes: int = 0
    crosses: int = 0
    quote_lines: list[int] = field(default_factory=list)
    cross_lines: list[int] = field(default_factory=list)
    orders: list[ExpectedOrder] = field(default_factory=list)
    position: ExpectedPosition = field(default_factory=ExpectedPosition)


def sma_cross_expectations(path: Path, fast: int = 5, slow: int = 20, qty: Fraction = Fraction(1)) -> Expected:
    """Crosses, orders, fills and the final position for ``sma_cross`` on a one-symbol quote file.

    Each order fills whole at the triggering quote's touch: the ask for a buy, the bid for a sell.
    """
    expected = Expected()
    for cross in sma_cross(_quotes(path, expected.quote_lines), fast, slow, qty):
        line = expected.quote_lines[cross.index]
        expected.crosses += 1
        expected.cross_lines.append(line)
        if cross.order_qty:
            price = cross.ask if cross.side == "buy" else cross.bid
            expected.orders.append(ExpectedOrder(line, cross.side, abs(cross.order_qty), price))
            _apply(expected.position, cross.order_qty, price)
    expected.quotes = len(expected.quote_lines)
    return expected


def _quotes(path: Path, lines: list[int]) -> Iterator[tuple[Fraction, Fraction]]:
    """The file's (bid, ask) in exact fractions, appending each quote's physical line to ``lines``."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            lines.append(reader.line_num)
            yield Fraction(row["bid"]), Fraction(row["ask"])


def _apply(position: ExpectedPosition, signed_qty: Fraction, price: Fraction) -> None:
    position.fills += 1
    old = position.qty
    new = old + signed_qty
    if old == 0 or (old > 0) == (signed_qty > 0):
        position.avg_price = (position.avg_price * abs(old) + price * abs(signed_qty)) / abs(new)
    else:
        closed = min(abs(old), abs(signed_qty))
        position.realized_pnl += (price - position.avg_price) * closed * (1 if old > 0 else -1)
        if new == 0:
            position.avg_price = Fraction(0)
        elif (new > 0) != (old > 0):
            position.avg_price = price
    position.qty = new


def _timed_quotes(path: Path, lines: list[int]) -> Iterator[tuple[int, Fraction, Fraction]]:
    """The file's (ts in ns, bid, ask), exactly, appending each quote's physical line to ``lines``."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            lines.append(reader.line_num)
            delta = datetime.fromisoformat(row["ts"]) - epoch
            ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
            yield ns, Fraction(row["bid"]), Fraction(row["ask"])


def timed_momentum_expectations(path: Path, every_ms: int = 60_000, qty: Fraction = Fraction(1)) -> Expected:
    """What ``tests.support.strategies.TimedMomentum`` must send and get filled on a one-symbol file.

    From its definition: the first quote sets the anchor mid and a look ``every_ms`` later. At the first quote
    at or after a look's time: a mid above the anchor wants +qty, below it -qty, equal: nothing; the order
    (and its signal) is the wanted position minus the position held; the anchor becomes this mid and the
    next look is ``every_ms`` after this quote. Each order fills whole at its quote's touch.
    """
    expected = Expected()
    anchor: Fraction | None = None
    look_at = 0
    held = Fraction(0)
    for index, (ts, bid, ask) in enumerate(_timed_quotes(path, expected.quote_lines)):
        mid = (bid + ask) / 2
        if anchor is None:
            anchor, look_at = mid, ts + every_ms * 1_000_000
            continue
        if ts < look_at:
            continue
        look_at = ts + every_ms * 1_000_000
        if mid != anchor:
            wanted = qty if mid > anchor else -qty
            change = wanted - held
            if change:
                line = expected.quote_lines[index]
                side = "buy" if change > 0 else "sell"
                price = ask if side == "buy" else bid
                expected.crosses += 1
                expected.cross_lines.append(line)
                expected.orders.append(ExpectedOrder(line, side, abs(change), price))
                _apply(expected.position, change, price)
                held = wanted
        anchor = mid
    expected.quotes = len(expected.quote_lines)
    return expected


def follows_fills_expectations(
    path: Path, every: int = 25, qty: Fraction = Fraction(1), big: Fraction = Fraction(5000), max_qty: int = 1000
) -> Expected:
    """What ``tests.support.strategies.FollowsFills`` must send on a one-symbol file, and what execution does.

    From its definition: at every ``every``-th quote an order, a sell if the position is long, else a buy; the
    third, sixth ... ask for ``big``. An order above ``max_qty`` (execution's default limit) is rejected and
    leaves the position; the others fill whole at the quote's touch.
    """
    expected = Expected()
    held = Fraction(0)
    orders = 0
    for index, (bid, ask) in enumerate(_quotes(path, expected.quote_lines)):
        if (index + 1) % every:
            continue
        side = "sell" if held > 0 else "buy"
        size = big if orders % 3 == 2 else qty
        orders += 1
        line = expected.quote_lines[index]
        expected.crosses += 1
        expected.cross_lines.append(line)
        price = ask if side == "buy" else bid
        rejected = size > max_qty
        expected.orders.append(ExpectedOrder(line, side, size, price, rejected=rejected))
        if not rejected:
            signed = size if side == "buy" else -size
            _apply(expected.position, signed, price)
            held += signed
    expected.quotes = len(expected.quote_lines)
    return expected


def mean_reversion_targets(
    mids: Iterable[Fraction], window: int, entry: Fraction, exit_: Fraction, qty: Fraction = Fraction(1)
) -> Iterator[tuple[int, Fraction]]:
    """Yield (index, new target) at every change of ``mean_reversion``'s target, from its definition.

    Over the last ``window`` mids: mean, population variance, z = (mid - mean) / sqrt(variance) (none when
    the variance is 0). z >= entry: -qty; z <= -entry: +qty; short and z <= exit, or long and z >= -exit: 0.
    z is compared through z**2 = (mid - mean)**2 / variance and its sign, as exact fractions.
    """

    def at_least(dev: Fraction, var: Fraction, k: Fraction) -> bool:  # z >= k
        z_sq = dev * dev / var
        if k >= 0:
            return dev >= 0 and z_sq >= k * k
        return dev >= 0 or z_sq <= k * k

    def at_most(dev: Fraction, var: Fraction, k: Fraction) -> bool:  # z <= k
        return not at_least(dev, var, k) or (dev * dev / var == k * k and (dev >= 0) == (k >= 0))

    recent: deque[Fraction] = deque(maxlen=window)
    target = Fraction(0)
    for index, mid in enumerate(mids):
        recent.append(mid)
        if len(recent) < window:
            continue
        mean = sum(recent, Fraction(0)) / window
        var = sum(((m - mean) ** 2 for m in recent), Fraction(0)) / window
        if var == 0:
            continue
        dev = mid - mean
        if at_least(dev, var, entry):
            new = -qty
        elif at_most(dev, var, -entry):
            new = qty
        elif (target < 0 and at_most(dev, var, exit_)) or (target > 0 and at_least(dev, var, -exit_)):
            new = Fraction(0)
        else:
            continue
        if new != target:
            target = new
            yield index, new


# -- RestsLimits: resting orders, moved and canceled (tests.support.strategies.RestsLimits) ------------------------


@dataclass(frozen=True, slots=True)
class RefQuoteRow:
    """One quote of a file: its line, time, prices and displayed sizes (None: the file has none)."""

    line: int
    ts: int
    bid: Fraction
    ask: Fraction
    bid_size: Fraction | None
    ask_size: Fraction | None


@dataclass(slots=True)
class _Resting:
    """An order the reference venue holds."""

    line: int  # of the quote it was sent at: its id
    side: str
    qty: Fraction
    kind: str  # limit or stop_market
    limit: Fraction | None
    stop: Fraction | None
    post_only: bool
    reduce_only: bool
    seen: int  # index of the last quote it saw
    filled: Fraction = Fraction(0)
    fills: int = 0
    triggered: bool = False
    arriving: bool = False


@dataclass(frozen=True, slots=True)
class RefRestingFill:
    """A fill: the order (by the line it was sent at), its number, the quote it was made at (line), how much, at
    what price and fee, and whether the order rested (maker) or took (taker)."""

    order: int
    number: int
    at: int
    qty: Fraction
    price: Fraction
    fee: Fraction
    liquidity: str


@dataclass(slots=True)
class RestsExpected:
    """What RestsLimits must send over a one-symbol file, and what the venue's rules do with it."""

    # (line, side, qty, kind, limit, stop, post_only, reduce_only)
    orders: list[tuple[int, str, Fraction, str, Fraction | None, Fraction | None, bool, bool]] = field(
        default_factory=list
    )
    # (line sent at, order line)
    cancels: list[tuple[int, int]] = field(default_factory=list)
    # (line sent at, order line, new limit)
    replaces: list[tuple[int, int, Fraction]] = field(default_factory=list)
    fills: list[RefRestingFill] = field(default_factory=list)
    # order line -> how it ended: filled, canceled (by request), reduce-only (canceled by the venue), or open
    ends: dict[int, str] = field(default_factory=dict)
    triggered: list[int] = field(default_factory=list)
    position: ExpectedPosition = field(default_factory=ExpectedPosition)


def _decimal(value: Fraction) -> Decimal:
    """A price or size of a file (a finite decimal) as the Decimal it was written as."""
    return Decimal(value.numerator) / Decimal(value.denominator)


def quote_rows(path: Path) -> list[RefQuoteRow]:
    """The file's quotes, exactly, read here with ``csv`` (sizes when the file has them)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rows = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            delta = datetime.fromisoformat(row["ts"]) - epoch
            ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
            sizes = [Fraction(row[k]) if row.get(k) else None for k in ("bid_size", "ask_size")]
            rows.append(RefQuoteRow(reader.line_num, ns, Fraction(row["bid"]), Fraction(row["ask"]), *sizes))
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(rows)), "the reference assumes time order"
    return rows


def rests_limits_expectations(
    path: Path,
    *,
    qty: Fraction,
    tick: Fraction,
    below: int,
    chase: int,
    take: int,
    stop: int,
    max_age: int,
    fee_bps: Fraction = Fraction(0),
    slippage_bps: Fraction = Fraction(0),
) -> RestsExpected:
    """What ``RestsLimits`` must do over a one-symbol file, and what the paper venue's rules (README, Orders) make of
    it, written from the rules alone: at each quote the resting orders are matched first (in the order they were
    placed, each on its own), then the strategy decides on what it knows (its fills and open orders up to and at
    this quote), then its cancels, replaces and order take effect in the order sent, before the next quote."""
    expected = RestsExpected()
    quotes = quote_rows(path)
    # Fees and slippage are figured as the paper venue always figured them: in Decimal, at its default 28
    # significant digits (a fee of a size with float artefacts rounds there).
    slip, fee_rate = (
        Decimal(slippage_bps.numerator) / slippage_bps.denominator,
        Decimal(fee_bps.numerator) / fee_bps.denominator,
    )

    def taker(side: str, price: Fraction) -> Fraction:
        touch = _decimal(price)
        return Fraction(touch + (1 if side == "buy" else -1) * touch * slip / 10_000) if slip else price

    def fee_of(price: Fraction, amount: Fraction) -> Fraction:
        return Fraction(_decimal(price) * _decimal(amount) * fee_rate / 10_000) if fee_rate else Fraction(0)

    book: list[_Resting] = []  # placement order
    ages: dict[int, int] = {}
    exits = 0
    pos = expected.position

    def net() -> Fraction:
        return pos.qty

    def reducible(order: _Resting) -> Fraction:
        held = net()
        if order.side == "sell":
            return held if held > 0 else Fraction(0)
        return -held if held < 0 else Fraction(0)

    def touch(order: _Resting, q: RefQuoteRow) -> tuple[Fraction, Fraction | None]:
        return (q.ask, q.ask_size) if order.side == "buy" else (q.bid, q.bid_size)

    def reaches(side: str, limit: Fraction, q: RefQuoteRow) -> bool:
        return q.ask <= limit if side == "buy" else q.bid >= limit

    def fill(order: _Resting, amount: Fraction, price: Fraction, q: RefQuoteRow, liquidity: str) -> None:
        order.filled += amount
        order.fills += 1
        fee = fee_of(price, amount)
        expected.fills.append(RefRestingFill(order.line, order.fills, q.line, amount, price, fee, liquidity))
        _apply(pos, amount if order.side == "buy" else -amount, price)
        pos.realized_pnl -= fee
        if order.filled == order.qty:
            book.remove(order)
            expected.ends[order.line] = "filled"

    def end(order: _Resting, how: str) -> None:
        book.remove(order)
        expected.ends[order.line] = how

    def arrive(order: _Resting, q: RefQuoteRow) -> None:
        """Its first chance to trade (placed, replaced, or a stop not triggered yet)."""
        if order.kind == "stop_market" and not order.triggered:
            price, _ = touch(order, q)
            assert order.stop is not None
            if not (price >= order.stop if order.side == "buy" else price <= order.stop):
                return
            order.triggered = True
            expected.triggered.append(order.line)
        price, size = touch(order, q)
        left = order.qty - order.filled
        if order.kind == "stop_market":
            amount = left
        else:
            assert order.limit is not None
            if not reaches(order.side, order.limit, q):
                return
            amount = left if size is None else min(left, size)
        if order.reduce_only:
            amount = min(amount, reducible(order))
        paid = taker(order.side, price)
        if order.limit is not None:
            paid = min(paid, order.limit) if order.side == "buy" else max(paid, order.limit)
        if amount > 0:
            fill(order, amount, paid, q, "taker")
        if order in book and order.reduce_only and reducible(order) == 0:
            end(order, "reduce-only")

    def rest(order: _Resting, q: RefQuoteRow) -> None:
        """A resting limit at a later quote: at its limit, up to the displayed size."""
        assert order.limit is not None
        if not reaches(order.side, order.limit, q):
            return
        _, size = touch(order, q)
        left = order.qty - order.filled
        amount = left if size is None else min(left, size)
        if order.reduce_only:
            amount = min(amount, reducible(order))
            if amount == 0:
                end(order, "reduce-only")
                return
        if amount == 0:
            return
        fill(order, amount, order.limit, q, "maker")
        if order in book and order.reduce_only and reducible(order) == 0:
            end(order, "reduce-only")

    for index, q in enumerate(quotes):
        # 1. The venue: every order placed before this quote sees it, in the order they were placed (a copy of the
        # book: a filled order leaves it).
        for order in book[:]:
            if order not in book or order.seen >= index:
                continue
            order.seen = index
            if (order.kind == "stop_market" and not order.triggered) or order.arriving:
                order.arriving = False
                arrive(order, q)
            else:
                rest(order, q)
        # 2. The strategy, on what it knows: its open orders (in the order sent) and position.
        mid_ticks = (q.bid + q.ask) / 2 / tick
        ages = {line: age for line, age in ages.items() if any(o.line == line for o in book)}
        canceled: list[_Resting] = []
        for order in book:
            ages[order.line] = ages.get(order.line, 0) + 1
            if ages[order.line] >= max_age:
                expected.cancels.append((q.line, order.line))
                canceled.append(order)
        buys = [o for o in book if o.side == "buy"]
        moved: list[tuple[_Resting, Fraction]] = []
        for order in buys:
            assert order.limit is not None
            if order not in canceled and mid_ticks - order.limit / tick > below + chase:
                new_limit = (math.floor(mid_ticks) - below) * tick
                expected.replaces.append((q.line, order.line, new_limit))
                moved.append((order, new_limit))
        placed: _Resting | None = None
        if pos.qty > 0 and not any(o.side == "sell" for o in book):
            exits += 1
            if exits % 2:
                limit = (math.ceil(mid_ticks) + take) * tick
                placed = _Resting(q.line, "sell", qty, "limit", limit, None, False, True, index)
            else:
                stop_at = (math.floor(mid_ticks) - stop) * tick
                placed = _Resting(q.line, "sell", qty, "stop_market", None, stop_at, False, True, index)
        elif pos.qty == 0 and not buys:
            limit = (math.floor(mid_ticks) - below) * tick
            placed = _Resting(q.line, "buy", qty, "limit", limit, None, True, False, index)
        # 3. Its commands, in the order sent: cancels, replaces, then its order, each after the matching above.
        for order in canceled:
            end(order, "canceled")
        for order, new_limit in moved:
            # Post-only: refused if it would take at this quote (never, a tick or more under the mid).
            assert not reaches(order.side, new_limit, q)
            order.limit = new_limit
            order.arriving = not order.post_only
        if placed is not None:
            expected.orders.append(
                (placed.line, placed.side, placed.qty, placed.kind, placed.limit, placed.stop, placed.post_only,
                 placed.reduce_only)
            )  # fmt: skip
            if placed.reduce_only and reducible(placed) == 0:
                raise AssertionError("the strategy sends a reduce-only sell only when long")
            assert not (placed.post_only and placed.limit is not None and reaches(placed.side, placed.limit, q))
            book.append(placed)
            arrive(placed, q)
    for order in book:
        expected.ends[order.line] = "open"
    return expected
