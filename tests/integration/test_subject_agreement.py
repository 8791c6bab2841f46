"""Every consumer hands over a message only on the one subject it belongs on: its family, symbol and shard.

A message whose subject and payload disagree is dead-lettered by the bus with the reason and counted as
``mismatched``, on durable consumers, on the retries and on core subscriptions alike.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import msgspec

from rrr.execution import app as execution_app
from rrr.execution.config import ExecutionConfig
from rrr.market_data import app as market_data_app
from rrr.market_data.config import MarketDataConfig
from rrr.persistence import app as persistence_app
from rrr.persistence.config import PersistenceConfig
from rrr.shared import subjects
from rrr.shared.bus import DLQ_REASON, DLQ_SERVICE, DLQ_SUBJECT, MSG_ID, Bus
from rrr.shared.messages import (
    Envelope,
    Message,
    Quote,
    QuoteBatch,
    QuoteRow,
    encode,
    encoder,
    market_data_decoder,
)
from tests.support.factories import (
    make_cancel,
    make_order,
    make_order_accepted,
    make_position,
    make_quote,
    unique_symbol,
)
from tests.support.orders import publish_quote_of
from tests.support.services import Heartbeats, running_service
from tests.support.streams import StoredMsg, stream_messages
from tests.support.waiting import wait_until


async def _send(bus: Bus, subject: str, message: Message) -> None:
    await bus.js.publish(subject, encode(message), headers={MSG_ID: f"{message.id}@{subject}"})


async def _dead_letters(bus: Bus) -> dict[bytes, StoredMsg]:
    """The dead letters, by payload."""
    return {m.data: m for m in await stream_messages(bus.js, "RRR_DLQ")}


async def test_execution_with_two_shards_fills_only_orders_on_their_own_subject_and_dead_letters_the_rest(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    own, other = unique_symbol("OWN", shard=0, shards=2), unique_symbol("OTHER", shard=1, shards=2)
    genuine = await publish_quote_of(bus, make_order(own), shards=2)  # its price in the market-data stream
    foreign = make_order(other)  # shard 1's order, sent on shard 0's subject
    relabelled = make_order(unique_symbol("ELSE", shard=0, shards=2))  # another symbol of shard 0
    retried = make_order(other)
    misrouted: dict[str, Message] = {
        f"cmd.order.0.{other}": foreign,
        f"cmd.order.0.{own}": relabelled,
        f"retry.execution.cmd.order.0.{other}": retried,
        # A cancel of another symbol's order on this symbol's subject: the same rule as for orders.
        f"cmd.order.0.{unique_symbol('CXL', shard=0, shards=2)}": make_cancel(foreign),
    }
    for subject, order in misrouted.items():
        await _send(bus, subject, order)
    await _send(bus, subjects.order_command(own, 2), genuine)
    config = ExecutionConfig(nats_url=nats_url, heartbeat_ms=100, shard=0, shards=2)

    async with running_service(execution_app.run, config, heartbeats) as execution:
        counters = await execution.wait_for_counters(
            lambda c: c.get("handled", 0) >= 1 and c.get("mismatched", 0) >= 4, "1 handled, 4 mismatched"
        )

    assert (counters["orders_filled"], counters["mismatched"], counters["malformed"]) == (1, 4, 0)
    events = [m.subject for m in await stream_messages(bus.js, "RRR_EVT")]
    assert events == [subjects.order_event(own, 2)] * 2 + [subjects.position(own, 2)]
    letters = await _dead_letters(bus)
    assert len(letters) == len(misrouted)
    for subject, order in misrouted.items():
        letter = letters[encode(order)]
        assert letter.headers[DLQ_SUBJECT] == subjects.retried_subject(subject)
        assert letter.headers[DLQ_SERVICE] == "execution"
        assert letter.headers[DLQ_REASON].startswith("subject: misrouted message")
        assert subjects.order_command(order.symbol, 2) in letter.headers[DLQ_REASON]


async def test_persistence_stores_nothing_that_arrives_on_a_subject_not_its_own(
    nats_url: str, database_url: str, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    symbol = unique_symbol("PER")
    misrouted: dict[str, Message] = {
        "md.quote.0.NOTEURUSD": make_quote("SUBJTEST"),  # another symbol
        f"evt.order.0.{symbol}": make_position(symbol),  # another family
        f"md.trade.0.{symbol}": make_quote(symbol),  # another family of the same plane
        f"retry.persistence.sig.signal.0.{symbol}": make_quote(symbol),  # a retry of another family
        "md.quotes.0.sim": _batch(symbol, "replay"),  # a batch of another source
    }
    for subject, message in misrouted.items():
        await _send(bus, subject, message)
    marker = make_quote(symbol)
    await _send(bus, subjects.quote(symbol, 1), marker)
    config = PersistenceConfig(nats_url=nats_url, database_url=database_url, heartbeat_ms=100, batch_max_ms=20)

    async with running_service(persistence_app.run, config, heartbeats) as persistence:
        counters = await persistence.wait_for_counters(
            lambda c: c.get("rows_quotes", 0) >= 1 and c.get("mismatched", 0) >= 5, "the marker, 5 mismatched"
        )

    assert counters["mismatched"] == 5
    assert await db.fetch("SELECT id FROM quotes") == [(marker.id,)]
    assert await db.fetchval("SELECT count(*) FROM positions") == 0
    assert await db.fetchval("SELECT count(*) FROM trades") == 0
    letters = await _dead_letters(bus)
    assert {m.headers[DLQ_SUBJECT]: data for data, m in letters.items()} == {
        subjects.retried_subject(s): encode(m) for s, m in misrouted.items()
    }


async def test_persistence_stores_the_positions_of_a_position_envelope_and_dead_letters_what_else_it_holds(
    nats_url: str, database_url: str, bus: Bus, heartbeats: Heartbeats, db: asyncpg.Connection
) -> None:
    symbol = unique_symbol("PENV")
    genuine = make_position(symbol, qty=3, version=2)
    smuggled = make_order_accepted(make_order(symbol))  # an order event inside the positions' envelope
    envelope = Envelope([msgspec.Raw(encode(m)) for m in (genuine, smuggled)])
    await bus.js.publish(
        subjects.envelope(subjects.POSITION, 0), encoder.encode(envelope), headers={MSG_ID: f"{symbol}-envelope"}
    )
    config = PersistenceConfig(nats_url=nats_url, database_url=database_url, heartbeat_ms=100, batch_max_ms=20)

    async with running_service(persistence_app.run, config, heartbeats) as persistence:
        counters = await persistence.wait_for_counters(
            lambda c: c.get("rows_positions", 0) >= 1 and c.get("mismatched", 0) >= 1, "1 position, 1 mismatched"
        )

    assert counters["mismatched"] == 1
    assert await db.fetch("SELECT symbol, qty, version FROM positions") == [(symbol, Decimal(3), 2)]
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    (letter,) = (await _dead_letters(bus)).values()
    assert letter.data == encode(smuggled)
    assert letter.headers[DLQ_REASON].startswith("subject: misrouted message")


def _batch(symbol: str, source: str) -> QuoteBatch:
    rows = [QuoteRow(f"{symbol}-b{i}", symbol, 1_000 + i, 11_000, 11_002, 4) for i in range(3)]
    return QuoteBatch(id=f"{symbol}-{source}", ts_event=1_000, ts_init=1_000, source=source, quotes=rows)


async def _latest(bus: Bus, subject: str) -> tuple[Quote | None, str]:
    """The reply to a latest-quote request: the quote, or None and the error header."""
    reply = await bus.nc.request(subject, b"", timeout=2)
    if not reply.data:
        return None, (reply.headers or {}).get("Rrr-Error", "")
    quote = market_data_decoder.decode(reply.data)
    assert isinstance(quote, Quote)
    return quote, ""


async def _cached(bus: Bus, quote: Quote) -> bool:
    return (await _latest(bus, subjects.latest_quote(quote.symbol, 1)))[0] == quote


async def test_market_data_caches_no_quote_that_arrives_on_a_subject_not_its_own(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    marker = make_quote(unique_symbol("MARK"))
    config = MarketDataConfig(nats_url=nats_url, feed="none", heartbeat_ms=100)

    async with running_service(market_data_app.run, config, heartbeats) as md:
        await bus.nc.publish("md.quote.0.NOTEURUSD", encode(make_quote("SUBJTEST")))
        await bus.nc.publish(subjects.quote(marker.symbol, 1), encode(marker))
        await wait_until(lambda: _cached(bus, marker), 5, "the marker quote after the misrouted one")
        counters = await md.wait_for_counter("mismatched", 1)
        cached = [await _latest(bus, subjects.latest_quote(s, 1)) for s in ("SUBJTEST", "NOTEURUSD")]

    assert counters["mismatched"] == 1
    assert [quote for quote, _ in cached] == [None, None]
    assert [m.headers[DLQ_SUBJECT] for m in (await _dead_letters(bus)).values()] == ["md.quote.0.NOTEURUSD"]


async def test_market_data_answers_a_latest_quote_request_on_another_shards_subject_with_the_right_subject(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    other = unique_symbol("OTHER", shard=1, shards=2)
    config = MarketDataConfig(nats_url=nats_url, feed="none", heartbeat_ms=100, shard=0, shards=2)

    async with running_service(market_data_app.run, config, heartbeats):
        quote, error = await _latest(bus, f"req.quote.0.{other}")

    assert quote is None
    assert subjects.latest_quote(other, 2) in error


async def test_a_position_is_never_changed_by_an_order_that_fills_on_a_subject_not_its_own(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    """The probe's case: shard 0's execution filled an order of shard 1's symbol sent on its subject."""
    symbol = "EURUSD"
    assert subjects.shard_of(symbol, 2) == 1
    order = await publish_quote_of(bus, make_order(symbol, qty=1, quote_bid="1.1", quote_ask="1.2"), shards=2)
    await _send(bus, f"cmd.order.0.{symbol}", order)
    await _send(bus, subjects.order_command(symbol, 2), order)
    shard_0 = ExecutionConfig(nats_url=nats_url, heartbeat_ms=100, shard=0, shards=2)
    shard_1 = ExecutionConfig(nats_url=nats_url, heartbeat_ms=100, shard=1, shards=2)

    async with (
        running_service(execution_app.run, shard_0, heartbeats) as first,
        running_service(execution_app.run, shard_1, heartbeats) as second,
    ):
        await first.wait_for_counter("mismatched", 1)
        await second.wait_for_counter("handled", 1)

    events = [m.subject for m in await stream_messages(bus.js, "RRR_EVT")]
    assert events == [subjects.order_event(symbol, 2)] * 2 + [subjects.position(symbol, 2)]
    assert (first.counters()["orders_filled"], second.counters()["orders_filled"]) == (0, 1)
