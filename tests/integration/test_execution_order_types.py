"""Execution with order types against a real nats-server: orders resting and filling on the market data it
follows, cancels and replaces by client order id, catching up an order that arrives late, and restarts that
bring open orders back exactly."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from rrr.execution import app, handlers, snapshots
from rrr.execution.config import ExecutionConfig
from rrr.execution.market import touch_of
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.risk import RiskLimits
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import (
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderUpdate,
    PositionUpdated,
    SubmitOrder,
    order_event_decoder,
)
from tests.support.factories import make_cancel, make_order, make_quote, make_replace, unique_symbol
from tests.support.services import Heartbeats, RunningService, running_service
from tests.support.streams import decode_all, stream_messages
from tests.support.waiting import wait_until

D = Decimal
# Quote times: a fixed day, one second apart, so that expiries are exact.
T0 = 1_700_000_000_000_000_000
SECOND = 1_000_000_000


@pytest.fixture
def config(nats_url: str) -> ExecutionConfig:
    return ExecutionConfig(
        nats_url=nats_url, heartbeat_ms=100, max_order_qty=Decimal(1000), max_notional_quote=Decimal(10**7)
    )


async def _quote(
    bus: Bus, symbol: str, bid: str, ask: str, n: int, *, bid_size: str | None = None, ask_size: str | None = None
) -> int:
    """Publish the ``n``-th quote of ``symbol`` (at T0 + n seconds) to the market-data stream; its sequence."""
    quote = make_quote(symbol, bid=bid, ask=ask, ts_event=T0 + n * SECOND, bid_size=bid_size, ask_size=ask_size)
    return (await bus.publish_persistent(subjects.quote(symbol, 1), quote)).seq


async def _send(bus: Bus, order: SubmitOrder, seq: int, n: int) -> SubmitOrder:
    """Send ``order`` naming the quote at ``seq`` (the ``n``-th), as the strategy does."""
    named = msgspec.structs.replace(order, quote_seq=seq, quote_ts=T0 + n * SECOND, ts_event=T0 + n * SECOND)
    await bus.publish_persistent(subjects.order_command(order.symbol, 1), named)
    return named


def _order(symbol: str, **fields: Any) -> SubmitOrder:
    return make_order(symbol, quote_bid="100", quote_ask="101", **fields)


async def _events(bus: Bus, symbol: str) -> list[OrderUpdate]:
    return decode_all(await stream_messages(bus.js, "RRR_EVT", subjects.order_event(symbol, 1)), order_event_decoder)


async def _positions(bus: Bus, symbol: str) -> list[PositionUpdated]:
    return decode_all(await stream_messages(bus.js, "RRR_EVT", subjects.position(symbol, 1)), order_event_decoder)


async def _until(bus: Bus, symbol: str, what: str, count: int = 1) -> list[OrderUpdate]:
    """Wait until ``symbol`` has ``count`` events of the kind ``what`` (a class name); return all its events."""
    found: list[OrderUpdate] = []

    async def _enough() -> bool:
        found[:] = await _events(bus, symbol)
        return sum(type(e).__name__ == what for e in found) >= count

    await wait_until(_enough, 10, f"{count} {what} of {symbol}", describe=lambda: [type(e).__name__ for e in found])
    return found


async def _matched(execution: RunningService, messages: int) -> None:
    await execution.wait_for_counter("market_messages", messages)


def _brief(event: OrderUpdate) -> tuple[object, ...]:
    if isinstance(event, OrderFilled):
        return ("filled", event.id, event.qty, event.price, event.open_qty, event.filled_qty, event.liquidity)
    if isinstance(event, OrderCanceled | OrderCancelRejected | OrderRejected):
        return (type(event).__name__, event.client_order_id, event.reason)
    return (type(event).__name__, event.id)


async def test_a_limit_order_rests_then_fills_partially_by_the_displayed_size_as_the_market_reaches_it(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("LIM")
    async with running_service(app.run, config, heartbeats) as execution:
        seq = await _quote(bus, symbol, "100", "101", 0)
        order = await _send(bus, _order(symbol, qty=5, order_type="limit", limit_price="100"), seq, 0)
        await _until(bus, symbol, "OrderAccepted")
        await _quote(bus, symbol, "99.5", "100.5", 1, ask_size="9")  # not there yet
        await _quote(bus, symbol, "99", "99.8", 2, ask_size="2")  # 2 of 5
        await _quote(bus, symbol, "99", "100", 3, ask_size="10")  # the other 3
        events = await _until(bus, symbol, "OrderFilled", 2)
        await _matched(execution, 4)

    assert [_brief(e) for e in events] == [
        ("OrderAccepted", f"{order.id}:accepted"),
        ("filled", f"{order.id}:1", D(2), D(100), D(3), D(2), "maker"),
        ("filled", f"{order.id}:2", D(3), D(100), D(0), D(5), "maker"),
    ]
    accepted, first, _ = events
    assert isinstance(accepted, OrderAccepted)
    assert (accepted.order_type, accepted.limit_price, accepted.quote_seq) == ("limit", D(100), seq)
    assert isinstance(first, OrderFilled)
    assert first.ts_event == T0 + 2 * SECOND  # the quote's time: event time, not when it was matched
    assert [(p.qty, p.avg_price) for p in await _positions(bus, symbol)] == [(D(2), D(100)), (D(5), D(100))]


async def test_stops_trigger_on_the_touch_gtd_expires_and_ioc_fok_post_only_end_as_their_rules_say(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("TIF")
    async with running_service(app.run, config, heartbeats):
        seq = await _quote(bus, symbol, "100", "101", 0, bid_size="1", ask_size="1")
        stop = await _send(bus, _order(symbol, qty=2, order_type="stop_market", stop_price="102"), seq, 0)
        gtd = await _send(
            bus,
            _order(symbol, qty=1, order_type="limit", limit_price="95", tif="gtd", expire_ts=T0 + 2 * SECOND),
            seq,
            0,
        )
        ioc = await _send(bus, _order(symbol, qty=3, order_type="limit", limit_price="101", tif="ioc"), seq, 0)
        fok = await _send(bus, _order(symbol, qty=3, order_type="limit", limit_price="101", tif="fok"), seq, 0)
        post = await _send(bus, _order(symbol, qty=1, order_type="limit", limit_price="101", post_only=True), seq, 0)
        await _until(bus, symbol, "OrderRejected")
        await _quote(bus, symbol, "101.5", "102", 1)
        await _quote(bus, symbol, "94", "94.5", 2)
        events = await _until(bus, symbol, "OrderExpired")

    by_order: dict[str, list[tuple[object, ...]]] = {}
    for event in events:
        by_order.setdefault(event.client_order_id, []).append(_brief(event))
    assert by_order[stop.id] == [
        ("OrderAccepted", f"{stop.id}:accepted"),
        ("OrderTriggered", f"{stop.id}:triggered"),
        ("filled", f"{stop.id}:1", D(2), D(102), D(0), D(2), "taker"),
    ]
    # Expired at the first quote at its expire time, though that quote would have filled it.
    assert by_order[gtd.id] == [("OrderAccepted", f"{gtd.id}:accepted"), ("OrderExpired", f"{gtd.id}:expired")]
    assert by_order[ioc.id] == [
        ("OrderAccepted", f"{ioc.id}:accepted"),
        ("filled", f"{ioc.id}:1", D(1), D(101), D(2), D(1), "taker"),
        ("OrderCanceled", ioc.id, "ioc: 2 not filled at once"),
    ]
    assert by_order[fok.id] == [
        ("OrderAccepted", f"{fok.id}:accepted"),
        ("OrderCanceled", fok.id, "fok: 1 available of 3"),
    ]
    assert by_order[post.id] == [
        ("OrderRejected", post.id, "post-only order would take liquidity: ask 101 <= limit 101"),
    ]


async def test_an_order_that_asks_for_what_its_type_does_not_carry_is_rejected_saying_why(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("BAD")
    async with running_service(app.run, config, heartbeats):
        seq = await _quote(bus, symbol, "100", "101", 0)
        no_price = await _send(bus, _order(symbol, order_type="limit"), seq, 0)
        unnamed = _order(symbol, order_type="limit", limit_price="99", strategy="other")
        await bus.publish_persistent(subjects.order_command(symbol, 1), unnamed)
        events = await _until(bus, symbol, "OrderRejected", 2)

    assert [_brief(e) for e in events] == [
        ("OrderRejected", no_price.id, "a limit order needs a limit_price"),
        (
            "OrderRejected",
            unnamed.id,
            "a limit order names the quote it was sent at (quote_seq): it is matched from there",
        ),
    ]


async def test_cancel_and_replace_by_client_order_id_and_each_refusal_is_an_event_with_its_reason(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("CXL")
    async with running_service(app.run, config, heartbeats):
        seq = await _quote(bus, symbol, "100", "101", 0)
        first = await _send(bus, _order(symbol, qty=4, order_type="limit", limit_price="98"), seq, 0)
        second = await _send(bus, _order(symbol, qty=1, order_type="limit", limit_price="97"), seq, 0)
        await _until(bus, symbol, "OrderAccepted", 2)
        replace = make_replace(first, qty=6, limit_price="99")
        cancel = make_cancel(second)
        foreign = make_cancel(first, strategy="intruder")
        unknown = make_cancel(make_order(symbol, id="never-sent"))
        for command in (replace, cancel, foreign, unknown):
            await bus.publish_persistent(subjects.order_command(symbol, 1), command)
        await _until(bus, symbol, "OrderCancelRejected", 2)
        again = make_cancel(second)
        await bus.publish_persistent(subjects.order_command(symbol, 1), again)
        await _until(bus, symbol, "OrderCancelRejected", 3)
        await _quote(bus, symbol, "98", "99", 1)  # reaches the replaced limit, not the old one
        events = await _until(bus, symbol, "OrderFilled")

    assert [_brief(e) for e in events[2:]] == [
        ("OrderReplaced", f"{first.id}:replaced:1"),
        ("OrderCanceled", second.id, "canceled by request"),
        ("OrderCancelRejected", first.id, f"order {first.id} is strategy test's, not intruder's"),
        ("OrderCancelRejected", "never-sent", "unknown order never-sent"),
        ("OrderCancelRejected", second.id, f"order {second.id} is canceled"),
        ("filled", f"{first.id}:1", D(6), D(99), D(0), D(6), "taker"),
    ]
    replaced = events[2]
    assert isinstance(replaced, OrderReplaced)
    assert (replaced.qty, replaced.limit_price, replaced.command_id) == (D(6), D(99), replace.id)
    canceled = events[3]
    assert isinstance(canceled, OrderCanceled)
    assert (canceled.command_id, canceled.filled_qty) == (cancel.id, D(0))


async def test_an_order_that_arrives_after_later_quotes_were_matched_is_matched_against_them_first(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("LATE")
    async with running_service(app.run, config, heartbeats) as execution:
        placed_at = await _quote(bus, symbol, "100", "101", 0)
        await _quote(bus, symbol, "99", "99.5", 1, ask_size="1")  # reaches a limit of 100: 1 of it
        await _quote(bus, symbol, "100", "101", 2)
        await _matched(execution, 3)
        # Sent at the first quote, handled after all three were matched (a strategy behind the market).
        order = await _send(bus, _order(symbol, qty=3, order_type="limit", limit_price="100"), placed_at, 0)
        events = await _until(bus, symbol, "OrderFilled")
        counters = await execution.wait_for_counter("orders_caught_up", 1)

    assert counters["orders_caught_up"] == 1
    assert [_brief(e) for e in events] == [
        ("OrderAccepted", f"{order.id}:accepted"),
        ("filled", f"{order.id}:1", D(1), D(100), D(2), D(1), "maker"),
    ]
    assert events[1].ts_event == T0 + SECOND


async def test_the_same_quotes_give_the_same_fills_whether_replayed_one_by_one_or_all_at_once(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    path = [("100", "101", None), ("99.6", "100.2", "0.5"), ("99", "99.9", "0.7"), ("101.9", "102.4", "3"),
            ("98", "98.1", "9"), ("100.4", "100.6", "2"), ("102.5", "103", "1")]  # fmt: skip

    async def _run(symbol: str, *, one_by_one: bool) -> list[tuple[object, ...]]:
        async with running_service(app.run, config, heartbeats) as execution:
            seq = await _quote(bus, symbol, "100", "101", 0)
            orders = [
                _order(symbol, id=f"{symbol}-a", qty=2, order_type="limit", limit_price="100"),
                _order(symbol, id=f"{symbol}-b", qty=1, order_type="stop_limit", stop_price="102", limit_price="102.2"),
                _order(symbol, id=f"{symbol}-c", side="sell", qty=3, order_type="limit", limit_price="100.5"),
                _order(symbol, id=f"{symbol}-d", qty=1, order_type="limit", limit_price="99", tif="gtd",
                       expire_ts=T0 + 4 * SECOND),
            ]  # fmt: skip
            for order in orders:
                await _send(bus, order, seq, 0)
            await _until(bus, symbol, "OrderAccepted", len(orders))
            for n, (bid, ask, size) in enumerate(path[1:], start=1):
                await _quote(bus, symbol, bid, ask, n, bid_size=size, ask_size=size)
                if one_by_one:
                    await _matched(execution, n + 1)
            # Every order ends by the fifth quote: a in two fills, b and c in one, d expired.
            await _until(bus, symbol, "OrderFilled", 4)
            await _until(bus, symbol, "OrderExpired")
        return [(e.id.removeprefix(symbol), e.ts_event, *_brief(e)[2:]) for e in await _events(bus, symbol)]

    slow = await _run(unique_symbol("SLOW"), one_by_one=True)
    fast = await _run(unique_symbol("FAST"), one_by_one=False)
    assert slow == fast
    assert [e[0] for e in slow] == [
        "-a:accepted", "-b:accepted", "-c:accepted", "-d:accepted", "-a:1", "-b:triggered", "-c:1", "-a:2",
        "-b:1", "-d:expired",
    ]  # fmt: skip


async def test_open_orders_come_back_exactly_after_a_restart_from_the_snapshot_or_from_the_events_alone(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("RST")
    async with running_service(app.run, config, heartbeats) as before:
        seq = await _quote(bus, symbol, "100", "101", 0)
        limit = await _send(bus, _order(symbol, qty=5, order_type="limit", limit_price="100"), seq, 0)
        stop = await _send(
            bus, _order(symbol, qty=1, order_type="stop_limit", stop_price="103", limit_price="102"), seq, 0
        )
        await _until(bus, symbol, "OrderAccepted", 2)
        await _quote(bus, symbol, "99", "99.5", 1, ask_size="2")  # 2 of the limit
        await _quote(bus, symbol, "103", "103.5", 2)  # triggers the stop, above its limit: it rests
        await _until(bus, symbol, "OrderTriggered")
        await _matched(before, 2)
    # Its last snapshot holds both open orders, the partial fill and the trigger; then a restart without it.
    for from_snapshot in (True, False):
        if not from_snapshot:
            await bus.js.purge_stream("RRR_SNAPSHOTS", subject=f"snap.{snapshots.name(0, 1)}.>")
        async with running_service(app.run, config, heartbeats) as after:
            counters = after.counters()
            assert counters["open_orders"] == 2
            assert counters.get("restored_events", 0) == (0 if from_snapshot else 4)
    async with running_service(app.run, config, heartbeats) as after:
        await _quote(bus, symbol, "99", "99.8", 3, ask_size="10")  # the limit's other 3 and the stop-limit's 1
        events = await _until(bus, symbol, "OrderFilled", 3)
        await after.wait_for_counters(lambda c: c.get("open_orders") == 0, "no open order")

    assert [_brief(e) for e in events] == [
        ("OrderAccepted", f"{limit.id}:accepted"),
        ("OrderAccepted", f"{stop.id}:accepted"),
        ("filled", f"{limit.id}:1", D(2), D(100), D(3), D(2), "maker"),
        ("OrderTriggered", f"{stop.id}:triggered"),
        ("filled", f"{limit.id}:2", D(3), D(100), D(0), D(5), "maker"),
        ("filled", f"{stop.id}:1", D(1), D(102), D(0), D(1), "maker"),
    ]
    assert (await _positions(bus, symbol))[-1].qty == D(6)


async def test_an_arrival_a_crash_cut_short_is_completed_at_start_and_its_command_not_handled_again(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("CUT")
    seq = await _quote(bus, symbol, "100", "101", 0, bid_size="1", ask_size="1")
    order = _order(symbol, qty=3, order_type="limit", limit_price="101", tif="ioc")
    order = msgspec.structs.replace(order, quote_seq=seq, quote_ts=T0, ts_event=T0)
    # What a crash leaves: the acceptance stored, the fill and the cancel of the rest not, the command not
    # covered by any snapshot (so it comes again).
    scratch = handlers.Book(limits=RiskLimits(D(1000), D(10**7)), venue=PaperVenue(), shards=1)
    quote = make_quote(symbol, bid="100", ask="101", ts_event=T0, bid_size="1", ask_size="1")
    reports = scratch.venue.submit(handlers.working_order(order, (seq, 0)), touch_of(quote, (seq, 0)))
    [accepted, *_] = handlers.emit(scratch, bus, reports, now=time.time_ns())
    await bus.js.publish(accepted.subject, accepted.data, headers=accepted.headers)
    await bus.publish_persistent(subjects.order_command(symbol, 1), order)

    async with running_service(app.run, config, heartbeats) as execution:
        counters = await execution.wait_for_counter("duplicate_orders", 1)
        events = await _events(bus, symbol)

    assert counters.get("orders_filled", 0) == 0
    assert [_brief(e) for e in events] == [
        ("OrderAccepted", f"{order.id}:accepted"),
        ("filled", f"{order.id}:1", D(1), D(101), D(2), D(1), "taker"),
        ("OrderCanceled", order.id, "ioc: 2 not filled at once"),
    ]
    assert [p.qty for p in await _positions(bus, symbol)] == [D(1)]


async def test_a_market_order_is_accepted_and_filled_as_before_order_types(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("MKT")
    async with running_service(app.run, config, heartbeats):
        seq = await _quote(bus, symbol, "100", "101", 0, bid_size="1", ask_size="1")
        order = await _send(bus, _order(symbol, qty=3), seq, 0)
        events = await _until(bus, symbol, "OrderFilled")

    raw = [msgspec.msgpack.decode(m.data) for m in await stream_messages(bus.js, "RRR_EVT", f"evt.*.0.{symbol}")]
    # Nothing added on the wire: the whole quantity at the touch, whatever the displayed size.
    assert [sorted(r) for r in raw] == [
        sorted(["type", "id", "ts_event", "ts_init", "client_order_id", "strategy", "symbol", "side", "qty"]),
        sorted(["type", "id", "ts_event", "ts_init", "client_order_id", "symbol", "side", "qty", "price", "fee",
                "venue"]),
        sorted(["type", "id", "ts_event", "ts_init", "symbol", "qty", "avg_price", "realized_pnl", "version",
                "exact_avg_price", "exact_realized_pnl"]),
    ]  # fmt: skip
    assert [_brief(e) for e in events] == [
        ("OrderAccepted", f"{order.id}:accepted"),
        ("filled", f"{order.id}:1", D(3), D(101), D(0), D(3), "taker"),
    ]


async def test_an_order_naming_a_quote_from_before_execution_started_is_matched_against_the_quotes_after_it(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("EARLY")
    placed_at = await _quote(bus, symbol, "100", "101", 0)
    await _quote(bus, symbol, "99", "99.5", 1, ask_size="2")  # before execution runs: read back for the order
    async with running_service(app.run, config, heartbeats) as execution:
        order = await _send(bus, _order(symbol, qty=3, order_type="limit", limit_price="100"), placed_at, 0)
        await _quote(bus, symbol, "99", "99.8", 2, ask_size="5")  # after: matched as it comes
        events = await _until(bus, symbol, "OrderFilled", 2)
        await execution.wait_for_counter("orders_caught_up", 1)

    assert [_brief(e) for e in events] == [
        ("OrderAccepted", f"{order.id}:accepted"),
        ("filled", f"{order.id}:1", D(2), D(100), D(1), D(2), "maker"),
        ("filled", f"{order.id}:2", D(1), D(100), D(0), D(3), "maker"),
    ]
