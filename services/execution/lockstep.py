"""The lockstep of closed-loop strategies with execution: a resting order's fills at a point that timing cannot move.

The rule, the same in the service and in the backtest (``rrr.deploy.backtest``), at each quote q of a shard's
market data, in stream order:

1. the venue matches the resting orders at q (fills, triggers, expiries);
2. the strategies handle q: the events of their orders at q reach a closed-loop strategy before its
   ``on_quote(q)``;
3. the commands they sent at q take effect (orders arrive at q's touch, cancels and replaces apply after q
   was matched), and their outcomes reach the strategy right after ``on_quote(q)``, before the next quote.

Execution follows the market data on its own (``rrr.execution.market``); left to itself it would match an
order at q+5 while the cancel the strategy sent at q+1 is still on its way. So the orders of a lockstep strategy
(a ``SubmitOrder`` with ``lockstep``, which every closed-loop strategy sends) are matched only as far as the
strategy says it has handled the quotes. It says so with markers (``StrategyAt`` on ``cmd.order.<shard>._step``),
stored in RRR_CMD after the commands they cover, so execution applies them in that order:

- ``inclusive`` (sent with the commands of quote q): every quote up to and including q was handled, and every
  command for them is in;
- not inclusive (sent before the strategy handles q, when it has orders resting in q's symbol): every quote
  strictly before q was handled.

Per strategy a ``Gate`` keeps the furthest marker applied (``marker``: ``(seq, index, 1)`` through a quote,
``(seq, index, 0)`` before it) and ``through``, the last quote of the shard at which the strategy's orders were
matched (the exact position of a valid quote in RRR_MD). The quote after ``through`` may be matched when the
marker says every quote before it was handled: ``marker >= (*through, 1)``. The matcher never matches a gated
strategy's orders itself (``holds``); ``advance`` does, quote by quote from ``through``, reading the messages
the matcher followed (its ``MarketCopy``, else the stream), after each marker and after each batch of market
data. After applying a marker, and after every advance, execution publishes ``MatchedThrough`` (strategy,
marker, through) on ``evt.order.<shard>._step``, after the events it covers: the strategy reads its events up
to the progress that covers what it waits for (``rrr.strategy.outcomes``).

So a gated order's fills depend on the quotes and on the strategy's commands alone: whatever the speed of the
replay, of the strategy or of the matcher, each cancel lands after the quote it was sent at was matched and
before the next. The price: a strategy with resting orders waits for one round trip to execution before each
quote of their symbols (and after each quote it sends commands at); a strategy that is down leaves its orders
unmatched (the paper venue runs in step with it); a halt still cancels them at once.

Restarts: the gates are in execution's snapshot, and the ``MatchedThrough`` events after it are folded in
(``rrr.execution.restore``); markers handled again are stale (at or behind the gate's) and change nothing; a
strategy sends its markers again under the same ids.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rrr.execution import market
from rrr.execution.market import touch_of
from rrr.execution.matching import At, Report, Touch, WorkingOrder
from rrr.shared import subjects
from rrr.shared.bus import MARKET_DATA_STREAM, Bus, Outgoing
from rrr.shared.errors import RRRError, TransientError
from rrr.shared.messages import MarketData, MatchedThrough, Quote, QuoteBatch, ReplaceOrder, StrategyAt, SubmitOrder

if TYPE_CHECKING:
    from rrr.execution.handlers import Book

_log = logging.getLogger(__name__)

# A marker's position: (seq, index, 1) through a quote, (seq, index, 0) strictly before it.
At3 = tuple[int, int, int]
# Strategies with a gate: bounded, so that markers naming ever new strategies cannot grow execution's state.
MAX_GATES = 10_000
# Messages read back from the stream at once for a gate behind the matcher's copy, and kept for the next steps.
_READ_AHEAD = 4096

# Messages of the market-data stream read for markers and replaces before a batch is handled: subject and
# decoded message (or why it is not a valid one), by sequence.
Prefetched = Mapping[int, tuple[str, MarketData | str]]


class MarkerRefusedError(RRRError):
    """A lockstep marker that cannot be applied: it names no valid quote of the shard at its time, or a strategy
    there is no room for a gate of."""

    def __init__(self, marker_id: str, reason: str) -> None:
        super().__init__(f"lockstep marker {marker_id} refused: {reason}")


@dataclass(slots=True)
class Gate:
    """How far one lockstep strategy's orders may be, and were, matched."""

    marker: At3 = (0, 0, 0)
    through: At = (0, 0)
    # The event time of the newest marker or quote applied: the progress event's.
    ts: int = 0
    # The (marker, through) of the last progress published: an unchanged one is not published again.
    published: tuple[At3, At] | None = None

    def allows_next(self) -> bool:
        """Whether the quote after ``through`` may be matched: the strategy handled every quote before it."""
        through = self.through
        return self.marker >= (through[0], through[1], 1)


