"""Handlers of the subjects the strategy service consumes: one function per subject."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry import trace

from rrr.shared import subjects
from rrr.shared.bus import Bus, Delivery, Outgoing, Rejected
from rrr.shared.clock import Clock, wall_clock
from rrr.shared.counters import Counters
from rrr.shared.fixed import FixedPointError, rescale, to_decimal, to_units
from rrr.shared.messages import MarketData, Quote, QuoteBatch, QuoteRow, Signal, SubmitOrder
from rrr.shared.universe import SymbolRefusedError, Universe
from rrr.shared.watermark import Watermark
from rrr.strategy.sma_cross import SmaCross, SmaCrossParams
from rrr.strategy.snapshots import Saver


class StrategyCounters(Counters, kw_only=True):
    """What the strategy service counts, reported in its heartbeats."""

    # Quotes read from the stream, single or in batches, applied or not.
    quotes: int = 0
    # Signals and orders published.
    published: int = 0
    # Quotes at or below the snapshot's sequence, delivered again: acknowledged, not applied twice.
    redelivered_skipped: int = 0
    # Quotes at or before their symbol's newest applied event time: a repeat (the same file replayed
    # again, at any later time) or out of order. Not applied.
    stale_skipped: int = 0
    # Quotes of a symbol outside the universe (--symbols, --max-symbols): dead-lettered, never applied.
    symbols_refused: int = 0
    snapshots: int = 0


@dataclass(slots=True)
class Strategies:
    """One strategy state per symbol, created on the symbol's first quote.

    ``seq`` is the stream sequence of the last quote applied: a quote at or below it (a redelivery) is
    acknowledged without being applied again, since applying a quote twice would corrupt the means.
    """

    name: str
    params: SmaCrossParams
    shards: int
    books: dict[str, SmaCross] = field(default_factory=dict)
    # Per symbol: the newest quote applied (see rrr.shared.watermark), snapshotted with the books.
    watermarks: dict[str, Watermark] = field(default_factory=dict)
    seq: int = 0
    # False from a batch's first state change until its signals and orders are stored: a snapshot taken
    # in between would claim output that was never sent.
    published: bool = True
    counters: StrategyCounters = field(default_factory=StrategyCounters)
    # What this service stamps its own messages with (``ts_init``); event time comes from the quote.
    clock: Clock = wall_clock
    # The symbols it may keep state for; the watermarks hold one entry for every symbol it does.
    universe: Universe = field(default_factory=Universe)

    def for_symbol(self, symbol: str) -> SmaCross:
        """The symbol's state, created empty on first use."""
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = SmaCross(self.params)
        return book


def on_quote(strategies: Strategies, bus: Bus, quote: Quote, seq: int = 0, index: int = 0) -> list[Outgoing]:
    """Feed one quote to its symbol's strategy; return the signal and order it produces, if any.

    ``seq`` is the quote's sequence in the market-data stream and ``index`` its place in the batch stored
    there: the order names both, and execution fills at the quote it reads there.

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
    symbol = row.symbol
    mark = strategies.watermarks.get(symbol)
    if mark is None:
        strategies.universe.admit(symbol, len(strategies.watermarks))
        mark = strategies.watermarks[symbol] = Watermark()
    if mark.seen(row.ts_event, row.id):
        strategies.counters.stale_skipped += 1
        return []
    book = strategies.books.get(symbol)
    if book is None:
        book = strategies.for_symbol(symbol)
    cross = book.on_quote(row.bid, row.ask, row.places)
    mark.advance(row.ts_event, row.id)
    if cross is None:
        return []
    now = strategies.clock()
    name = strategies.name
    # Ids derive from the triggering quote: a redelivered quote yields the same ids, which the streams and
    # the database de-duplicate.
    out = [
        bus.prepare(
            subjects.signal(symbol, strategies.shards),
            Signal(
                id=f"{name}:{row.id}",
                ts_event=row.ts_event,
                ts_init=now,
                strategy=name,
                symbol=symbol,
                quote_id=row.id,
                direction=cross.direction,
                fast=cross.fast,
                slow=cross.slow,
                target=cross.target,
            ),
        )
    ]
    if cross.order_qty:
        out.append(
            bus.prepare(
                subjects.order_command(symbol, strategies.shards),
                SubmitOrder(
                    id=f"{name}-{row.id}",
                    ts_event=row.ts_event,
                    ts_init=now,
                    strategy=name,
                    symbol=symbol,
                    side="buy" if cross.order_qty > 0 else "sell",
                    qty=abs(cross.order_qty),
                    quote_ts=row.ts_event,
                    quote_bid=to_decimal(row.bid, row.places),
                    quote_ask=to_decimal(row.ask, row.places),
                    quote_seq=seq,
                    quote_index=index,
                ),
            )
        )
    return out


async def on_quotes(
    strategies: Strategies,
    bus: Bus,
    saver: Saver,
    stop: asyncio.Event,
    batch: Sequence[Delivery[MarketData]],
) -> list[Rejected]:
    """``md.*.<shard>.*``: run the quotes of the batch (single quotes and quote batches) in stream order,
    then publish their output. Trades are not used.

    The strategy owns its position in the stream: ``strategies.seq``, saved in its snapshots only once
    every signal and order up to it is stored by JetStream (a broker outage is waited out, publishing the
    same message ids again). A quote the strategy cannot compute exactly, or of a symbol outside the
    universe, is rejected (its message dead-lettered with the reason) without touching the state; in a
    quote batch the other quotes are applied.
    """
    out: list[Outgoing] = []
    rejected: list[Rejected] = []
    for delivery in batch:
        seq = delivery.seq
        if seq <= strategies.seq:
            strategies.counters.redelivered_skipped += 1
            continue
        strategies.seq = seq
        strategies.published = False
        message = delivery.message
        if not isinstance(message, Quote | QuoteBatch):
            continue
        with trace.use_span(bus.span("strategy.on_quote", delivery.msg), end_on_exit=True):
            refused: list[str] = []
            rows: Sequence[QuoteRow | Quote] = message.quotes if isinstance(message, QuoteBatch) else (message,)
            strategies.counters.quotes += len(rows)
            for index, row in enumerate(rows):
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
            if refused:
                more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
                rejected.append(Rejected(delivery, f"strategy: {refused[0]}{more}", retry=False))
    if out:
        # On a stop during an outage: the strategy continues from its last snapshot on restart.
        await bus.publish_state_output(out, stop, "signals and orders")
        strategies.counters.published += len(out)
    strategies.published = True
    # Only now, with everything up to ``seq`` published, may a snapshot claim to cover it.
    if await saver.maybe_save(
        strategies.seq, strategies.name, strategies.params, strategies.books, strategies.watermarks
    ):
        strategies.counters.snapshots += 1
    return rejected
