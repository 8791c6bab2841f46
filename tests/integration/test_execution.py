"""The execution service against a real nats-server: risk, fills at the touch, positions, duplicates, restart."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

import msgspec
import nats.js.errors
import pytest

from rrr.execution import app, handlers, market, snapshots
from rrr.execution.config import ExecutionConfig
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.restore import restore
from rrr.execution.risk import RiskLimits
from rrr.shared import subjects
from rrr.shared.bus import DLQ_REASON, MARKET_DATA_STREAM, MSG_ID, Bus, Outgoing, pack
from rrr.shared.errors import FatalError
from rrr.shared.messages import (
    ID_MAX,
    ORDER_ID_MAX,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    PositionUpdated,
    QuoteBatch,
    QuoteRow,
    SubmitOrder,
    encode,
    order_event_decoder,
)
from tests.support.factories import (
    make_order,
    make_order_accepted,
    make_order_filled,
    make_position,
    unique_symbol,
)
from tests.support.orders import publish_quote_of, submit_priced
from tests.support.services import Heartbeats, running_service
from tests.support.streams import count, decode_all, stream_messages


@pytest.fixture
def config(nats_url: str) -> ExecutionConfig:
    return ExecutionConfig(
        nats_url=nats_url, heartbeat_ms=100, max_order_qty=Decimal(10), max_notional_quote=Decimal(1000)
    )


async def _submit(bus: Bus, *orders: SubmitOrder) -> list[SubmitOrder]:
    """Send orders as the strategy does: each quote in the market-data stream first, then the order."""
    return await submit_priced(bus, *orders)


async def _submit_again(bus: Bus, order: SubmitOrder) -> None:
    """Publish the same command bytes under another Nats-Msg-Id, so that JetStream stores it a second time."""
    ack = await bus.js.publish(
        subjects.order_command(order.symbol, 1), encode(order), headers={MSG_ID: f"{order.id}:again"}
    )
    assert not ack.duplicate


async def _order_events(bus: Bus, symbol: str) -> list[OrderAccepted | OrderRejected | OrderFilled]:
    return decode_all(await stream_messages(bus.js, "RRR_EVT", subjects.order_event(symbol, 1)), order_event_decoder)


async def _positions(bus: Bus, symbol: str) -> list[PositionUpdated]:
    return decode_all(await stream_messages(bus.js, "RRR_EVT", subjects.position(symbol, 1)), order_event_decoder)


def _summary(event: object) -> tuple[object, ...]:
    if isinstance(event, OrderAccepted):
        return ("accepted", event.id, event.client_order_id, event.side, event.qty)
    if isinstance(event, OrderRejected):
        return ("rejected", event.id, event.client_order_id, event.side, event.qty, event.reason)
    if isinstance(event, OrderFilled):
        return ("filled", event.id, event.client_order_id, event.side, event.qty, event.price, event.fee, event.venue)
    if isinstance(event, PositionUpdated):
        return ("position", event.id, event.qty, event.avg_price, event.realized_pnl, event.version)
    raise AssertionError(f"unexpected event {event!r}")


async def test_execution_fills_orders_at_the_touch_and_keeps_an_average_cost_position(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("EXE")
    buy = make_order(symbol, side="buy", qty=2, quote_bid="100.0", quote_ask="100.5")
    add = make_order(symbol, side="buy", qty=1, quote_bid="103.0", quote_ask="103.5")
    flip = make_order(symbol, side="sell", qty=4, quote_bid="110", quote_ask="110.5")
    await _submit(bus, buy, add, flip)

    async with running_service(app.run, config, heartbeats) as execution:
        counters = await execution.wait_for_counter("handled", 3)

    assert counters["orders_filled"] == 3
    assert counters.get("orders_rejected", 0) == 0
    assert counters["positions"] == 1
    assert [_summary(e) for e in await _order_events(bus, symbol)] == [
        ("accepted", f"{buy.id}:accepted", buy.id, "buy", Decimal(2)),
        ("filled", f"{buy.id}:1", buy.id, "buy", Decimal(2), Decimal("100.5"), Decimal(0), "paper"),
        ("accepted", f"{add.id}:accepted", add.id, "buy", Decimal(1)),
        ("filled", f"{add.id}:1", add.id, "buy", Decimal(1), Decimal("103.5"), Decimal(0), "paper"),
        ("accepted", f"{flip.id}:accepted", flip.id, "sell", Decimal(4)),
        ("filled", f"{flip.id}:1", flip.id, "sell", Decimal(4), Decimal("110"), Decimal(0), "paper"),
    ]
    # avg (2 * 100.5 + 103.5) / 3 = 101.5; selling 4 at 110 closes 3 for (110 - 101.5) * 3 = 25.5 and opens
    # a short of 1 at 110.
    assert [_summary(p) for p in await _positions(bus, symbol)] == [
        ("position", f"{symbol}:1", Decimal(2), Decimal("100.5"), Decimal(0), 1),
        ("position", f"{symbol}:2", Decimal(3), Decimal("101.5"), Decimal(0), 2),
        ("position", f"{symbol}:3", Decimal(-1), Decimal(110), Decimal("25.5"), 3),
    ]


async def test_execution_rejects_orders_over_a_risk_limit_with_the_reason_and_fills_none_of_them(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("RISK")
    too_big = make_order(symbol, side="buy", qty=11, quote_bid="1", quote_ask="1.01")
    too_costly = make_order(symbol, side="buy", qty=5, quote_bid="199", quote_ask="200.01")
    # A sell is valued at the bid: 5 * 199.9 = 999.5 passes, although 5 * 250 at the ask would not.
    sell_at_bid = make_order(symbol, side="sell", qty=5, quote_bid="199.9", quote_ask="250")
    at_the_limit = make_order(symbol, side="buy", qty=10, quote_bid="99", quote_ask="100")
    await _submit(bus, too_big, too_costly, sell_at_bid, at_the_limit)

    async with running_service(app.run, config, heartbeats) as execution:
        counters = await execution.wait_for_counter("handled", 4)

    assert counters["orders_rejected"] == 2
    assert counters["orders_filled"] == 2
    assert [_summary(e) for e in await _order_events(bus, symbol)] == [
        (
            "rejected",
            f"{too_big.id}:rejected",
            too_big.id,
            "buy",
            Decimal(11),
            "qty 11 exceeds max_order_qty 10",
        ),
        (
            "rejected",
            f"{too_costly.id}:rejected",
            too_costly.id,
            "buy",
            Decimal(5),
            "notional 1000.05 exceeds max_notional_quote 1000",
        ),
        ("accepted", f"{sell_at_bid.id}:accepted", sell_at_bid.id, "sell", Decimal(5)),
        ("filled", f"{sell_at_bid.id}:1", sell_at_bid.id, "sell", Decimal(5), Decimal("199.9"), Decimal(0), "paper"),
        ("accepted", f"{at_the_limit.id}:accepted", at_the_limit.id, "buy", Decimal(10)),
        ("filled", f"{at_the_limit.id}:1", at_the_limit.id, "buy", Decimal(10), Decimal(100), Decimal(0), "paper"),
    ]
    # Short 5 at 199.9, then buy 10 at 100: closes 5 for (100 - 199.9) * 5 * -1 = 499.5 and opens 5 long.
    assert [_summary(p) for p in await _positions(bus, symbol)] == [
        ("position", f"{symbol}:1", Decimal(-5), Decimal("199.9"), Decimal(0), 1),
        ("position", f"{symbol}:2", Decimal(5), Decimal(100), Decimal("499.5"), 2),
    ]


async def test_execution_with_the_same_client_order_id_twice_in_the_stream_fills_it_once(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("DUP")
    [order] = await _submit(bus, make_order(symbol, side="buy", qty=3, quote_bid="10", quote_ask="10.5"))
    await _submit_again(bus, order)
    assert await count(bus.js, "RRR_CMD", subjects.order_command(symbol, 1)) == 2

    async with running_service(app.run, config, heartbeats) as execution:
        counters = await execution.wait_for_counter("handled", 2)

    assert counters["duplicate_orders"] == 1
    assert counters["orders_filled"] == 1
    assert [_summary(e) for e in await _order_events(bus, symbol)] == [
        ("accepted", f"{order.id}:accepted", order.id, "buy", Decimal(3)),
        ("filled", f"{order.id}:1", order.id, "buy", Decimal(3), Decimal("10.5"), Decimal(0), "paper"),
    ]
    assert [_summary(p) for p in await _positions(bus, symbol)] == [
        ("position", f"{symbol}:1", Decimal(3), Decimal("10.5"), Decimal(0), 1),
    ]


async def test_execution_after_a_restart_continues_from_the_restored_position_and_never_fills_an_old_order_again(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("RST")
    first, rejected = await _submit(
        bus,
        make_order(symbol, side="buy", qty=2, quote_bid="100", quote_ask="100.5"),
        make_order(symbol, side="buy", qty=50, quote_bid="1", quote_ask="1"),
    )
    async with running_service(app.run, config, heartbeats) as before:
        await before.wait_for_counter("handled", 2)
    # Execution owns its position in RRR_CMD (its snapshot holds it): no durable consumer tracks it.
    with pytest.raises(nats.js.errors.NotFoundError):
        await bus.js.consumer_info("RRR_CMD", "execution-0")

    second = make_order(symbol, side="sell", qty=1, quote_bid="104", quote_ask="104.5")
    await _submit_again(bus, first)
    await _submit_again(bus, rejected)
    await _submit(bus, second)
    async with running_service(app.run, config, heartbeats) as after:
        counters = await after.wait_for_counter("handled", 3)

    assert (counters["positions"], counters["orders"]) == (1, 3)
    assert counters["duplicate_orders"] == 2
    assert counters["orders_filled"] == 1
    events = [_summary(e) for e in await _order_events(bus, symbol)]
    assert [e[:3] for e in events] == [
        ("accepted", f"{first.id}:accepted", first.id),
        ("filled", f"{first.id}:1", first.id),
        ("rejected", f"{rejected.id}:rejected", rejected.id),
        ("accepted", f"{second.id}:accepted", second.id),
        ("filled", f"{second.id}:1", second.id),
    ]
    # Restored long 2 at 100.5; selling 1 at 104 realizes 3.5 and is the position's second fill.
    assert [_summary(p) for p in await _positions(bus, symbol)] == [
        ("position", f"{symbol}:1", Decimal(2), Decimal("100.5"), Decimal(0), 1),
        ("position", f"{symbol}:2", Decimal(1), Decimal("100.5"), Decimal("3.5"), 2),
    ]


async def test_a_batchs_positions_are_one_message_and_a_restart_publishes_none_of_them_again(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol, other = unique_symbol("PENV"), unique_symbol("PENV")
    orders = [
        make_order(symbol, side="buy", qty=1, quote_bid="99.5", quote_ask="100"),
        make_order(symbol, side="buy", qty=2, quote_bid="100.5", quote_ask="101"),
        make_order(other, side="sell", qty=1, quote_bid="50", quote_ask="50.5"),
    ]
    named = [await publish_quote_of(bus, order) for order in orders]
    # As the strategy sends a batch's orders: one envelope, so execution handles them as one batch.
    (envelope,) = pack(
        [Outgoing(subjects.order_command(o.symbol, 1), encode(o), {MSG_ID: o.id}) for o in named], 64 * 1024
    )
    await bus.js.publish(envelope.subject, envelope.data, headers=envelope.headers)
    async with running_service(app.run, config, heartbeats) as first:
        await first.wait_for_counter("handled", 3)

    # Three positions, each fill's, in one message after the events' own.
    stored = await stream_messages(bus.js, "RRR_EVT", "evt.*.0.*", open_envelopes=False)
    assert [m.subject for m in stored] == ["evt.order.0._batch", "evt.position.0._batch"]
    assert [(p.qty, p.avg_price, p.version) for p in await _positions(bus, symbol)] == [
        (Decimal(1), Decimal(100), 1),
        (Decimal(3), Decimal("100.666666666667"), 2),
    ]
    assert [(p.qty, p.version) for p in await _positions(bus, other)] == [(Decimal(-1), 1)]

    # Restarted from its snapshot, then from the whole stream: every position is known as published.
    for snapshot in (True, False):
        if not snapshot:
            await bus.js.purge_stream("RRR_SNAPSHOTS", subject=f"snap.{snapshots.name(0, 1)}.>")
        async with running_service(app.run, config, heartbeats) as again:
            counters = await again.wait_for_counter("positions", 2)
        assert counters["restored_events"] == (0 if snapshot else 6)
        assert counters.get("positions_republished", 0) == 0
    assert len(await stream_messages(bus.js, "RRR_EVT", "evt.position.0.*", open_envelopes=False)) == 1


async def test_execution_after_a_restart_realizes_the_same_pnl_as_an_uninterrupted_run(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("EXACT")
    # Average cost (100 + 2 * 100.01) / 3 = 100.00666..., not a terminating decimal.
    await _submit(
        bus,
        make_order(symbol, side="buy", qty=1, quote_bid="99.99", quote_ask="100"),
        make_order(symbol, side="buy", qty=2, quote_bid="100", quote_ask="100.01"),
    )
    async with running_service(app.run, config, heartbeats) as before:
        await before.wait_for_counter("handled", 2)

    await _submit(bus, make_order(symbol, side="sell", qty=3, quote_bid="101", quote_ask="101.01"))
    async with running_service(app.run, config, heartbeats) as after:
        await after.wait_for_counter("handled", 1)

    positions = await _positions(bus, symbol)
    # Uninterrupted: 3 * 101 - (100 + 200.02) = 2.98 exactly.
    assert (positions[-1].qty, positions[-1].realized_pnl, positions[-1].version) == (Decimal(0), Decimal("2.98"), 3)


async def test_execution_never_fills_an_unknown_order_older_than_the_newest_of_its_strategy_and_symbol(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("LATE")
    late = make_order(symbol, side="buy", qty=1)  # made first: the older event time
    newest = make_order(symbol, side="buy", qty=2)
    other_strategy = make_order(symbol, side="sell", qty=1, strategy="other")
    await _submit(bus, newest)
    async with running_service(app.run, config, heartbeats) as before:
        await before.wait_for_counter("handled", 1)

    # After a restart, which rebuilds the watermarks from the event stream: a command of the same strategy
    # and symbol from before the newest one handled (a late copy, at any distance in time) is never filled;
    # another strategy's orders on the symbol have watermarks of their own.
    await _submit(bus, late, other_strategy)
    async with running_service(app.run, config, heartbeats) as after:
        counters = await after.wait_for_counter("handled", 2)

    assert counters["stale_orders"] == 1
    assert counters["orders_filled"] == 1
    events = [_summary(e)[:3] for e in await _order_events(bus, symbol)]
    assert events == [
        ("accepted", f"{newest.id}:accepted", newest.id),
        ("filled", f"{newest.id}:1", newest.id),
        ("accepted", f"{other_strategy.id}:accepted", other_strategy.id),
        ("filled", f"{other_strategy.id}:1", other_strategy.id),
    ]
    # Order events carry the order's event time; ts_init is when execution handled it.
    accepted = next(e for e in await _order_events(bus, symbol) if isinstance(e, OrderAccepted))
    assert accepted.ts_event == newest.ts_event < accepted.ts_init


@pytest.mark.parametrize("bad_id", ["nl-order\n", "o" * ID_MAX])
async def test_execution_dead_letters_an_order_whose_id_would_make_events_that_do_not_decode(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats, bad_id: str
) -> None:
    symbol = unique_symbol("IDS")
    bad = make_order(symbol, id=bad_id)
    longest = make_order(symbol, id="o" * ORDER_ID_MAX)
    await bus.js.publish(subjects.order_command(symbol, 1), encode(bad), headers={MSG_ID: "bad-id"})
    await _submit(bus, longest)

    async with running_service(app.run, config, heartbeats) as execution:
        counters = await execution.wait_for_counter("handled", 1)

    assert (counters["malformed"], counters["orders_filled"]) == (1, 1)
    # The longest id that is accepted still leaves room for every event id execution derives from it.
    assert [_summary(e)[:3] for e in await _order_events(bus, symbol)] == [
        ("accepted", f"{longest.id}:accepted", longest.id),
        ("filled", f"{longest.id}:1", longest.id),
    ]
    (letter,) = await stream_messages(bus.js, "RRR_DLQ", subjects.dead_letter(subjects.order_command(symbol, 1)))
    assert letter.headers["Rrr-Dlq-Reason"].startswith("decode: ")


async def test_execution_refuses_to_start_when_one_of_its_own_events_does_not_decode(
    config: ExecutionConfig, bus: Bus
) -> None:
    symbol = unique_symbol("RES")
    order = make_order(symbol)
    fill = make_order_filled(order)
    await bus.publish_persistent(subjects.order_event(symbol, 1), make_order_accepted(order))
    broken = await bus.js.publish(subjects.order_event(symbol, 1), encode(fill)[:-3])
    await bus.publish_persistent(subjects.position(symbol, 1), make_position(symbol))

    # Skipping it would forget the fill and its position, and issue their ids again.
    with pytest.raises(FatalError, match=rf"evt\.order\.0\.{symbol}.*sequence {broken.seq}"):
        await asyncio.wait_for(app.run(config, asyncio.Event()), timeout=30)


async def test_execution_beyond_its_symbol_cap_dead_letters_each_new_symbols_orders_and_never_grows(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    config = msgspec.structs.replace(config, max_symbols=2)
    first, second, third, fourth = (unique_symbol(f"CAP{i}") for i in range(4))
    await _submit(bus, make_order(first), make_order(second, side="sell"), make_order(third), make_order(first))
    async with running_service(app.run, config, heartbeats) as execution:
        counters = await execution.wait_for_counters(
            lambda c: c.get("handled", 0) == 3 and c.get("dead_lettered", 0) == 1, "3 handled, 1 refused"
        )
    assert (counters["symbols"], counters["positions"], counters["symbols_refused"]) == (2, 2, 1)
    assert await _order_events(bus, third) == []
    [letter] = await stream_messages(bus.js, "RRR_DLQ", f"dlq.{subjects.order_command(third, 1)}")
    assert letter.headers[DLQ_REASON].startswith(
        f"execution: symbol {third} refused: expected at most 2 symbols per instance "
        "(--max-symbols, RRR_EXECUTION_MAX_SYMBOLS), and this instance holds 2 already"
    )

    # Restarted, it holds the same two symbols: a fourth is refused as well, the first two still trade.
    await _submit(bus, make_order(fourth), make_order(second, side="sell"))
    async with running_service(app.run, config, heartbeats) as execution:
        counters = await execution.wait_for_counters(
            lambda c: c.get("handled", 0) == 1 and c.get("dead_lettered", 0) == 1, "1 handled, 1 refused"
        )
    assert (counters["symbols"], counters["positions"]) == (2, 2)
    assert await _order_events(bus, fourth) == []
    assert [p.qty for p in await _positions(bus, second)] == [Decimal(-1), Decimal(-2)]


def _book(config: ExecutionConfig) -> handlers.Book:
    return handlers.Book(
        limits=RiskLimits(max_order_qty=config.max_order_qty, max_notional_quote=config.max_notional_quote),
        venue=PaperVenue(),
        shards=1,
    )


def _state(book: handlers.Book) -> tuple[object, ...]:
    positions = {s: (p.qty, p.avg_price, p.realized_pnl, p.fills) for s, p in book.positions.items()}
    return positions, list(book.orders.items()), {k: (m.ts, m.ids) for k, m in book.watermarks.items()}, book.symbols


async def test_execution_restarted_reads_only_the_events_after_its_snapshot_and_ends_where_a_full_read_does(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol, other = unique_symbol("SNAP"), unique_symbol("SNAP")
    # 21 bought of ``symbol``: an average price in 1/7ths, no terminating decimal, which must stay exact.
    first = [
        make_order(symbol if i % 2 else other, side="buy", qty=3 if i == 1 else 2, quote_ask=f"100.{i:02d}")
        for i in range(20)
    ]
    await _submit(bus, *first)
    async with running_service(app.run, config, heartbeats) as before:
        await before.wait_for_counter("handled", 20)
    # Stopped: its last snapshot covers the 40 events of those orders. Then the last batch of an instance
    # that crashed before saving again: events stored after the snapshot, commands not acknowledged.
    late = [make_order(symbol, side="sell", qty=2, quote_bid="101.37", quote_ask="101.38") for _ in range(3)]
    late = [await publish_quote_of(bus, order) for order in late]
    for order in late:
        scratch = _book(config)
        quote = await market.price(bus, order, shards=1)
        for outgoing in handlers.on_submit_order(scratch, bus, order, quote)[:2]:  # accepted, filled
            await bus.js.publish(outgoing.subject, outgoing.data, headers=outgoing.headers)
    for order in late:
        await bus.publish_persistent(subjects.order_command(order.symbol, 1), order)

    async with running_service(app.run, config, heartbeats) as after:
        counters = await after.wait_for_counter("handled", 3)

    assert counters["restored_events"] == 6
    assert counters["duplicate_orders"] == 3
    # The position update the crash left unpublished is published now, from the snapshot and those 6 events.
    assert (await _positions(bus, symbol))[-1].version == 13
    # Whatever the snapshot holds, a restore from the whole stream ends in the same state.
    from_snapshot = _book(config)
    assert await restore(from_snapshot, bus, 0, asyncio.Event()) > 0
    assert from_snapshot.counters.restored_events == 0
    await bus.js.purge_stream("RRR_SNAPSHOTS", subject=f"snap.{snapshots.name(0, 1)}.>")
    from_history = _book(config)
    assert await restore(from_history, bus, 0, asyncio.Event()) == 0
    assert from_history.counters.restored_events == 46
    assert _state(from_snapshot) == _state(from_history)
    assert from_snapshot.positions[symbol].avg_price.denominator % 7 == 0


async def test_execution_with_its_event_stream_full_waits_then_fills_every_order_once_space_returns(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    # The smallest budget: RRR_EVT gets 4 MiB, filled here by someone else's events.
    config = msgspec.structs.replace(config, store_max_bytes=32 * 1024 * 1024)
    await bus.ensure_streams(max_age_s=config.stream_max_age_s, limits=config.store_limits())
    ballast = f"evt.ballast.0.{unique_symbol('BALLAST')}"
    with contextlib.suppress(nats.js.errors.ServiceUnavailableError):
        while True:
            await bus.js.publish(ballast, b"b" * 60_000)
    with contextlib.suppress(nats.js.errors.ServiceUnavailableError):
        while True:
            await bus.js.publish(ballast, b"")
    symbol = unique_symbol("FULL")
    orders = [make_order(symbol, side="buy", qty=1), make_order(symbol, side="sell", qty=3)]
    await _submit(bus, *orders)

    async with running_service(app.run, config, heartbeats) as execution:
        await execution.wait_for_counter("store_full", 1)
        assert await _order_events(bus, symbol) == []
        await bus.js.purge_stream("RRR_EVT", subject=ballast)
        counters = await execution.wait_for_counter("handled", 2)

    assert counters["orders_filled"] == 2
    assert [_summary(e)[:3] for e in await _order_events(bus, symbol)] == [
        ("accepted", f"{orders[0].id}:accepted", orders[0].id),
        ("filled", f"{orders[0].id}:1", orders[0].id),
        ("accepted", f"{orders[1].id}:accepted", orders[1].id),
        ("filled", f"{orders[1].id}:1", orders[1].id),
    ]
    assert [p.qty for p in await _positions(bus, symbol)] == [Decimal(1), Decimal(-2)]


async def test_execution_fills_at_the_quote_it_reads_from_the_market_data_stream_never_at_the_orders_prices(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol, other = unique_symbol("PX"), unique_symbol("PXO")
    honest = make_order(symbol, side="buy", qty=1, quote_bid="100", quote_ask="100.5")
    [named] = await _submit(bus, honest)
    # The same quote, but the order says the market was at 0.000000000001: it fills at 100.5 all the same.
    forged = msgspec.structs.replace(
        make_order(symbol, side="buy", qty=1, quote_ts=honest.quote_ts),
        quote_seq=named.quote_seq,
        quote_bid=Decimal("0.000000000001"),
        quote_ask=Decimal("0.000000000001"),
    )
    # Orders naming a quote that is not theirs: another symbol's, at another time, or none at all.
    [other_quote] = await _submit(bus, make_order(other, side="buy", qty=1))
    wrong_symbol = msgspec.structs.replace(make_order(symbol, strategy="b"), quote_seq=other_quote.quote_seq)
    wrong_time = msgspec.structs.replace(make_order(symbol, strategy="c"), quote_seq=named.quote_seq)
    missing = msgspec.structs.replace(make_order(symbol, strategy="d"), quote_seq=10**9)
    # Without quote_seq (an older sender): the symbol's latest quote in the stream.
    latest = make_order(symbol, side="sell", qty=1, strategy="e", quote_bid="1", quote_ask="1")
    for order in (forged, wrong_symbol, wrong_time, missing, latest):
        await bus.publish_persistent(subjects.order_command(symbol, 1), order)

    async with running_service(app.run, config, heartbeats) as execution:
        counters = await execution.wait_for_counter("handled", 7)

    assert counters["unpriced_orders"] == 3
    events = {e.client_order_id: e for e in await _order_events(bus, symbol) if not isinstance(e, OrderAccepted)}
    assert isinstance(events[forged.id], OrderFilled)
    assert events[forged.id].price == Decimal("100.5")
    assert isinstance(events[latest.id], OrderFilled)
    assert events[latest.id].price == Decimal(100)  # a sell, at the bid of the latest quote
    reasons = {o.id: getattr(events[o.id], "reason", "") for o in (wrong_symbol, wrong_time, missing)}
    assert reasons[wrong_symbol.id].startswith(f"no market price: RRR_MD sequence {other_quote.quote_seq} is on ")
    assert reasons[wrong_time.id].startswith("no market price: the order's quote is at ")
    assert reasons[missing.id] == (
        "no market price: no quote at sequence 1000000000 in RRR_MD (expired, or never published)"
    )


async def test_an_order_without_its_quote_named_fills_at_the_newest_quote_even_when_it_travelled_in_a_batch(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("NEWEST")
    # An older single quote of the symbol in the stream ...
    [named] = await _submit(bus, make_order(symbol, side="buy", qty=1, quote_bid="100", quote_ask="100.5"))
    async with running_service(app.run, config, heartbeats) as execution:
        # ... and, once execution follows the market data, a newer one in a batch.
        row = QuoteRow(f"{symbol}:newest", symbol, named.quote_ts + 1_000, 1_200_000, 1_200_500, 4)
        batch = QuoteBatch(id=f"{row.id}-b", ts_event=row.ts_event, ts_init=row.ts_event, source="replay", quotes=[row])
        await bus.publish_persistent(subjects.quote_batch(0, "replay"), batch)
        await execution.wait_for_counters(lambda c: c.get("market_messages_held", 0) >= 1, "the batch followed")
        unnamed = make_order(symbol, side="buy", qty=1, strategy="older", quote_bid="1", quote_ask="1")
        await bus.publish_persistent(subjects.order_command(symbol, 1), unnamed)
        await execution.wait_for_counter("orders_filled", 2)

    fills = {e.client_order_id: e for e in await _order_events(bus, symbol) if isinstance(e, OrderFilled)}
    assert fills[unnamed.id].price == Decimal("120.05")  # the batch's ask, not the older single quote's 100.5


async def test_pricing_a_backlog_reads_each_quote_once_however_small_the_cache(bus: Bus) -> None:
    # A backlog's batch of orders names more quotes than the cache keeps: each is read from the stream once,
    # and no order asks for its quote again (the requests of a backlog once filled the connection).
    symbol = unique_symbol("BACKLOG")
    orders = [
        await publish_quote_of(
            bus, make_order(symbol, side="buy", qty=1, quote_bid=str(100 + n), quote_ask=str(101 + n))
        )
        for n in range(100)
    ]
    requests = 0

    async def _count(_: object) -> None:
        nonlocal requests
        requests += 1

    sub = await bus.nc.subscribe(f"$JS.API.STREAM.MSG.GET.{MARKET_DATA_STREAM.name}", cb=_count)
    try:
        priced = await market.prices(bus, orders, 1, cache=market.new_cache(max_quotes=4), copy=None)
        await bus.nc.flush()
    finally:
        await sub.unsubscribe()
    assert requests == len(orders)
    assert [priced[order.id].ask for order in orders] == [Decimal(101 + n) for n in range(100)]  # type: ignore[union-attr]