class ReadBack:
    """A stretch of the shard's market data read back from the stream, by sequence, in stream order: every message
    of the shard from ``first`` to ``end`` (others' sequences are gaps). Bounded: the oldest go."""

    __slots__ = ("_raw", "end", "first")

    def __init__(self) -> None:
        self._raw: dict[int, tuple[str, bytes]] = {}
        self.first = 0
        self.end = -1

    def covers(self, seq: int) -> bool:
        """Whether every message of the shard at ``seq`` is here (or ``seq`` holds none of it)."""
        return self.first <= seq <= self.end

    async def read(self, bus: Bus, shard: int, seq: int, last: int) -> bool:
        """Read the shard's messages from ``seq`` on (up to ``last``, at most ``_READ_AHEAD`` of them) from the
        stream; False when there is none.

        Raises:
            TransientError: JetStream did not answer.
        """
        if not self.covers(seq - 1):
            self._raw.clear()
            self.first = seq
        read = 0
        async with contextlib.aclosing(market.between(bus, shard, market.MarketCopy(), seq, last)) as stream:
            async for at, subject, data in stream:
                self._raw[at] = (subject, data)
                self.end = at
                read += 1
                if read >= _READ_AHEAD:
                    break
        if read and read < _READ_AHEAD:
            self.end = last  # the shard has nothing more up to ``last``
        while len(self._raw) > 2 * _READ_AHEAD:
            oldest = next(iter(self._raw))
            del self._raw[oldest]
            self.first = oldest + 1
        return read > 0

    def get(self, seq: int) -> tuple[str, bytes] | None:
        """The shard's message at ``seq``, if it is one and is here."""
        return self._raw.get(seq)


