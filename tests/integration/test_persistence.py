"""The persistence service against real nats-server and PostgreSQL: every message stored exactly once."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import asyncpg
import msgspec
import nats.js.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from rrr.persistence import app
from rrr.persistence.config import PersistenceConfig
from rrr.persistence.schema import migrate
from rrr.shared import subjects
from rrr.shared.bus import DLQ_DELIVERIES, DLQ_REASON, DLQ_SERVICE, DLQ_SUBJECT, MSG_ID, Bus
from rrr.shared.fixed import to_decimal
from rrr.shared.messages import (
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderReplaced,
    OrderTriggered,
    OrderUpdate,
    PositionUpdated,
    Quote,
    QuoteBatch,
    QuoteRow,
    Side,
    Signal,
    Trade,
    encode,
    market_data_decoder,
)
from rrr.shared.positions import Position
from tests.support.factories import (
    make_order,
    make_order_accepted,
    make_order_filled,
    make_order_rejected,
    make_position,
    make_quote,
    make_signal,
    make_trade,
    unique_id,
    unique_symbol,
)
from tests.support.services import Heartbeats, running_service
from tests.support.streams import stream_messages

TABLES = ("quotes", "trades", "signals", "orders", "fills", "positions", "order_events")


@pytest.fixture
def config(nats_url: str, database_url: str) -> PersistenceConfig:
    return PersistenceConfig(nats_url=nats_url, database_url=database_url, heartbeat_ms=100, batch_max_ms=20)


def _subject(message: Message) -> str:
    symbol: str = message.symbol  # type: ignore[attr-defined]
    if isinstance(message, Quote):
        return subjects.quote(symbol, 1)
    if isinstance(message, Trade):
        return subjects.trade(symbol, 1)
    if isinstance(message, Signal):
        return subjects.signal(symbol, 1)
    if isinstance(message, PositionUpdated):
        return subjects.position(symbol, 1)
    if isinstance(message, OrderUpdate):
        return subjects.order_event(symbol, 1)
    raise AssertionError(f"no subject for {message!r}")


async def _publish(bus: Bus, messages: list[Message], *, copy: str) -> None:
    """Store each message in its stream under a Nats-Msg-Id of this copy, so that no copy is de-duplicated."""
    for message in messages:
        ack = await bus.js.publish(_subject(message), encode(message), headers={MSG_ID: f"{message.id}#{copy}"})
        assert not ack.duplicate


async def _rows(db: asyncpg.Connection, table: str, key: str) -> list[tuple[Any, ...]]:
    records = await db.fetch(f"SELECT * FROM {table} ORDER BY {key}")  # noqa: S608 - fixed table names
    return [tuple(v for k, v in r.items() if k != "stored_at") for r in records]


async def _table_counts(db: asyncpg.Connection) -> dict[str, int]:
    return {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}  # noqa: S608 - fixed names


async def test_persistence_stores_every_kind_of_message_once_even_when_each_reaches_the_stream_twice(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    symbol = unique_symbol("PER")
    quote = make_quote(symbol, bid="1.10", ask="1.1002", ts_event=1_000)
    sized = make_quote(symbol, bid="1.11", ask="1.1102", ts_event=2_000, bid_size="0.031035000000000004", ask_size="2")
    trade = make_trade(symbol, price="1.1101", size="1000", ts_event=3_000)
    signal = make_signal(symbol, direction="down", quote_id=sized.id, fast="1.1000000001", slow="1.1000000002")
    filled = make_order(symbol, side="buy", qty=2, quote_bid="1.11", quote_ask="1.1102")
    refused = make_order(symbol, side="sell", qty=99, quote_bid="1.11", quote_ask="1.1102")
    accepted_event, fill = make_order_accepted(filled), make_order_filled(filled)
    rejected_event = make_order_rejected(refused, reason="qty 99 exceeds max_order_qty 10")
    position_1 = make_position(symbol, qty=1, avg_price="1.1102", version=1)
    position_2 = make_position(symbol, qty=2, avg_price="1.1102", version=2)
    messages: list[Message] = [
        quote, sized, trade, signal, accepted_event, rejected_event, fill, position_1, position_2,
    ]  # fmt: skip
    # The second copies arrive later and in another order: the acceptance after the fill, the older
    # position after the newer one.
    again: list[Message] = [position_2, position_1, fill, accepted_event, rejected_event, signal, trade, sized, quote]
    garbage = b"\xc1 not an order event"
    garbage_subject = subjects.order_event(unique_symbol("X"), 1)

    async with running_service(app.run, config, heartbeats) as persistence:
        await _publish(bus, messages, copy="first")
        await bus.js.publish(garbage_subject, garbage)
        await persistence.wait_for_counter("handled", len(messages))
        after_first = await _table_counts(db)
        await _publish(bus, again, copy="second")
        counters = await persistence.wait_for_counter("handled", len(messages) + len(again))

    assert counters["handled"] == 2 * len(messages)
    assert (counters["malformed"], counters["dead_lettered"]) == (1, 1)
    assert counters.get("handler_errors", 0) == 0
    expected_counts = {
        "quotes": 2, "trades": 1, "signals": 1, "orders": 2, "fills": 1, "positions": 1, "order_events": 3,
    }  # fmt: skip
    assert after_first == expected_counts
    assert await _table_counts(db) == expected_counts
    assert await _rows(db, "quotes", "id") == sorted(
        (q.id, symbol, q.ts_event, q.ts_init, q.bid, q.ask, q.bid_size, q.ask_size) for q in (quote, sized)
    )
    assert await _rows(db, "trades", "id") == [
        (trade.id, symbol, 3_000, trade.ts_init, Decimal("1.1101"), Decimal(1000), "buy")
    ]
    assert await _rows(db, "signals", "id") == [
        (
            signal.id, "sma_cross", symbol, sized.id, signal.ts_event, signal.ts_init, "down",
            Decimal("1.1000000001"), Decimal("1.1000000002"), Decimal(-1),
        )
    ]  # fmt: skip
    assert await _rows(db, "orders", "client_order_id") == sorted(
        [
            (
                filled.id, "test", symbol, "buy", Decimal(2), "market", "filled", None,
                accepted_event.ts_event, fill.ts_event, None, None, "gtc", None, False, False, Decimal(2), 0,
            ),
            (
                refused.id, "test", symbol, "sell", Decimal(99), "market", "rejected",
                "qty 99 exceeds max_order_qty 10", rejected_event.ts_event, rejected_event.ts_event,
                None, None, "gtc", None, False, False, Decimal(0), 0,
            ),
        ]
    )  # fmt: skip
    assert await _rows(db, "fills", "fill_id") == [
        (
            fill.id, filled.id, symbol, "buy", Decimal(2), Decimal("1.1102"), Decimal(0), "paper",
            fill.ts_event, fill.ts_init, Decimal(0), Decimal(2), "taker",
        )
    ]  # fmt: skip
    assert await _rows(db, "positions", "symbol") == [
        (symbol, Decimal(2), Decimal("1.1102"), Decimal(0), 2, position_2.ts_event)
    ]
    dead = await stream_messages(bus.js, "RRR_DLQ", subjects.dead_letter(garbage_subject))
    assert [m.data for m in dead] == [garbage]
    assert dead[0].headers[DLQ_SUBJECT] == garbage_subject
    assert dead[0].headers[DLQ_SERVICE] == "persistence"
    assert dead[0].headers[DLQ_REASON].startswith("decode: MessagePack data is malformed")


async def test_persistence_keeps_the_highest_position_version_when_an_older_one_arrives_in_a_later_batch(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    symbol = unique_symbol("POS")
    newest = make_position(symbol, qty=-3, avg_price="7.25", realized_pnl="1.5", version=5)
    older = [make_position(symbol, qty=v, avg_price="7", version=v) for v in (4, 1, 3)]

    async with running_service(app.run, config, heartbeats) as persistence:
        await _publish(bus, [newest], copy="newest")
        await persistence.wait_for_counter("handled", 1)
        for handled, position in enumerate(older, start=2):
            await _publish(bus, [position], copy="older")
            await persistence.wait_for_counter("handled", handled)

    assert await _rows(db, "positions", "symbol") == [
        (symbol, Decimal(-3), Decimal("7.25"), Decimal("1.5"), 5, newest.ts_event)
    ]


async def test_persistence_with_a_fill_stored_before_its_acceptance_records_the_order_as_filled(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    symbol = unique_symbol("LATE")
    order = make_order(symbol, side="buy", qty=1, quote_bid="5", quote_ask="5.5")

    async with running_service(app.run, config, heartbeats) as persistence:
        await _publish(bus, [make_order_filled(order)], copy="first")
        await persistence.wait_for_counter("handled", 1)
        await _publish(bus, [make_order_accepted(order)], copy="first")
        await persistence.wait_for_counter("handled", 2)

    assert await db.fetchval("SELECT count(*) FROM fills WHERE client_order_id = $1", order.id) == 1
    assert await db.fetchval("SELECT status FROM orders WHERE client_order_id = $1", order.id) == "filled"


async def test_persistence_applies_the_migrations_once_and_resumes_after_its_stored_position(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    symbol = unique_symbol("MIG")
    first, second = make_quote(symbol, bid="1", ask="2"), make_quote(symbol, bid="3", ask="4")

    async with running_service(app.run, config, heartbeats) as persistence:
        await _publish(bus, [first], copy="a")
        await persistence.wait_for_counter("handled", 1)
    applied = await db.fetch("SELECT version, name, applied_at FROM schema_migrations")
    stopped_at = await _position(db, "md")

    async with running_service(app.run, config, heartbeats) as again:
        await _publish(bus, [second], copy="a")
        counters = await again.wait_for_counter("handled", 1)

    assert [(r["version"], r["name"]) for r in applied] == [
        (1, "initial"),
        (2, "consumer_positions"),
        (3, "order_events"),
        (4, "strategy_positions"),
        (5, "order_event_writes"),
        (6, "order_event_write_costs"),
        (7, "orders_inserted_as_they_stand"),
    ]
    assert await db.fetch("SELECT version, name, applied_at FROM schema_migrations") == applied
    assert await migrate(db) == []
    # The position was committed with the first quote's row; the second instance started after it and
    # handled the new quote only.
    assert stopped_at == 1
    assert counters["handled"] == 1
    assert counters.get("skipped_covered", 0) == 0
    assert await _position(db, "md") == 2
    assert await db.fetchval("SELECT count(*) FROM quotes WHERE symbol = $1", symbol) == 2


async def test_each_strategys_position_and_pnl_are_what_its_fills_make_at_the_latest_mid(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    symbol = unique_symbol("PNL")
    alpha, beta = unique_id("alpha").replace("-", "_"), unique_id("beta").replace("-", "_")
    trades: list[tuple[str, Side, str, str, str]] = [
        (alpha, "buy", "2", "100.5", "0.01"),
        (beta, "sell", "1", "100", "0"),
        (alpha, "sell", "3", "101", "0.02"),  # through zero: short 1
        (alpha, "buy", "0.5", "99.25", "0"),
        (beta, "sell", "2", "102", "0.5"),
    ]
    fills = []
    for n, (strategy, side, qty, price, fee) in enumerate(trades):
        order = make_order(symbol, side=side, qty=qty, strategy=strategy, id=f"{strategy}-q:{n}")
        fills.append(make_order_filled(order, price=price, fee=fee))
    quotes = [
        make_quote(symbol, bid="99", ask="99.5", ts_event=1),
        make_quote(symbol, bid="98", ask="98.5", ts_event=2),
    ]

    async with running_service(app.run, config, heartbeats) as persistence:
        await _publish(bus, [*quotes, *fills], copy="a")
        await persistence.wait_for_counter("handled", len(quotes) + len(fills))

    rows = await db.fetch(
        "SELECT strategy, qty, cash, fees, fills, mark, pnl FROM strategy_positions WHERE symbol = $1 ORDER BY 1",
        symbol,
    )
    mid = Decimal("98.25")  # the newest quote's, by event time
    expected = []
    for strategy in sorted((alpha, beta)):
        position = Position(symbol)
        for fill in fills:
            if fill.client_order_id.startswith(f"{strategy}-"):
                position.apply_fill(fill.side, fill.qty, fill.price, fill.fee)
        fees = sum((f.fee for f in fills if f.client_order_id.startswith(f"{strategy}-")), Decimal(0))
        # Realized (average cost, fees charged) plus unrealized at the mark: the same total the view finds from cash.
        pnl = position.realized_pnl + position.unrealized_pnl(mid)
        expected.append((strategy, position.qty, fees, position.fills, mid, pnl))
    assert [
        (r["strategy"], Fraction(r["qty"]), r["fees"], r["fills"], r["mark"], Fraction(r["pnl"])) for r in rows
    ] == expected


async def _position(db: asyncpg.Connection, family: str) -> int | None:
    value = await db.fetchval("SELECT last_seq FROM consumer_positions WHERE consumer = $1", f"persistence-{family}-0")
    return None if value is None else int(value)


def _quote_rows(symbol: str, start: int, n: int, **fields: Any) -> list[QuoteRow]:
    return [QuoteRow(id=f"{symbol}:{start + i}", symbol=symbol, ts_event=start + i, **fields) for i in range(n)]


async def _publish_batch(bus: Bus, rows: list[QuoteRow]) -> int:
    """Publish one QuoteBatch of ``rows`` on md.quotes.0.test; return its stream sequence."""
    batch = QuoteBatch(id=unique_id("b"), ts_event=rows[0].ts_event, ts_init=7, source="test", quotes=rows)
    ack = await bus.js.publish(subjects.quote_batch(0, "test"), encode(batch), headers={MSG_ID: batch.id})
    return int(ack.seq)


def _text(units: int | None, places: int) -> str | None:
    return None if units is None else format(to_decimal(units, places), "f")


async def test_persistence_stores_every_quote_of_a_batch_with_its_exact_numeric_text(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    symbol = unique_symbol("FIX")
    rows = [
        QuoteRow(id=f"{symbol}:1", symbol=symbol, ts_event=1, bid=110_000, ask=110_002, places=5),
        QuoteRow(id=f"{symbol}:2", symbol=symbol, ts_event=2, bid=10_000, ask=999_999_999_999_999_999, places=18,
                 bid_size=31_035_000_000_000_004, ask_size=0, bid_size_places=18, ask_size_places=18),
        QuoteRow(id=f"{symbol}:3", symbol=symbol, ts_event=3, bid=1, ask=999_999_999_999_999_999, places=0,
                 bid_size=5, ask_size=None),
        QuoteRow(id=f"{symbol}:4", symbol=symbol, ts_event=4, bid=10_000, ask=10_000, places=4,
                 bid_size=1_000, ask_size=2_500, bid_size_places=3, ask_size_places=3),
    ]  # fmt: skip

    async with running_service(app.run, config, heartbeats) as persistence:
        await _publish_batch(bus, rows[:2])
        seq = await _publish_batch(bus, rows[2:])
        counters = await persistence.wait_for_counter("handled", 2)

    stored = await db.fetch(
        "SELECT id, symbol, ts_event, ts_init, bid::text, ask::text, bid_size::text, ask_size::text "
        "FROM quotes ORDER BY id"
    )
    assert [tuple(r.values()) for r in stored] == [
        (r.id, symbol, r.ts_event, 7, _text(r.bid, r.places), _text(r.ask, r.places),
         _text(r.bid_size, r.bid_size_places), _text(r.ask_size, r.ask_size_places))
        for r in rows
    ]  # fmt: skip
    # The numbers as written, trailing zeros and all: 1.10000, 0.000000000000010000, 1.0000, 0.000 ...
    assert stored[0]["bid"] == "1.10000"
    assert stored[1]["ask_size"] == "0.000000000000000000"
    assert stored[3]["bid_size"] == "1.000"
    assert (counters["md_messages"], counters["rows_quotes"]) == (2, 4)
    assert await _position(db, "md") == seq


async def test_persistence_skips_a_batch_its_stored_position_already_covers(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    symbol = unique_symbol("COV")
    price = {"bid": 100, "ask": 101, "places": 2}

    async with running_service(app.run, config, heartbeats) as persistence:
        await _publish_batch(bus, _quote_rows(symbol, 0, 3, **price))
        await persistence.wait_for_counter("handled", 1)
        # As after a commit whose reply was lost: the position already covers the next two messages the
        # consumer reads (here moved by hand), so they are counted and skipped, not written.
        await db.execute("UPDATE consumer_positions SET last_seq = 3 WHERE consumer = 'persistence-md-0'")
        covered = [await _publish_batch(bus, _quote_rows(symbol, n, 2, **price)) for n in (10, 20)]
        last = await _publish_batch(bus, _quote_rows(symbol, 30, 2, **price))
        counters = await persistence.wait_for_counter("handled", 4)

    assert covered == [2, 3]
    assert counters["skipped_covered"] == 2
    assert (counters["md_messages"], counters["rows_quotes"]) == (2, 5)
    ids = await db.fetch("SELECT id FROM quotes ORDER BY ts_event")
    assert [r["id"] for r in ids] == [f"{symbol}:{n}" for n in (0, 1, 2, 30, 31)]
    assert await _position(db, "md") == last


async def test_persistence_stores_once_the_quotes_a_later_batch_brings_again_and_moves_on(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    symbol = unique_symbol("AGN")
    price = {"bid": 100, "ask": 101, "places": 2}

    async with running_service(app.run, config, heartbeats) as persistence:
        await _publish_batch(bus, _quote_rows(symbol, 0, 3, **price))
        await persistence.wait_for_counter("handled", 1)
        # A file replayed again, say: new messages bringing quotes stored before, some beside new ones. Each
        # such batch goes in again passing over what is there, and the position moves past it.
        again = [await _publish_batch(bus, rows) for rows in (_quote_rows(symbol, 1, 4, **price),
                                                               _quote_rows(symbol, 0, 3, **price))]  # fmt: skip
        last = await _publish_batch(bus, _quote_rows(symbol, 10, 2, **price))
        counters = await persistence.wait_for_counter("handled", 4)

    assert again == [2, 3]
    assert (counters["md_messages"], counters["rows_quotes"]) == (4, 7)
    assert (counters["retried"], counters["dead_lettered"], counters["handler_rejected"]) == (0, 0, 0)
    ids = await db.fetch("SELECT id FROM quotes ORDER BY ts_event")
    assert [r["id"] for r in ids] == [f"{symbol}:{n}" for n in (0, 1, 2, 3, 4, 10, 11)]
    assert await _position(db, "md") == last


async def test_persistence_upgraded_from_a_durable_consumer_resumes_after_its_ack_floor_and_deletes_it(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    symbol = unique_symbol("UPG")
    price = {"bid": 100, "ask": 101, "places": 2}
    seqs = [await _publish_batch(bus, _quote_rows(symbol, 10 * n, 1, **price)) for n in range(5)]
    # The consumer persistence ran before positions: it acknowledged the first three messages.
    durable = "persistence-md-0"
    config_ = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL)
    old = await bus.js.pull_subscribe("md.*.0.*", durable=durable, stream="RRR_MD", config=config_)
    for msg in await old.fetch(3, timeout=5):
        await msg.ack_sync()
    await old.unsubscribe()
    assert (await bus.js.consumer_info("RRR_MD", durable)).ack_floor.stream_seq == 3

    async with running_service(app.run, config, heartbeats) as persistence:
        counters = await persistence.wait_for_counter("handled", 2)

    assert counters["handled"] == 2
    ids = await db.fetch("SELECT id FROM quotes ORDER BY ts_event")
    assert [r["id"] for r in ids] == [f"{symbol}:30", f"{symbol}:40"]
    assert await _position(db, "md") == seqs[-1]
    with pytest.raises(nats.js.errors.NotFoundError):
        await bus.js.consumer_info("RRR_MD", durable)


async def _refusing_poison(db: asyncpg.Connection) -> None:
    """The schema, and the database refusing any quote whose id starts with ``poison``: a trigger stands in for
    any refusal of the database for data that decodes."""
    await migrate(db)
    await db.execute(
        """CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.id LIKE 'poison%' THEN RAISE EXCEPTION 'refusing %', NEW.id; END IF; RETURN NEW; END $$;
           CREATE TRIGGER refuse_poison BEFORE INSERT ON quotes FOR EACH ROW EXECUTE FUNCTION refuse_poison();"""
    )


async def test_persistence_dead_letters_a_quote_batch_the_database_refuses_and_stores_the_others(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    await _refusing_poison(db)
    symbol = unique_symbol("BAD")
    price = {"bid": 100, "ask": 101, "places": 2}
    poisoned = [*_quote_rows(symbol, 10, 2, **price), QuoteRow(id="poison-1", symbol=symbol, ts_event=12, **price)]

    async with running_service(app.run, config, heartbeats) as persistence:
        await _publish_batch(bus, _quote_rows(symbol, 0, 2, **price))
        await _publish_batch(bus, poisoned)
        await _publish_batch(bus, _quote_rows(symbol, 20, 2, **price))
        # Retried by the retry consumer up to the bound, then dead-lettered; nothing else is held back.
        await persistence.wait_for_counter("dead_lettered", 1)
        last = await _publish_batch(bus, _quote_rows(symbol, 30, 1, **price))
        counters = await persistence.wait_for_counter("md_messages", 3)

    ids = await db.fetch("SELECT id FROM quotes ORDER BY ts_event")
    assert [r["id"] for r in ids] == [f"{symbol}:{n}" for n in (0, 1, 20, 21, 30)]
    assert await _position(db, "md") == last
    dead = await stream_messages(bus.js, "RRR_DLQ", subjects.dead_letter(subjects.quote_batch(0, "test")))
    assert len(dead) == 1
    letter = market_data_decoder.decode(dead[0].data)
    assert isinstance(letter, QuoteBatch)
    assert [r.id for r in letter.quotes] == [r.id for r in poisoned]
    assert "refusing poison-1" in dead[0].headers[DLQ_REASON]
    assert dead[0].headers[DLQ_DELIVERIES] == "5"
    assert (counters["retried"], counters["dead_lettered"], counters.get("skipped_covered", 0)) == (4, 1, 0)


async def test_persistence_writes_a_backlog_of_quote_batches_two_at_a_time_and_each_once_in_stream_order(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    # As test_persistence_dead_letters_a_quote_batch_the_database_refuses_and_stores_the_others, in a backlog read
    # in batches of many transactions: the rows of the one after a refused batch may be in by then, uncommitted.
    await _refusing_poison(db)
    symbol = unique_symbol("OVL")
    price = {"bid": 100, "ask": 101, "places": 2}
    seqs: list[int] = []
    # Three rows a transaction: each handler batch of this backlog is many transactions.
    small = msgspec.structs.replace(config, batch_max_rows=3, quote_batch_max_rows=3, batch_linger_ms=200)
    for n in range(0, 60, 3):
        rows = _quote_rows(symbol, n, 3, **price)
        if n == 27:
            rows[1] = QuoteRow(id="poison-ovl", symbol=symbol, ts_event=n + 1, **price)
        if n == 42:
            rows[2] = QuoteRow(id=f"{symbol}:40", symbol=symbol, ts_event=n + 2, **price)  # stored 2 batches before
        seqs.append(await _publish_batch(bus, rows))

    async with running_service(app.run, small, heartbeats) as persistence:
        counters = await persistence.wait_for_counter("dead_lettered", 1)
        last = await _publish_batch(bus, _quote_rows(symbol, 60, 3, **price))
        counters = await persistence.wait_for_counter("md_messages", 20)

    stored = [r["id"] for r in await db.fetch("SELECT id FROM quotes ORDER BY ts_event, id")]
    want = [f"{symbol}:{n}" for n in range(63) if n not in (27, 28, 29, 44)]
    assert stored == want
    assert await db.fetchval("SELECT count(*) FROM quotes") == len(want)
    assert await _position(db, "md") == last
    assert (counters["rows_quotes"], counters["dead_lettered"], counters.get("skipped_covered", 0)) == (59, 1, 0)


async def test_persistence_writes_market_data_in_transactions_of_its_own_size_not_the_messages_size(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    # Rows one transaction inserted share its id (xmin): twenty batches of three quotes, in a backlog read five
    # messages at a time, go in transactions of up to twelve rows, not of up to five as other messages do.
    symbol = unique_symbol("TXN")
    for n in range(0, 60, 3):
        last = await _publish_batch(bus, _quote_rows(symbol, n, 3, bid=100, ask=101, places=2))
    sized = msgspec.structs.replace(config, batch_max_rows=5, quote_batch_max_rows=12, batch_linger_ms=200)

    async with running_service(app.run, sized, heartbeats) as persistence:
        await persistence.wait_for_counter("md_messages", 20)

    per_transaction = [
        r["n"] for r in await db.fetch("SELECT count(*) AS n FROM quotes WHERE symbol = $1 GROUP BY xmin", symbol)
    ]
    assert sum(per_transaction) == 60
    assert max(per_transaction) == 12
    assert len(per_transaction) < 20
    assert await _position(db, "md") == last


def _limit_events(symbol: str, order_id: str) -> dict[str, OrderUpdate]:
    """The events of a limit order's life as execution publishes them: placed, partly filled at a later quote,
    replaced, then filled."""
    common = {"client_order_id": order_id, "symbol": symbol, "side": "buy"}
    named = {**common, "strategy": "maker"}
    return {
        "accepted": OrderAccepted(
            id=f"{order_id}:accepted", ts_event=10, ts_init=11, **named, qty=Decimal(5), order_type="stop_limit",
            limit_price=Decimal(100), stop_price=Decimal(99), tif="gtd", expire_ts=500, reduce_only=True, quote_seq=7,
        ),
        "triggered": OrderTriggered(
            id=f"{order_id}:triggered", ts_event=15, ts_init=16, **named, qty=Decimal(5), order_type="stop_limit",
            stop_price=Decimal(99), quote_seq=8,
        ),
        "partial": OrderFilled(
            id=f"{order_id}:1", ts_event=20, ts_init=21, **common, qty=Decimal(2), price=Decimal(100), fee=Decimal(0),
            venue="paper", leaves_qty=Decimal(3), liquidity="maker", quote_seq=9,
        ),
        "replaced": OrderReplaced(
            id=f"{order_id}:replaced:1", ts_event=30, ts_init=31, **named, qty=Decimal(6), limit_price=Decimal(101),
            stop_price=Decimal(99), replaces=1, command_id="r1",
        ),
        "refused": OrderCancelRejected(
            id="c0:refused", ts_event=35, ts_init=36, client_order_id=order_id, strategy="maker", symbol=symbol,
            command_id="c0", response_to="cancel", reason="order is strategy maker's, not taker's",
        ),
        "filled": OrderFilled(
            id=f"{order_id}:2", ts_event=40, ts_init=41, **common, qty=Decimal(4), price=Decimal(101), fee=Decimal(0),
            venue="paper", cum_qty=Decimal(6), quote_seq=10,
        ),
    }  # fmt: skip


async def test_persistence_keeps_every_order_event_in_the_journal_and_each_order_as_it_stands(
    config: PersistenceConfig, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    symbol = unique_symbol("LIFE")
    events = _limit_events(symbol, "maker-1")
    canceled = OrderCanceled(
        id="maker-2:canceled", ts_event=50, ts_init=51, client_order_id="maker-2", strategy="maker", symbol=symbol,
        side="sell", qty=Decimal(3), filled_qty=Decimal(1), reason="canceled by request", command_id="c1",
    )  # fmt: skip
    expired = OrderExpired(
        id="maker-3:expired", ts_event=60, ts_init=61, client_order_id="maker-3", strategy="maker", symbol=symbol,
        side="sell", qty=Decimal(1), filled_qty=Decimal(0), expire_ts=60,
    )  # fmt: skip
    others = [
        OrderAccepted(id=f"maker-{n}:accepted", ts_event=n, ts_init=n, client_order_id=f"maker-{n}", strategy="maker",
                      symbol=symbol, side="sell", qty=Decimal(qty), order_type="limit", limit_price=Decimal(105))
        for n, qty in ((2, 3), (3, 1))
    ]  # fmt: skip
    partial_2 = OrderFilled(
        id="maker-2:1", ts_event=45, ts_init=46, client_order_id="maker-2", symbol=symbol, side="sell",
        qty=Decimal(1), price=Decimal(105), fee=Decimal(0), venue="paper", leaves_qty=Decimal(2), liquidity="maker",
    )  # fmt: skip

    async with running_service(app.run, config, heartbeats) as persistence:
        # One batch each, and the cancel and the expiry before the acceptances of their orders (a late batch).
        batches: list[list[Message]] = [
            [events["accepted"], events["triggered"], events["partial"]],
            [canceled, expired],
            [events["replaced"], events["refused"], *others, partial_2],
            [events["filled"]],
        ]
        for n, batch in enumerate(batches):
            await _publish(bus, batch, copy="first")
            await persistence.wait_for_counter("handled", sum(len(b) for b in batches[: n + 1]))
        # All of them again: nothing changes.
        await _publish(bus, [m for b in batches for m in b], copy="second")
        await persistence.wait_for_counter("handled", 2 * sum(len(b) for b in batches))

    orders = {r["client_order_id"]: r for r in await db.fetch("SELECT * FROM orders WHERE symbol = $1", symbol)}
    first = orders["maker-1"]
    assert (first["status"], first["qty"], first["filled_qty"], first["limit_price"], first["replaces"]) == (
        "filled", Decimal(6), Decimal(6), Decimal(101), 1,
    )  # fmt: skip
    assert (first["order_type"], first["stop_price"], first["tif"], first["expire_ts"], first["reduce_only"]) == (
        "stop_limit", Decimal(99), "gtd", 500, True,
    )  # fmt: skip
    assert first["ts_updated"] == 40
    # A cancel or expiry stored before its acceptance: the order is canceled or expired all the same.
    assert (orders["maker-2"]["status"], orders["maker-2"]["filled_qty"]) == ("canceled", Decimal(1))
    assert orders["maker-3"]["status"] == "expired"
    journal = await db.fetch(
        "SELECT id, kind, status, qty, filled_qty, reason, command_id FROM order_events WHERE symbol = $1 ORDER BY id",
        symbol,
    )
    assert [tuple(r) for r in journal] == sorted([
        ("c0:refused", "cancel_rejected", None, None, None, "order is strategy maker's, not taker's", "c0"),
        ("maker-1:1", "partially_filled", "partially_filled", Decimal(2), Decimal(2), None, None),
        ("maker-1:2", "filled", "filled", Decimal(4), Decimal(6), None, None),
        ("maker-1:accepted", "accepted", "accepted", Decimal(5), Decimal(0), None, None),
        ("maker-1:replaced:1", "replaced", None, Decimal(6), None, None, "r1"),
        ("maker-1:triggered", "triggered", None, Decimal(5), None, None, None),
        ("maker-2:1", "partially_filled", "partially_filled", Decimal(1), Decimal(1), None, None),
        ("maker-2:accepted", "accepted", "accepted", Decimal(3), Decimal(0), None, None),
        ("maker-2:canceled", "canceled", "canceled", Decimal(3), Decimal(1), "canceled by request", "c1"),
        ("maker-3:accepted", "accepted", "accepted", Decimal(1), Decimal(0), None, None),
        ("maker-3:expired", "expired", "expired", Decimal(1), Decimal(0), None, None),
    ])  # fmt: skip
    fills = await db.fetch(
        "SELECT fill_id, leaves_qty, cum_qty, liquidity FROM fills WHERE symbol = $1 ORDER BY fill_id", symbol
    )
    assert [tuple(r) for r in fills] == [
        ("maker-1:1", Decimal(3), Decimal(2), "maker"),
        ("maker-1:2", Decimal(0), Decimal(6), "taker"),
        ("maker-2:1", Decimal(2), Decimal(1), "maker"),
    ]


async def test_persistence_gives_a_connection_back_without_a_session_reset_but_never_inside_a_transaction(
    config: PersistenceConfig, db: asyncpg.Connection
) -> None:
    await migrate(db)
    # One connection: each acquire below takes the same one back.
    pool = await app._open_pool(msgspec.structs.replace(config, pool_max_size=1))
    try:
        async with pool.acquire() as conn:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SELECT 41 + 1")
        # The backend's last statement is the one persistence ran: no reset round trip after it (asyncpg's
        # default sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;` with every release).
        last = await db.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", backend)
        assert last == "SELECT 41 + 1"

        # A connection handed back with its transaction still open (a write cut short) is rolled back.
        symbol = unique_symbol("RST")
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        await conn.execute(
            "INSERT INTO quotes (id, symbol, ts_event, ts_init, bid, ask) VALUES ($1, $2, 1, 1, 1, 2)",
            f"{symbol}:1",
            symbol,
        )
        await pool.release(conn)
        async with pool.acquire() as again:
            assert not again.is_in_transaction()
        assert await db.fetchval("SELECT count(*) FROM quotes WHERE symbol = $1", symbol) == 0
    finally:
        await pool.close()
