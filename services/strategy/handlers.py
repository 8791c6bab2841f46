"""Handlers of the subjects the strategy service consumes: one function per subject."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import trace

from rrr.shared import subjects
from rrr.shared.bus import Bus, Delivery, Outgoing, Rejected
from rrr.shared.fixed import FixedPointError, rescale, to_units
from rrr.shared.messages import MarketData, Quote, QuoteBatch, QuoteRow, Signal, StrategyAt, Trade
from rrr.shared.universe import SymbolRefusedError
from rrr.shared.watermark import Watermark
from rrr.strategy import snapshots
from rrr.strategy.engine import At3, Engine, Output, StrategyCounters
from rrr.strategy.outcomes import Item, Outcomes, Want, marker_applied, through_quote
from rrr.strategy.snapshots import Saver

__all__ = ["Strategies", "StrategyCounters", "on_order_events", "on_quote", "on_quotes", "on_row"]


@dataclass(slots=True)
class Strategies:
    """The engine (every strategy of the instance, rrr.strategy.engine) and where it is in the stream.

    ``seq`` is the stream sequence of the last quote applied: a quote at or below it (a redelivery) is
    acknowledged without being applied again, since applying a quote twice would corrupt the strategies.
    """

    engine: Engine
    shards: int
    seq: int = 0
    # The outcomes of closed-loop strategies' orders (rrr.strategy.outcomes); None when none is closed-loop.
    outcomes: Outcomes | None = None
    # False from a batch's first state change until its signals and orders are stored: a snapshot taken
    # in between would claim output that was never sent.
    published: bool = True
    # True from a batch that refused quotes until the bus has stored their dead letters (``settled``): no
    # snapshot may claim a refused quote before its dead letter exists.
    refusals_pending: bool = False
    # The place of the last quote handled in the stream (kept when closed-loop strategies run).
    previous: tuple[int, int] | None = None

    def settled(self) -> None:
        """The bus stored the refusals of the last batch."""
        self.refusals_pending = False

    @property
    def counters(self) -> StrategyCounters:
        """The instance's counters (the engine's)."""
        return self.engine.counters

    @property
    def watermarks(self) -> dict[str, Watermark]:
        """Per symbol, the newest quote applied."""
        return self.engine.watermarks

    @property
    def event_seq(self) -> int:
        """The order-event stream sequence a snapshot covers (0 when no strategy reads order events)."""
        return 0 if self.outcomes is None else self.outcomes.position

    def snapshot(self) -> bytes:
        """The snapshot of the engine at the current positions in the quote and order-event streams."""
        return snapshots.encode_engine(self.seq, self.engine, self.event_seq)


def _prepare(bus: Bus, shards: int, out: list[Output]) -> list[Outgoing]:
    return [
        bus.prepare(
            subjects.signal(m.symbol, shards) if isinstance(m, Signal) else subjects.order_command(m.symbol, shards), m
        )
        for m in out
    ]


def marker(strategies: Strategies, bus: Bus, row: QuoteRow | Quote, ids: Sequence[str], position: At3) -> Outgoing:
    """The lockstep marker of the strategies ``ids`` at ``position`` (rrr.strategy.outcomes), on its shard's
    ``cmd.order.<shard>._step``; its id is the same whenever the same quote is handled again."""
    seq, index, inclusive = position
    names = "+".join(ids)
    if len(names) > 160:
        names = hashlib.blake2b(names.encode(), digest_size=16).hexdigest()
    shard = subjects.shard_of(row.symbol, strategies.shards)
    at = StrategyAt(
        id=f"{names}@{seq}.{index}{'+' if inclusive else '-'}", ts_event=row.ts_event,
        ts_init=strategies.engine.clock(), shard=shard, strategies=list(ids), quote_seq=seq, quote_index=index,
        inclusive=bool(inclusive),
    )  # fmt: skip
    return bus.prepare(subjects.step(subjects.ORDER_COMMAND, shard), at)


async def _lockstep(
    strategies: Strategies,
    bus: Bus,
    stop: asyncio.Event,
    out: list[Outgoing],
    row: QuoteRow | Quote,
    ids: Sequence[str],
    want: Want,
    position: At3,
    previous: tuple[int, int] | None,
) -> bool:
    """Publish what is pending with the marker of ``ids`` at ``position`` where they need one, wait until
    execution's progress meets ``want`` for each, then deliver their events up to it; False if stopped first.

    ``previous`` is the quote handled just before this one: a marker through it says "before this one" already.
    """
    outcomes = strategies.outcomes
    assert outcomes is not None
    wants = outcomes.needs(dict.fromkeys(ids, want))
    if wants:
        sent = outcomes.markers_sent
        # A marker through the quote just before says what one before this quote would.
        covers = (position,) if previous is None or position[2] else (position, (*previous, 1))
        pending = [
            sid for sid in wants if sent.get(sid, (0, 0, 0)) not in covers and sent.get(sid, (0, 0, 0)) < position
        ]
        if out:
            strategies.counters.published += len(out)
        if pending:
            out.append(marker(strategies, bus, row, pending, position))
            outcomes.markers_sent.update(dict.fromkeys(pending, position))
            strategies.counters.lockstep_markers += 1
        if out:
            # The commands before the marker: stored in this order, so execution applies them before it.
            await bus.publish_state_output(out, stop, "signals, orders and a lockstep marker")
            out.clear()
        if not await outcomes.wait(stop, wants):
            return False
        outcomes.deliver(wants)
    return True


def on_quote(strategies: Strategies, bus: Bus, quote: Quote, seq: int = 0, index: int = 0) -> list[Outgoing]:
    """Feed one quote to the strategies of its symbol; return the signals and orders they produce.

    ``seq`` is the quote's sequence in the market-data stream and ``index`` its place in the batch stored
    there: an order names both, and execution fills at the quote it reads there.

    A quote at or before the newest one applied for its symbol is skipped: the same quote coming back at
    any later time (a replay resumed or repeated hours later) yields no second signal or order.

    Raises:
        SymbolRefusedError: the quote's symbol is new and outside the universe; nothing changed.
        FixedPointError: a price is beyond the fixed-point bounds (rrr.shared.fixed); the quote was not applied.
    """
    bid, bid_places = to_units(quote.bid, name="bid")
    ask, ask_places = to_units(quote.ask, name="ask")
    places = max(bid_places, ask_places)
    bid, ask = rescale(bid, bid_places, places), rescale(ask, ask_places, places)
    return on_row(strategies, bus, QuoteRow(quote.id, quote.symbol, quote.ts_event, bid, ask, places), seq, index)


def on_row(strategies: Strategies, bus: Bus, row: QuoteRow, seq: int = 0, index: int = 0) -> list[Outgoing]:
    """``on_quote`` for a quote of a batch, its prices already in fixed point: the hot path."""
    out = strategies.engine.on_row(row, seq, index)
    return _prepare(bus, strategies.shards, out) if out else []


async def on_quotes(
    strategies: Strategies,
    bus: Bus,
    saver: Saver,
    stop: asyncio.Event,
    batch: Sequence[Delivery[MarketData]],
) -> list[Rejected]:
    """``md.*.<shard>.*``: run the quotes of the batch (single quotes and quote batches) and its trades in
    stream order, then publish their output.

    The strategy owns its position in the stream: ``strategies.seq``, saved in its snapshots only once
    every signal and order up to it is stored by JetStream (a broker outage is waited out, publishing the
    same message ids again). A quote the strategies cannot compute exactly, or of a symbol outside the
    universe, is rejected (its message dead-lettered with the reason) without touching the state; in a
    quote batch the other quotes are applied.
    """
    out: list[Outgoing] = []
    rejected: list[Rejected] = []
    engine = strategies.engine
    outcomes = strategies.outcomes
    # The quote handled last (closed-loop strategies: a marker through it is one before the next).
    previous = strategies.previous
    for delivery in batch:
        seq = delivery.seq
        if seq <= strategies.seq:
            strategies.counters.redelivered_skipped += 1
            continue
        strategies.seq = seq
        strategies.published = False
        message = delivery.message
        if isinstance(message, Trade):
            engine.on_trade(message)
            continue
        with trace.use_span(bus.span("strategy.on_quote", delivery.msg), end_on_exit=True):
            refused: list[str] = []
            rows: Sequence[QuoteRow | Quote] = message.quotes if isinstance(message, QuoteBatch) else (message,)
            strategies.counters.quotes += len(rows)
            for index, row in enumerate(rows):
                if outcomes is not None:
                    resting = engine.resting(row.symbol)
                    # Closed-loop strategies with orders resting in the symbol see what the venue did at this
                    # quote before they handle it (rrr.strategy.outcomes).
                    if resting and not await _lockstep(
                        strategies, bus, stop, out, row, resting, through_quote(seq, index), (seq, index, 0), previous
                    ):
                        return []  # stopped: the last snapshot stays, and a restart handles these again
                    previous = (seq, index)
                try:
                    if isinstance(row, QuoteRow):
                        out.extend(on_row(strategies, bus, row, seq, index))
                    else:
                        out.extend(on_quote(strategies, bus, row, seq, index))
                except FixedPointError as exc:
                    refused.append(f"cannot compute {row.id} exactly: {exc}")
                except SymbolRefusedError as exc:
                    strategies.counters.symbols_refused += 1
                    refused.append(str(exc))
                if engine.sent and outcomes is not None:
                    # Closed-loop commands: sent now with a marker, and their outcomes delivered before the next
                    # quote.
                    sent, engine.sent = engine.sent, []
                    position = (seq, index, 1)
                    if not await _lockstep(
                        strategies, bus, stop, out, row, sent, marker_applied(position), position, None
                    ):
                        return []
            if refused:
                more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
                rejected.append(Rejected(delivery, f"strategy: {refused[0]}{more}", retry=False))
    strategies.previous = previous
    if out:
        # On a stop during an outage: the strategy continues from its last snapshot on restart.
        await bus.publish_state_output(out, stop, "signals and orders")
        strategies.counters.published += len(out)
    strategies.published = True
    if rejected:
        strategies.refusals_pending = True
        return rejected
    # Only now, with everything up to ``seq`` published, may a snapshot claim to cover it.
    if await saver.maybe_save(strategies.seq, strategies.snapshot):
        strategies.counters.snapshots += 1
    return rejected


async def on_order_events(outcomes: Outcomes, stop: asyncio.Event, batch: Sequence[Delivery[Item]]) -> None:
    """``evt.order.<shard>.*``: hold the events and progress closed-loop strategies may need (rrr.strategy.outcomes).

    The strategies' snapshots hold the position in this stream; nothing is acknowledged.
    """
    for delivery in batch:
        await outcomes.room(stop)
        outcomes.receive(delivery.seq, delivery.message)
