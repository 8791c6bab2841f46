"""Execution's side of the lockstep (rrr.execution.lockstep): a gated strategy's resting orders are matched at a quote
only once its markers say it handled every quote before it, whatever the matcher followed meanwhile."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import nats.aio.client
import pytest
from opentelemetry import trace

from rrr.execution import handlers, lockstep, snapshots
from rrr.execution.market import touch_of
from rrr.execution.matching import WorkingOrder
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.risk import RiskLimits
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import (
    MatchedThrough,
    OrderFilled,
    Quote,
    ReplaceOrder,
    StrategyAt,
    SubmitOrder,
    Trade,
    encode,
    order_event_decoder,
)

SYMBOL = "LOCKX"
T0 = 1_700_000_000_000_000_000
# The day's quotes, one a message at sequences 1 ... : the buy limit at 100 placed at the first could fill at the third.
ASKS = ["101", "100.5", "99", "98", "97"]


def _quote(n: int, ask: str) -> Quote:
    return Quote(id=f"q{n}", ts_event=T0 + n, ts_init=1, symbol=SYMBOL, bid=Decimal(ask) - 1, ask=Decimal(ask))


QUOTES = [_quote(n, ask) for n, ask in enumerate(ASKS, start=1)]


def _book() -> tuple[handlers.Book, Bus]:
    book = handlers.Book(
        limits=RiskLimits(Decimal(1000), Decimal(10**7)), venue=PaperVenue(), shards=1, clock=lambda: 5
    )
    for seq, quote in enumerate(QUOTES, start=1):
        book.market.add(seq, subjects.quote(SYMBOL, 1), encode(quote))
    # A bus that never connects: handlers only encode what they publish.
    return book, Bus(nats.aio.client.Client(), service="test", tracer=trace.NoOpTracer())


def _follow(book: handlers.Book, bus: Bus, upto: int) -> list[object]:
    """The matcher follows the market data up to sequence ``upto``: the gated orders are left alone."""
    events = []
    for seq in range(book.market_at[0] + 1, upto + 1):
        quote = QUOTES[seq - 1]
        events += handlers.match_touch(book, bus, SYMBOL, touch_of(quote, (seq, 0)), 5)
        book.market_at = (seq, 4096)
    return [order_event_decoder.decode(o.data) for o in events]


async def _place(book: handlers.Book, bus: Bus, **fields: object) -> SubmitOrder:
    order = SubmitOrder(
        id="rests-q1", ts_event=T0 + 1, ts_init=1, strategy="rests", symbol=SYMBOL, side="buy", qty=Decimal(1),
        order_type="limit", limit_price=Decimal(100), quote_ts=T0 + 1, quote_bid=Decimal(100), quote_ask=Decimal(101),
        quote_seq=1, lockstep=True,
    )  # fmt: skip
    order = msgspec.structs.replace(order, **fields)
    handlers.on_submit_order(book, bus, order, QUOTES[0])
    await lockstep.on_placed(book, bus, order, book.venue.get(SYMBOL, order.id), False, 5)
    return order


def _marker(seq: int, inclusive: bool, strategies: tuple[str, ...] = ("rests",)) -> StrategyAt:
    return StrategyAt(
        id=f"m{seq}{inclusive}", ts_event=T0 + seq, ts_init=1, shard=0, strategies=list(strategies), quote_seq=seq,
        inclusive=inclusive,
    )  # fmt: skip


async def _apply(book: handlers.Book, bus: Bus, marker: StrategyAt) -> list[object]:
    return [order_event_decoder.decode(o.data) for o in await lockstep.on_marker(book, bus, marker, 5)]


async def test_a_gated_order_is_matched_only_at_the_quotes_its_strategys_markers_allow() -> None:
    book, bus = _book()
    await _place(book, bus)
    # The matcher followed the whole day: the order would have filled at the third quote, but it waits at its gate.
    assert _follow(book, bus, 5) == []
    assert book.venue.get(SYMBOL, "rests-q1") is not None
    # "Handled through the first quote": the second may be matched (no fill there), not the third.
    first = await _apply(book, bus, _marker(1, True))
    assert [type(e).__name__ for e in first] == ["MatchedThrough", "MatchedThrough"]
    assert [(p.marker, p.through) for p in first if isinstance(p, MatchedThrough)] == [
        ((1, 0, 1), (1, 0)),
        ((1, 0, 1), (2, 0)),
    ]
    # "Handled everything before the third": matched there, and reported after the fill.
    third = await _apply(book, bus, _marker(3, False))
    fills = [e for e in third if isinstance(e, OrderFilled)]
    assert [(f.id, f.price, f.ts_event) for f in fills] == [("rests-q1:1", Decimal(100), T0 + 3)]
    assert isinstance(third[-1], MatchedThrough)
    assert (third[-1].marker, third[-1].through) == ((3, 0, 0), (3, 0))
    assert book.gates.get("rests") == lockstep.Gate(
        marker=(3, 0, 0), through=(3, 0), ts=T0 + 3, published=((3, 0, 0), (3, 0))
    )


async def test_a_marker_behind_its_gate_changes_nothing_and_nothing_resting_is_matched_through_the_marker() -> None:
    book, bus = _book()
    await _place(book, bus, order_type="market", limit_price=None)  # fills at once: nothing rests
    assert book.gates.get("rests") is not None
    _follow(book, bus, 5)
    assert [(p.marker, p.through) for p in await _apply(book, bus, _marker(4, True))] == [
        ((4, 0, 1), (1, 0)),
        ((4, 0, 1), (4, 0)),
    ]
    assert await _apply(book, bus, _marker(2, True)) == []
    assert book.counters.lockstep_markers_stale == 1


async def test_after_the_market_data_a_gate_goes_as_far_as_its_marker_allows_and_the_matcher_got() -> None:
    book, bus = _book()
    await _place(book, bus)
    # The strategy is ahead of the matcher: its marker allows the third quote before the matcher followed it.
    await _apply(book, bus, _marker(3, False))
    assert book.gates.get("rests").through == (1, 0)  # type: ignore[union-attr]
    _follow(book, bus, 4)
    events = [order_event_decoder.decode(o.data) for o in await lockstep.after_market(book, bus, 5)]
    assert [type(e).__name__ for e in events] == ["OrderFilled", "PositionUpdated", "MatchedThrough"]
    assert book.gates.get("rests").through == (3, 0)  # type: ignore[union-attr]


async def test_an_order_of_a_gated_strategy_placed_behind_its_gate_is_caught_up_to_it_on_its_own() -> None:
    book, bus = _book()
    await _place(book, bus, id="rests-early", limit_price=Decimal(90))  # rests, never fills here
    _follow(book, bus, 5)
    await _apply(book, bus, _marker(4, True))
    # Another order, sent (late) at the first quote: the gate matched through the fifth, so it is taken there alone.
    order = await _late_order(book, bus)
    assert book.venue.get(SYMBOL, order.id) is None  # filled while caught up, at the third quote, at its limit
    assert book.counters.orders_caught_up == 1


async def _late_order(book: handlers.Book, bus: Bus) -> SubmitOrder:
    order = SubmitOrder(
        id="rests-late", ts_event=T0 + 1, ts_init=1, strategy="rests", symbol=SYMBOL, side="buy", qty=Decimal(1),
        order_type="limit", limit_price=Decimal(100), quote_ts=T0 + 1, quote_bid=Decimal(100), quote_ask=Decimal(101),
        quote_seq=1, lockstep=True,
    )  # fmt: skip
    handlers.on_submit_order(book, bus, order, QUOTES[0])
    events = await lockstep.on_placed(book, bus, order, book.venue.get(SYMBOL, order.id), True, 5)
    fills = [e for e in map(order_event_decoder.decode, (o.data for o in events)) if isinstance(e, OrderFilled)]
    assert [(f.id, f.ts_event) for f in fills] == [("rests-late:1", T0 + 3)]
    return order


def test_a_marker_must_name_a_quote_of_the_shard_at_its_own_time() -> None:
    book, _ = _book()
    trade = Trade(id="t", ts_event=T0, ts_init=1, symbol=SYMBOL, price=Decimal(1), size=Decimal(1))
    read: lockstep.Prefetched = {
        1: (subjects.quote(SYMBOL, 1), QUOTES[0]),
        2: (subjects.trade(SYMBOL, 1), trade),
        3: ("md.quote.0.LOCKX", "RRR_MD sequence 3 is not a valid quote: ..."),
        4: ("md.quote.1.LOCKX", QUOTES[3]),
    }
    lockstep.check_marker(book, _marker(1, True), read)
    for marker, reason in [
        (_marker(9, True), "there is no message there"),
        (_marker(2, True), "expected a quote at index 0"),
        (_marker(3, True), "is not a valid quote"),
        (msgspec.structs.replace(_marker(1, True), ts_event=T0), f"to be at {T0}, but it is at {T0 + 1}"),
        (msgspec.structs.replace(_marker(1, True), quote_index=1), "expected a quote at index 1"),
        (_marker(4, True), "expected a quote of shard 0"),
    ]:
        with pytest.raises(lockstep.MarkerRefusedError, match=reason):
            lockstep.check_marker(book, marker, read)


def test_a_replace_is_judged_at_the_quote_it_names_if_that_is_one_of_its_symbol_at_its_time() -> None:
    replace = ReplaceOrder(
        id="r", ts_event=T0 + 3, ts_init=1, strategy="rests", symbol=SYMBOL, client_order_id="rests-q1",
        limit_price=Decimal(99), quote_seq=3, quote_ts=T0 + 3,
    )  # fmt: skip
    read: lockstep.Prefetched = {3: (subjects.quote(SYMBOL, 1), QUOTES[2])}
    assert lockstep.replace_touch(replace, read) == touch_of(QUOTES[2], (3, 0))
    assert lockstep.replace_touch(msgspec.structs.replace(replace, quote_seq=0), read) is None
    assert "is a quote at" in str(lockstep.replace_touch(msgspec.structs.replace(replace, quote_ts=T0), read))
    assert "no quote at" in str(lockstep.replace_touch(msgspec.structs.replace(replace, quote_seq=7), read))


def test_gates_are_bounded_and_let_go_first_of_strategies_with_nothing_resting() -> None:
    gates = lockstep.Gates(max_gates=2)
    resting = [WorkingOrder(id="a-1", strategy="a", symbol=SYMBOL, side="buy", qty=Decimal(1))]
    assert gates.open("a", lambda: resting) is not None
    assert gates.open("b", lambda: resting) is not None
    assert gates.open("c", lambda: resting) is not None  # b held nothing: let go
    assert set(gates) == {"a", "c"}
    resting.append(WorkingOrder(id="c-1", strategy="c", symbol=SYMBOL, side="buy", qty=Decimal(1)))
    assert gates.open("d", lambda: resting) is None


async def test_gates_survive_a_snapshot_exactly() -> None:
    book, bus = _book()
    await _place(book, bus)
    _follow(book, bus, 5)
    await _apply(book, bus, _marker(2, False))
    restored = handlers.Book(limits=RiskLimits(Decimal(1000), Decimal(10**7)), venue=PaperVenue(), shards=1)
    snapshots.decode_into(snapshots.encode(book), restored)
    assert dict(restored.gates.items()) == dict(book.gates.items())
    assert restored.venue.get(SYMBOL, "rests-q1") == book.venue.get(SYMBOL, "rests-q1")