@dataclass(slots=True)
class Gates:
    """The gate of every lockstep strategy of the shard."""

    gates: dict[str, Gate] = field(default_factory=dict)
    max_gates: int = MAX_GATES
    # Market data read back from the stream for a strategy behind what the matcher still holds (it ran ahead):
    # kept, so that the next steps read on from there instead of reading the stream again each time.
    behind: ReadBack = field(default_factory=lambda: ReadBack())

    def __len__(self) -> int:
        return len(self.gates)

    def __bool__(self) -> bool:
        return bool(self.gates)

    def __contains__(self, strategy: object) -> bool:
        return strategy in self.gates

    def __iter__(self) -> Iterator[str]:
        return iter(self.gates)

    def get(self, strategy: str) -> Gate | None:
        """The gate of ``strategy``, if it has one."""
        return self.gates.get(strategy)

    def items(self) -> Iterable[tuple[str, Gate]]:
        """Every strategy and its gate."""
        return self.gates.items()

    def holds(self, order: WorkingOrder) -> bool:
        """Whether the matcher leaves ``order`` to its strategy's gate."""
        return order.strategy in self.gates

    def open(self, strategy: str, working: Callable[[], Iterable[WorkingOrder]]) -> Gate | None:
        """The gate of ``strategy``, made if it has none; None when there is no room for one (after letting go of
        gates whose strategies have no order resting)."""
        gate = self.gates.get(strategy)
        if gate is not None:
            return gate
        if len(self.gates) >= self.max_gates:
            resting = {order.strategy for order in working()}
            for name in [name for name in self.gates if name not in resting][: max(1, self.max_gates // 10)]:
                del self.gates[name]
            if len(self.gates) >= self.max_gates:
                return None
        gate = self.gates[strategy] = Gate()
        return gate

    def restore(self, strategy: str, marker: At3, through: At, ts: int) -> None:
        """Take back a gate from a snapshot or a progress event (the furthest of what is held and this)."""
        gate = self.gates.setdefault(strategy, Gate())
        gate.marker = max(gate.marker, marker)
        gate.through = max(gate.through, through)
        gate.ts = max(gate.ts, ts)
        gate.published = (gate.marker, gate.through)


def _progress(book: Book, bus: Bus, strategy: str, gate: Gate, now: int) -> list[Outgoing]:
    """The progress event of ``strategy``, unless the same one went out last."""
    state = (gate.marker, gate.through)
    if gate.published == state:
        return []
    gate.published = state
    book.counters.lockstep_progress += 1
    (m_seq, m_index, m_inclusive), (t_seq, t_index) = state
    progress = MatchedThrough(
        id=f"{strategy}@{m_seq}.{m_index}{'+' if m_inclusive else '-'}/{t_seq}.{t_index}", ts_event=gate.ts,
        ts_init=now, shard=book.shard, strategy=strategy, marker_seq=m_seq, marker_index=m_index,
        marker_inclusive=bool(m_inclusive), through_seq=t_seq, through_index=t_index,
    )  # fmt: skip
    return [bus.prepare(subjects.step(subjects.ORDER_EVENT, book.shard), progress)]


def check_marker(book: Book, marker: StrategyAt, prefetched: Prefetched) -> None:
    """Raise MarkerRefusedError unless ``marker`` names a valid quote of this shard at its own time.

    The sequence must hold a quote or quote batch of the shard in RRR_MD (not far ahead, not another shard's, not
    a trade), the index a quote of it, and that quote's time must be the marker's: a strategy names a quote it has
    read, as its orders do.
    """
    found = prefetched.get(marker.quote_seq)
    where = f"{MARKET_DATA_STREAM.name} sequence {marker.quote_seq}"
    if found is None:
        raise MarkerRefusedError(marker.id, f"expected a quote at {where}, but there is no message there")
    subject, message = found
    if isinstance(message, str):
        raise MarkerRefusedError(marker.id, message)
    if subject.split(".")[2] != str(book.shard):
        raise MarkerRefusedError(marker.id, f"expected a quote of shard {book.shard} at {where}, got {subject}")
    quote = _quote(message, marker.quote_index)
    if quote is None:
        raise MarkerRefusedError(marker.id, f"expected a quote at index {marker.quote_index} of {where}, got none")
    if quote.ts_event != marker.ts_event:
        raise MarkerRefusedError(
            marker.id, f"expected the quote at {where} to be at {marker.ts_event}, but it is at {quote.ts_event}"
        )


def _quote(message: MarketData, index: int) -> Quote | None:
    if isinstance(message, Quote):
        return message if index == 0 else None
    if isinstance(message, QuoteBatch):
        return message.quote(index) if index < len(message.quotes) else None
    return None


def replace_touch(command: ReplaceOrder, prefetched: Prefetched) -> Touch | str | None:
    """The quote a replace names, as the venue judges it there; None when it names none (an older sender), or why
    the quote it names is not one of its symbol at its time."""
    if not command.quote_seq:
        return None
    found = prefetched.get(command.quote_seq)
    where = f"{MARKET_DATA_STREAM.name} sequence {command.quote_seq}"
    if found is None:
        return f"no quote at {where} (expired, or never published)"
    message = found[1]
    if isinstance(message, str):
        return message
    quote = _quote(message, command.quote_index)
    if quote is None or quote.symbol != command.symbol:
        return f"{where} index {command.quote_index} is not a quote of {command.symbol}"
    if quote.ts_event != command.quote_ts:
        return f"the replace's quote is at {command.quote_ts}, but {where} is a quote at {quote.ts_event}"
    return touch_of(quote, (command.quote_seq, command.quote_index))


async def on_marker(book: Book, bus: Bus, marker: StrategyAt, now: int) -> list[Outgoing]:
    """Apply a strategy instance's marker to each of its strategies' gates; return the events: each gate's
    progress at once (the outcomes of the commands before the marker are published before it), then what
    matching the quotes it allows did, and the progress after that.

    A marker at or behind a gate's (sent again after a restart) changes nothing.

    Raises:
        MarkerRefusedError: no room for another strategy's gate.
    """
    gates = []
    for strategy in marker.strategies:
        gate = book.gates.open(strategy, book.venue.working)
        if gate is None:
            raise MarkerRefusedError(marker.id, f"no room for strategy {strategy}: {book.gates.max_gates} gates held")
        gates.append((strategy, gate))
    book.counters.lockstep_markers += 1
    out: list[Outgoing] = []
    position = marker.position
    for strategy, gate in gates:
        if position <= gate.marker:
            book.counters.lockstep_markers_stale += 1
            continue
        gate.marker = position
        gate.ts = max(gate.ts, marker.ts_event)
        out.extend(_progress(book, bus, strategy, gate, now))
        out.extend(await advance(book, bus, strategy, gate, now))
    return out


async def on_placed(
    book: Book, bus: Bus, order: SubmitOrder, held: WorkingOrder | None, others: bool, now: int
) -> list[Outgoing]:
    """A lockstep order was just handled (``held``: what of it rests at the venue, if anything; ``others``: whether
    its strategy had other orders resting before it). Its strategy gets a gate if it has none; a strategy with
    nothing else resting is matched through the order's quote (the order trades from the next one on). An
    order resting behind its gate's ``through`` (a strategy that sent it late) is caught up to it on its own.
    """
    if not order.quote_seq:
        return []  # no quote named (an older sender): no place to start a gate from
    gate = book.gates.open(order.strategy, book.venue.working)
    if gate is None:
        return []  # no room (a flood of strategy names): it is matched as any other order, as it comes
    placed = (order.quote_seq, order.quote_index)
    gate.ts = max(gate.ts, order.ts_event)
    if not others:
        gate.through = max(gate.through, placed)
        return []
    if held is None or placed >= gate.through:
        return []
    book.counters.orders_caught_up += 1
    return await _match(book, bus, order.strategy, placed, gate.through, now, only=held.id)


async def advance(book: Book, bus: Bus, strategy: str, gate: Gate, now: int) -> list[Outgoing]:
    """Match ``strategy``'s resting orders at the quotes its gate allows, as far as the matcher followed the
    market data; return the events, with the progress after them."""
    if not gate.allows_next():
        return []
    if not any(order.strategy == strategy for order in book.venue.working()):
        # Nothing rests: every quote up to the marker's is matched, vacuously (an exact quote position).
        gate.through = max(gate.through, gate.marker[:2])
        return _progress(book, bus, strategy, gate, now)
    out = await _match(book, bus, strategy, gate.through, book.market_at, now, gate=gate)
    out.extend(_progress(book, bus, strategy, gate, now))
    return out


async def after_market(book: Book, bus: Bus, now: int) -> list[Outgoing]:
    """After the matcher followed a batch of market data: advance every gate that may go further."""
    out: list[Outgoing] = []
    resting = {order.strategy for order in book.venue.working()}
    end = book.market_at
    for strategy, gate in list(book.gates.items()):
        if strategy in resting and gate.allows_next() and gate.through < end:
            out.extend(await advance(book, bus, strategy, gate, now))
    return out


async def _match(
    book: Book,
    bus: Bus,
    strategy: str,
    start: At,
    end: At,
    now: int,
    *,
    gate: Gate | None = None,
    only: str = "",
) -> list[Outgoing]:
    """Walk the valid quotes of the shard after ``start`` up to ``end``, matching ``strategy``'s resting orders
    (``only``: that one order) at the quotes of their symbols. With ``gate``: only while it allows the next
    quote, moving its ``through`` quote by quote. A message that cannot be read now (JetStream away) stops the
    walk: it goes on from there at the next marker or batch of market data."""
    out: list[Outgoing] = []
    symbols = {o.symbol for o in book.venue.working() if o.strategy == strategy and (not only or o.id == only)}

    def _hold(order: WorkingOrder) -> bool:
        return order.strategy != strategy or (bool(only) and order.id != only)

    try:
        async for seq, subject, data in _messages(book, bus, start[0], end[0]):
            message = market.decoded(seq, subject, data, book.shards, book.quotes)
            if isinstance(message, Quote):
                rows: list[str] = [message.symbol]
            elif isinstance(message, QuoteBatch):
                rows = [row.symbol for row in message.quotes]
            else:
                continue  # a trade, or no valid quote: no place among the shard's quotes
            for index, symbol in enumerate(rows):
                at = (seq, index)
                if at <= start:
                    continue
                if at > end or (gate is not None and not gate.allows_next()):
                    return out
                if symbol in symbols:
                    quote = message if isinstance(message, Quote) else message.quote(index)
                    reports = book.venue.on_quote(symbol, touch_of(quote, at), book.net(symbol), _hold)
                    if reports:
                        out.extend(_emit(book, bus, reports, now))
                    book.counters.lockstep_quotes_matched += 1
                if gate is not None:
                    gate.through = at
                    gate.ts = max(gate.ts, quote_ts(message, index))
    except TransientError as exc:
        book.counters.lockstep_read_failures += 1
        _log.warning("lockstep strategy %s: matching stopped after %s, goes on later: %s", strategy, start, exc)
    return out


def quote_ts(message: Quote | QuoteBatch, index: int) -> int:
    """The event time of the quote at ``index`` of ``message``."""
    return message.ts_event if isinstance(message, Quote) else message.quotes[index].ts_event


def _emit(book: Book, bus: Bus, reports: list[Report], now: int) -> list[Outgoing]:
    # Imported here: handlers imports this module (its commands and its matcher hand the gates their part).
    from rrr.execution.handlers import emit

    return emit(book, bus, reports, now=now)


async def _messages(book: Book, bus: Bus, first: int, last: int) -> AsyncIterator[market.Raw]:
    """The shard's market-data messages from ``first`` to ``last``, in stream order, as far as the caller reads
    them: from the matcher's copy when it reaches back that far; else from what was read back before, and from the
    stream, ``_READ_AHEAD`` messages at a time, each kept for the steps that follow (a strategy far behind reads the
    stream once a chunk, not at every step).

    Sequences are walked one by one (the other shards' and streams' are gaps): a step costs what it reads, not
    what the copy holds.

    Raises:
        TransientError: JetStream did not answer.
    """
    copy = book.market
    oldest = copy.oldest()
    if oldest is not None and oldest <= first:
        for seq in range(first, last + 1):
            held = copy.get(seq)
            if held is not None:
                yield seq, *held
        return
    behind = book.gates.behind
    seq = first
    while seq <= last:
        if not behind.covers(seq):
            if not await behind.read(bus, book.shard, seq, last):
                return
            book.counters.lockstep_read_back += 1
        end = min(behind.end, last)
        while seq <= end:
            held = behind.get(seq)
            if held is not None:
                yield seq, *held
            seq += 1
