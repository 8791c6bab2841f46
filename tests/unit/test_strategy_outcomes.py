"""Closed-loop strategies (rrr.strategy.engine.closed_loop, rrr.strategy.outcomes): their orders' events are delivered
where execution's progress cuts them (after the quote that sent the orders, before a quote the venue matched), however
the events arrive, restarts included."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from fractions import Fraction
from typing import get_args

from rrr.shared import subjects
from rrr.shared.messages import (
    FAMILY_TYPES,
    MatchedThrough,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    QuoteRow,
    SubmitOrder,
)
from rrr.strategy import api, loading
from rrr.strategy.engine import At3, Engine, closed_loop
from rrr.strategy.outcomes import Outcomes, marker_applied, through_quote
from tests.support.strategies import FollowsFills, TimedMomentum

STRATEGIES = "tests.support.strategies"


def _row(i: int, symbol: str = "EURUSD") -> QuoteRow:
    return QuoteRow(f"q:{i}", symbol, 1_000_000 * i, 11_000 + i, 11_002 + i, 4)


def _engine() -> Engine:
    return Engine(
        [
            loading.spec("follows", f"{STRATEGIES}:FollowsFills", {"every": 2, "big": "5000"}),
            loading.spec("momentum", f"{STRATEGIES}:TimedMomentum", {"every_ms": 1}),
        ],
        clock=lambda: 7,
    )


def _accepted(order: SubmitOrder) -> OrderAccepted:
    return OrderAccepted(
        id=f"{order.id}:accepted", ts_event=order.ts_event, ts_init=9, client_order_id=order.id,
        strategy=order.strategy, symbol=order.symbol, side=order.side, qty=order.qty,
    )  # fmt: skip


def _filled(order: SubmitOrder) -> OrderFilled:
    price = order.quote_ask if order.side == "buy" else order.quote_bid
    return OrderFilled(
        id=f"{order.id}:1", ts_event=order.ts_event, ts_init=9, client_order_id=order.id, symbol=order.symbol,
        side=order.side, qty=order.qty, price=price, fee=Decimal(0), venue="paper",
    )  # fmt: skip


def _rejected(order: SubmitOrder) -> OrderRejected:
    return OrderRejected(
        id=f"{order.id}:rejected", ts_event=order.ts_event, ts_init=9, client_order_id=order.id,
        strategy=order.strategy, symbol=order.symbol, side=order.side, qty=order.qty, reason="qty above the limit",
    )  # fmt: skip


def _progress(strategy: str, marker: At3, through: tuple[int, int]) -> MatchedThrough:
    return MatchedThrough(
        id=f"{strategy}@{marker}/{through}".replace(" ", ""), ts_event=1, ts_init=9, shard=0, strategy=strategy,
        marker_seq=marker[0], marker_index=marker[1], marker_inclusive=bool(marker[2]), through_seq=through[0],
        through_index=through[1],
    )  # fmt: skip


def test_a_strategy_is_closed_loop_when_it_overrides_on_order_event_and_only_then() -> None:
    assert closed_loop(FollowsFills)
    assert not closed_loop(TimedMomentum)
    engine = _engine()
    follows, momentum = engine.runners
    assert (follows.closed_loop, momentum.closed_loop) == (True, False)


def test_the_strategy_api_knows_every_event_the_order_event_subjects_carry() -> None:
    assert set(get_args(api.OrderEvent)) == set(FAMILY_TYPES[subjects.ORDER_EVENT])


def test_only_closed_loop_commands_wait_and_their_events_up_to_the_progress_move_the_position() -> None:
    engine = _engine()
    outcomes = Outcomes(engine)
    engine.on_row(_row(1), 1)
    out = engine.on_row(_row(2), 2)  # FollowsFills' first order (every 2nd quote); TimedMomentum's first look
    orders = [m for m in out if isinstance(m, SubmitOrder)]
    assert [(o.strategy, o.lockstep) for o in orders] == [("follows", True), ("momentum", False)]
    assert engine.sent == ["follows"]
    mine = orders[0]
    follows = engine.runner("follows").ctx
    assert follows.position("EURUSD").qty == 0
    assert follows.open_orders[mine.id].status == "sent"
    # The open-loop strategy's position moved when it sent its order; it waits for nothing.
    assert engine.runner("momentum").ctx.position("EURUSD").qty != 0

    wants = {"follows": marker_applied((2, 0, 1))}
    outcomes.receive(10, _accepted(mine))
    outcomes.receive(11, _filled(orders[1]))  # another strategy's: not held
    outcomes.receive(12, _filled(mine))
    assert not outcomes.ready(wants)
    outcomes.receive(13, _progress("follows", (1, 0, 1), (1, 0)))  # an older progress: not this one
    assert not outcomes.ready(wants)
    outcomes.receive(14, _progress("follows", (2, 0, 1), (2, 0)))
    assert outcomes.ready(wants)
    assert outcomes.held == 3  # two events, and the two progress events in a row as one
    outcomes.deliver(wants)
    assert outcomes.held == 0
    assert outcomes.delivered == 2
    assert follows.position("EURUSD").qty == 1
    assert not follows.open_orders
    assert (engine.runner("follows").marker, engine.runner("follows").through) == ((2, 0, 1), (2, 0))
    assert outcomes.position == 14


def test_a_wait_delivers_only_the_events_before_the_progress_that_meets_it() -> None:
    engine = _engine()
    outcomes = Outcomes(engine)
    engine.on_row(_row(1), 1)
    (mine, _) = [m for m in engine.on_row(_row(2), 2) if isinstance(m, SubmitOrder)]
    outcomes.receive(20, _accepted(mine))
    outcomes.receive(21, _progress("follows", (2, 0, 1), (2, 0)))
    outcomes.receive(22, _filled(mine))  # at the next quote: after the progress that covers quote 2
    outcomes.receive(23, _progress("follows", (2, 0, 1), (3, 0)))
    outcomes.deliver({"follows": marker_applied((2, 0, 1))})
    ctx = engine.runner("follows").ctx
    assert ctx.open_orders[mine.id].status == "accepted"
    assert ctx.position("EURUSD").qty == 0
    assert outcomes.position == 21  # the fill is still held, and read again after a restart
    # Before quote 3: what the venue did at it.
    assert outcomes.ready({"follows": through_quote(3, 0)})
    outcomes.deliver({"follows": through_quote(3, 0)})
    assert ctx.position("EURUSD").qty == 1
    assert outcomes.position == 23


def test_a_rejection_ends_an_order_and_leaves_the_position() -> None:
    engine = _engine()
    outcomes = Outcomes(engine)
    sides = []
    seq = 100
    for i in range(1, 13):
        engine.on_row(_row(i), i)
        for sid in engine.sent:
            (order,) = engine.runner(sid).ctx.open_orders.values()
            sides.append((order.side, order.qty))
            submit = SubmitOrder(
                id=order.id, ts_event=order.ts_event, ts_init=1, strategy=sid, symbol=order.symbol, side=order.side,
                qty=order.qty, quote_ts=order.ts_event, quote_bid=Decimal(1), quote_ask=Decimal(1),
            )  # fmt: skip
            seq += 1
            outcomes.receive(seq, _rejected(submit) if order.qty > 1000 else _filled(submit))
            seq += 1
            outcomes.receive(seq, _progress(sid, (i, 0, 1), (i, 0)))
            wants = {sid: marker_applied((i, 0, 1))}
            assert outcomes.ready(wants)
            outcomes.deliver(wants)
        engine.sent.clear()
    # buy 1, sell 1, a big buy rejected (still flat), so buy again, then sell, then a big buy rejected.
    assert sides == [("buy", 1), ("sell", 1), ("buy", 5000), ("buy", 1), ("sell", 1), ("buy", 5000)]
    state = engine.runner("follows").strategy.state  # type: ignore[attr-defined]
    assert (state.orders, state.rejected) == (6, 2)
    assert engine.runner("follows").ctx.position("EURUSD").qty == Fraction(0)


def test_events_read_again_after_a_restart_are_held_until_the_order_is_sent_again_then_delivered() -> None:
    first = _engine()
    first.on_row(_row(1), 1)
    first.on_row(_row(2), 2)
    order = next(iter(first.runner("follows").ctx.open_orders.values()))
    # A restarted engine from before quote 2: the order's events and progress come back first, from the stream.
    again = _engine()
    outcomes = Outcomes(again)
    outcomes.start_at(40)
    again.on_row(_row(1), 1)
    submit = next(m for m in again.on_row(_row(2), 2) if isinstance(m, SubmitOrder))
    assert submit.id == order.id
    outcomes.receive(41, _accepted(submit))
    outcomes.receive(42, _filled(submit))
    outcomes.receive(43, _progress("follows", (2, 0, 1), (2, 0)))
    assert outcomes.held == 3
    assert outcomes.position == 40
    outcomes.deliver({"follows": marker_applied((2, 0, 1))})
    assert again.runner("follows").ctx.position("EURUSD").qty == 1
    assert outcomes.position == 43


def test_a_copy_of_an_event_applied_already_is_dropped_and_a_known_progress_needs_no_wait() -> None:
    engine = _engine()
    outcomes = Outcomes(engine)
    engine.on_row(_row(1), 1)
    submit = next(m for m in engine.on_row(_row(2), 2) if isinstance(m, SubmitOrder))
    for seq, item in enumerate(
        [_accepted(submit), _accepted(submit), _filled(submit), _progress("follows", (2, 0, 1), (2, 0))], start=1
    ):
        outcomes.receive(seq, item)
    outcomes.deliver({"follows": marker_applied((2, 0, 1))})
    assert (outcomes.delivered, outcomes.stale) == (2, 1)
    # The fill published again later (a restarted execution): its order is not open, so it is no news.
    outcomes.receive(5, _filled(submit))
    outcomes.receive(6, _progress("follows", (3, 0, 0), (3, 0)))
    outcomes.deliver({"follows": through_quote(3, 0)})
    assert outcomes.stale == 2
    assert engine.runner("follows").ctx.position("EURUSD").qty == 1
    # What is known already meets a wait: nothing to wait for, nothing held is delivered.
    assert outcomes.needs({"follows": through_quote(2, 0)}) == {}


async def test_waiting_ends_when_the_progress_arrives_or_the_service_stops() -> None:
    engine = _engine()
    outcomes = Outcomes(engine)
    stop = asyncio.Event()
    wants = {"follows": through_quote(5, 3)}
    waiting = asyncio.ensure_future(outcomes.wait(stop, wants))
    await asyncio.sleep(0)
    assert not waiting.done()
    outcomes.receive(1, _progress("follows", (5, 3, 0), (5, 2)))  # not as far
    await asyncio.sleep(0)
    assert not waiting.done()
    outcomes.receive(2, _progress("follows", (5, 3, 0), (5, 3)))
    assert await asyncio.wait_for(waiting, 5) is True

    waiting = asyncio.ensure_future(outcomes.wait(stop, {"follows": through_quote(9, 0)}))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(waiting, 5) is False
    assert outcomes.waits == 2


async def test_the_event_reader_stops_taking_events_at_its_bound_until_some_are_delivered() -> None:
    engine = _engine()
    outcomes = Outcomes(engine, max_held=1)
    engine.on_row(_row(1), 1)
    submit = next(m for m in engine.on_row(_row(2), 2) if isinstance(m, SubmitOrder))
    outcomes.receive(1, _accepted(submit))
    stop = asyncio.Event()
    room = asyncio.ensure_future(outcomes.room(stop))
    await asyncio.sleep(0)
    assert not room.done()
    outcomes.receive(2, _progress("follows", (2, 0, 1), (2, 0)))
    outcomes.deliver({"follows": marker_applied((2, 0, 1))})
    await asyncio.wait_for(room, 5)
