"""Closed-loop strategies (rrr.strategy.engine.closed_loop, rrr.strategy.outcomes): their orders' outcomes are
delivered after the quote that sent them and before the next, however the events arrive, restarts included."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from fractions import Fraction
from typing import get_args

from rrr.shared import subjects
from rrr.shared.messages import FAMILY_TYPES, OrderAccepted, OrderFilled, OrderRejected, QuoteRow, SubmitOrder
from rrr.strategy import api, loading
from rrr.strategy.engine import Engine, closed_loop
from rrr.strategy.outcomes import Outcomes
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


def test_a_strategy_is_closed_loop_when_it_overrides_on_order_event_and_only_then() -> None:
    assert closed_loop(FollowsFills)
    assert not closed_loop(TimedMomentum)
    engine = _engine()
    follows, momentum = engine.runners
    assert (follows.closed_loop, momentum.closed_loop) == (True, False)


def test_the_strategy_api_knows_every_event_the_order_event_subjects_carry() -> None:
    assert set(get_args(api.OrderEvent)) == set(FAMILY_TYPES[subjects.ORDER_EVENT])


def test_only_closed_loop_orders_are_awaited_and_their_events_move_the_position_not_the_sending() -> None:
    engine = _engine()
    outcomes = Outcomes(engine)
    engine.on_row(_row(1))
    out = engine.on_row(_row(2))  # FollowsFills' first order (every 2nd quote); TimedMomentum's first look
    orders = [m for m in out if isinstance(m, SubmitOrder)]
    assert [o.strategy for o in orders] == ["follows", "momentum"]
    (mine,) = engine.awaiting
    assert mine.strategy == "follows"
    follows = engine.runner("follows").ctx
    assert follows.position("EURUSD").qty == 0
    assert mine.id in follows.open_orders
    # The open-loop strategy's position moved when it sent its order; it awaits nothing.
    assert engine.runner("momentum").ctx.position("EURUSD").qty != 0

    outcomes.receive(10, _accepted(mine))
    assert not outcomes.settled()
    outcomes.receive(11, _filled(orders[1]))  # another strategy's: not held
    outcomes.receive(12, _filled(mine))
    assert outcomes.settled()
    assert outcomes.held == 2
    outcomes.deliver()
    assert engine.awaiting == []
    assert outcomes.held == 0
    assert outcomes.delivered == 2
    assert follows.position("EURUSD").qty == 1
    assert not follows.open_orders
    assert outcomes.position == 12


def test_a_rejection_settles_an_order_and_leaves_the_position() -> None:
    engine = _engine()
    outcomes = Outcomes(engine)
    sides = []
    for i in range(1, 13):
        engine.on_row(_row(i))
        for order in list(engine.awaiting):
            sides.append((order.side, order.qty))
            outcome = _rejected(order) if order.qty > 1000 else _filled(order)
            outcomes.receive(100 + i, outcome)
        assert outcomes.settled()
        outcomes.deliver()
    # buy 1, sell 1, a big buy rejected (still flat), so buy again, then sell, then a big buy rejected.
    assert sides == [("buy", 1), ("sell", 1), ("buy", 5000), ("buy", 1), ("sell", 1), ("buy", 5000)]
    state = engine.runner("follows").strategy.state  # type: ignore[attr-defined]
    assert (state.orders, state.rejected) == (6, 2)
    assert engine.runner("follows").ctx.position("EURUSD").qty == Fraction(0)


def test_events_read_before_their_order_is_sent_again_after_a_restart_are_held_and_then_delivered() -> None:
    first = _engine()
    first.on_row(_row(1))
    first.on_row(_row(2))
    (order,) = first.awaiting
    # A restarted engine from before quote 2: the order's events come back first, from the event stream.
    again = _engine()
    outcomes = Outcomes(again)
    outcomes.start_at(40)
    again.on_row(_row(1))
    outcomes.receive(41, _accepted(order))
    outcomes.receive(42, _filled(order))
    assert outcomes.held == 2
    assert outcomes.position == 40
    again.on_row(_row(2))
    assert [o.id for o in again.awaiting] == [order.id]
    assert outcomes.settled()
    outcomes.deliver()
    assert again.runner("follows").ctx.position("EURUSD").qty == 1
    assert outcomes.position == 42


def test_a_repeated_event_is_delivered_once_and_one_of_an_order_delivered_already_is_dropped() -> None:
    engine = _engine()
    outcomes = Outcomes(engine)
    engine.on_row(_row(1))
    engine.on_row(_row(2))
    (order,) = engine.awaiting
    for seq, event in enumerate([_accepted(order), _accepted(order), _filled(order)], start=1):
        outcomes.receive(seq, event)
    outcomes.deliver()
    assert outcomes.delivered == 2
    # The same events published again later (a restarted execution): the order's quote is applied and the
    # order awaits nothing, so they are stale, never held.
    outcomes.receive(4, _filled(order))
    assert outcomes.held == 0
    assert outcomes.stale == 1
    assert outcomes.position == 4
    assert engine.runner("follows").ctx.position("EURUSD").qty == 1


def test_held_events_whose_order_is_never_sent_again_are_dropped_once_its_quote_is_passed() -> None:
    first = _engine()
    first.on_row(_row(1))
    first.on_row(_row(2))
    (order,) = first.awaiting
    again = _engine()
    outcomes = Outcomes(again)
    outcomes.receive(5, _filled(order))
    assert outcomes.held == 1
    assert outcomes.position == 4
    # Quote 2 applied without the order being sent (another event time, say): the next delivery prunes it.
    again.runner("follows").stopped = "stopped for the test"
    again.on_row(_row(2))
    again.on_row(_row(3))
    outcomes.deliver()
    assert outcomes.held == 0
    assert outcomes.position == 5


async def test_waiting_ends_when_the_outcome_arrives_or_the_service_stops() -> None:
    engine = _engine()
    outcomes = Outcomes(engine)
    engine.on_row(_row(1))
    engine.on_row(_row(2))
    (order,) = engine.awaiting
    stop = asyncio.Event()
    waiting = asyncio.ensure_future(outcomes.wait(stop))
    await asyncio.sleep(0)
    assert not waiting.done()
    outcomes.receive(1, _filled(order))
    assert await asyncio.wait_for(waiting, 5) is True

    engine.awaiting.append(order)
    outcomes = Outcomes(engine)
    waiting = asyncio.ensure_future(outcomes.wait(stop))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(waiting, 5) is False


async def test_the_event_reader_stops_taking_events_at_its_bound_until_some_are_delivered() -> None:
    engine = _engine()
    outcomes = Outcomes(engine, max_held=1)
    engine.on_row(_row(1))
    engine.on_row(_row(2))
    (order,) = engine.awaiting
    outcomes.receive(1, _accepted(order))
    stop = asyncio.Event()
    room = asyncio.ensure_future(outcomes.room(stop))
    await asyncio.sleep(0)
    assert not room.done()
    outcomes.receive(2, _filled(order))
    outcomes.deliver()
    await asyncio.wait_for(room, 5)
