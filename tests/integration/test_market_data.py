"""Market data against a real nats-server: the simulated feed, the latest-quote cache, bad input, replay."""

from __future__ import annotations

import asyncio
import csv
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import nats.errors
import pytest
from nats.aio.msg import Msg

from rrr.deploy.nats_server import NatsEndpoint
from rrr.market_data import app
from rrr.market_data.checked import check_file
from rrr.market_data.config import MarketDataConfig
from rrr.market_data.feeds import replay_file
from rrr.market_data.replay import source_id
from rrr.shared import subjects
from rrr.shared.bus import DLQ_REASON, DLQ_SERVICE, DLQ_SUBJECT, Bus
from rrr.shared.errors import BadRowError
from rrr.shared.messages import Heartbeat, Quote, QuoteBatch, Trade, encode, market_data_decoder
from tests.support.factories import make_quote, make_signal, unique_id, unique_symbol
from tests.support.services import Heartbeats, running_service
from tests.support.streams import (
    StoredQuote,
    count,
    count_quotes,
    stored_quotes,
    stream_messages,
    subject_counts,
)
from tests.support.waiting import wait_until

DATA = Path(__file__).parents[1] / "data"
BTCUSDT = DATA / "btcusdt_quotes_2021-01-08.csv"
USDJPY = DATA / "usdjpy_quotes_2013-01-01.csv"


async def _latest(bus: Bus, symbol: str, shards: int = 1) -> Quote | None:
    """Ask market data for the symbol's latest quote; None when it answers that it has none."""
    reply = await bus.nc.request(subjects.latest_quote(symbol, shards), b"", timeout=2)
    if not reply.data:
        return None
    quote = market_data_decoder.decode(reply.data)
    assert isinstance(quote, Quote)
    return quote


def _iso_ns(text: str) -> int:
    # Independent of the reader under test, and exact: integer arithmetic on the timedelta.
    delta = datetime.fromisoformat(text) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _fresh_server_only(nats_server: NatsEndpoint) -> None:
    if nats_server.server is None:
        pytest.skip("replaying a fixed file needs a nats-server of this test: a shared one may hold it already")


async def test_market_data_sim_feed_publishes_only_its_shards_symbols_and_the_stream_captures_each_quote(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    mine = [unique_symbol("SIM", shard=0, shards=2) for _ in range(2)]
    others = [unique_symbol("SIM", shard=1, shards=2) for _ in range(2)]
    mine_set = set(mine)
    received: list[StoredQuote] = []
    trades: list[tuple[str, Trade]] = []

    async def _on_md(msg: Msg) -> None:
        # Only this test's symbols: a shared server may carry other tests' market data.
        message = market_data_decoder.decode(msg.data)
        if isinstance(message, QuoteBatch):
            received.extend(
                StoredQuote(0, i, msg.subject, message.quote(i))
                for i, row in enumerate(message.quotes)
                if row.symbol in mine_set | set(others)
            )
        elif isinstance(message, Trade) and message.symbol in mine_set | set(others):
            trades.append((msg.subject, message))

    await bus.nc.subscribe(subjects.MARKET_DATA_ALL, cb=_on_md)
    await bus.nc.flush()
    config = MarketDataConfig(
        nats_url=nats_url,
        feed="sim",
        symbols=(mine[0], others[0], mine[1], others[1]),
        rate_hz=200,
        trade_every=5,
        shards=2,
        shard=0,
        heartbeat_ms=100,
    )

    async with running_service(app.run, config, heartbeats) as md:
        await wait_until(lambda: len(received) >= 40, 10, "40 simulated quotes", describe=lambda: len(received))
        served = await _latest(bus, mine[0], shards=2)

    await wait_until(
        lambda: heartbeats.latest[md.instance].status == "stopping", 5, "the final heartbeat of market data"
    )
    final: Heartbeat = heartbeats.latest[md.instance]
    published = final.counters["published"]
    # The stream captures core-NATS publishes on its own time: wait until it holds what the feed sent.
    await wait_until(
        lambda: _stored_quote_count(bus, mine, expected=published), 5, f"{published} quotes of {mine} in RRR_MD"
    )
    stored = await stored_quotes(bus.js, mine_set | set(others))
    await wait_until(lambda: len(received) == len(stored), 5, "every stored quote at the subscriber")

    assert [(q.subject, q.quote) for q in stored] == [(q.subject, q.quote) for q in received]
    quotes = [q.quote for q in stored]
    assert len(quotes) == published
    assert len(trades) == published // 5
    assert len({q.id for q in quotes}) == len(quotes)
    assert {q.symbol for q in quotes} == mine_set
    # One batch per wake-up of the feed, on the shard's batch subject; trades one by one on their own.
    assert {q.subject for q in stored} == {"md.quotes.0.sim"}
    assert all(subject == f"md.trade.0.{t.symbol}" for subject, t in trades)
    assert served is not None
    assert served.symbol == mine[0]
    assert served in quotes


async def _stored_quote_count(bus: Bus, symbols: list[str], *, expected: int) -> bool:
    return await count_quotes(bus.js, symbols) >= expected


async def test_market_data_latest_quote_request_returns_the_newest_quote_and_an_error_header_when_it_has_none(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol, marker, unknown = unique_symbol("LQ"), unique_symbol("MARK"), unique_symbol("NONE")
    newer = make_quote(symbol, bid="1.2000", ask="1.2002", ts_event=2_000, bid_size="5", ask_size="7")
    older = make_quote(symbol, bid="1.1000", ask="1.1002", ts_event=1_000)
    marker_quote = make_quote(marker, bid="3", ask="4")
    config = MarketDataConfig(nats_url=nats_url, feed="none", heartbeat_ms=100)

    async with running_service(app.run, config, heartbeats):
        assert await _latest(bus, symbol) is None
        await bus.publish(subjects.quote(symbol, 1), newer)
        await wait_until(lambda: _is_latest(bus, newer), 5, f"{newer.id} as the latest quote of {symbol}")
        # An older quote arriving later must not replace the newer one. The marker on the same
        # subscription, after it, proves the older quote was handled.
        await bus.publish(subjects.quote(symbol, 1), older)
        await bus.publish(subjects.quote(marker, 1), marker_quote)
        await wait_until(lambda: _is_latest(bus, marker_quote), 5, "the marker quote as latest")
        assert await _latest(bus, symbol) == newer

        reply = await bus.nc.request(subjects.latest_quote(unknown, 1), b"", timeout=2)

    assert reply.data == b""
    assert reply.headers == {"Rrr-Error": f"no quote for {unknown} yet"}


async def _is_latest(bus: Bus, quote: Quote) -> bool:
    return await _latest(bus, quote.symbol) == quote


async def test_market_data_latest_quote_request_for_an_invalid_symbol_gets_an_error_reply(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    config = MarketDataConfig(nats_url=nats_url, feed="none", heartbeat_ms=100)

    async with running_service(app.run, config, heartbeats):
        try:
            reply = await bus.nc.request(f"{subjects.LATEST_QUOTE}.0.not-a-symbol", b"", timeout=1)
        except nats.errors.TimeoutError:
            pytest.fail("no reply to a latest-quote request for an invalid symbol")

    assert reply.data == b""
    assert "not-a-symbol" in reply.headers["Rrr-Error"]


async def test_market_data_dead_letters_malformed_quotes_with_a_reason_and_keeps_serving(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("SIMA")
    subject = subjects.quote(symbol, 1)
    garbage = b"\xc1 this is not msgpack"
    not_a_quote = encode(make_signal(symbol))
    valid = make_quote(symbol)
    config = MarketDataConfig(nats_url=nats_url, feed="none", heartbeat_ms=100)

    async with running_service(app.run, config, heartbeats) as md:
        await bus.nc.publish(subject, garbage)
        await bus.nc.publish(subject, not_a_quote)
        await bus.publish(subject, valid)
        await wait_until(lambda: _is_latest(bus, valid), 5, "the valid quote after the malformed ones as latest")
        counters = await md.wait_for_counters(lambda c: c.get("dead_lettered", 0) >= 2, "2 dead letters")

    assert counters["malformed"] == 2
    assert counters["dead_lettered"] == 2
    assert counters.get("handler_errors", 0) == 0
    dead = await stream_messages(bus.js, "RRR_DLQ", subjects.dead_letter(subject))
    assert [(m.subject, m.data) for m in dead] == [(f"dlq.{subject}", garbage), (f"dlq.{subject}", not_a_quote)]
    for m in dead:
        assert m.headers[DLQ_SUBJECT] == subject
        assert m.headers[DLQ_SERVICE] == "market_data"
        assert m.headers[DLQ_REASON].startswith("decode: ")
    assert "malformed" in dead[0].headers[DLQ_REASON]
    assert "signal.v1" in dead[1].headers[DLQ_REASON]


async def test_replay_file_stores_each_row_once_exactly_as_written_even_when_replayed_twice(
    nats_server: NatsEndpoint, bus: Bus
) -> None:
    _fresh_server_only(nats_server)
    with BTCUSDT.open(newline="") as fh:
        rows = list(csv.DictReader(fh))

    first = await replay_file(bus, BTCUSDT, shards=1, window=100, skip_bad_rows=False)
    again = await replay_file(bus, BTCUSDT, shards=1, window=100, skip_bad_rows=False)

    assert (first.rows, first.published, first.duplicates, first.bad_rows) == (451, 451, 0, [])
    assert (again.rows, again.published, again.duplicates, again.bad_rows) == (451, 0, 451, [])
    # Batches of the window's quotes: 100, 100, 100, 100, 51.
    assert await subject_counts(bus.js, "RRR_MD") == {"md.quotes.0.replay": 5}
    quotes = [q.quote for q in await stored_quotes(bus.js)]
    source = source_id(BTCUSDT)
    assert [q.id for q in quotes] == [f"{source}:{line}" for line in range(2, 453)]
    assert [(q.ts_event, q.symbol, q.bid, q.ask, q.bid_size, q.ask_size) for q in quotes] == [
        (
            _iso_ns(r["ts"]),
            r["symbol"],
            Decimal(r["bid"]),
            Decimal(r["ask"]),
            Decimal(r["bid_size"]),
            Decimal(r["ask_size"]),
        )
        for r in rows
    ]
    # Decimal text survives unchanged, binary-float artefacts of the source included.
    assert any(str(q.bid_size) == r["bid_size"] and len(r["bid_size"]) > 15 for q, r in zip(quotes, rows, strict=True))


async def test_replay_file_with_four_shards_puts_each_symbol_on_its_crc32_shard_subject(
    nats_server: NatsEndpoint, bus: Bus
) -> None:
    _fresh_server_only(nats_server)

    btc = await replay_file(bus, BTCUSDT, shards=4, window=256, skip_bad_rows=False)
    jpy = await replay_file(bus, USDJPY, shards=4, window=256, skip_bad_rows=False)

    assert (btc.published, jpy.published) == (451, 1000)
    shard = {symbol: zlib.crc32(symbol.encode()) % 4 for symbol in ("BTCUSDT", "USDJPY")}
    assert shard["BTCUSDT"] != shard["USDJPY"]
    stored = await stored_quotes(bus.js)
    assert {(q.subject, q.quote.symbol) for q in stored} == {
        (f"md.quotes.{shard['BTCUSDT']}.replay", "BTCUSDT"),
        (f"md.quotes.{shard['USDJPY']}.replay", "USDJPY"),
    }
    assert [q.quote.symbol for q in stored].count("BTCUSDT") == 451


async def test_market_data_answers_latest_quote_requests_only_on_an_inbox(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("RATE")
    quote = make_quote(symbol)
    config = MarketDataConfig(nats_url=nats_url, feed="none", heartbeat_ms=100)
    inbox = f"_INBOX_alice.{unique_id('r')}"
    replies = await bus.nc.subscribe(inbox)

    async with running_service(app.run, config, heartbeats) as md:
        await bus.publish(subjects.quote(symbol, 1), quote)
        await wait_until(lambda: _is_latest(bus, quote), 5, "the quote as latest")
        stored = await count(bus.js, "RRR_MD")
        # A reply subject that is no inbox would put a copy of the quote into the stream per request.
        for _ in range(1000):
            await bus.nc.publish(subjects.latest_quote(symbol, 1), b"", reply=subjects.quote(symbol, 1))
        await bus.nc.publish(subjects.latest_quote(symbol, 1), b"", reply=inbox)
        reply = await replies.next_msg(timeout=5)
        counters = await md.wait_for_counter("replies_refused", 1000)

    assert market_data_decoder.decode(reply.data) == quote
    assert counters["replies_refused"] == 1000
    assert await count(bus.js, "RRR_MD") == stored


async def test_replay_file_publishes_what_it_checked_in_file_order_even_if_the_file_changes_meanwhile(
    bus: Bus, tmp_path: Path
) -> None:
    symbol = unique_symbol("CHK")
    path = tmp_path / "quotes.csv"
    # The second row is beyond a batch's fixed point (19 digits): it travels alone, between the batches
    # of the rows around it.
    path.write_text(
        "ts,symbol,bid,ask\n"
        f"2024-01-02T00:00:00.001Z,{symbol},1.10001,1.10003\n"
        f"2024-01-02T00:00:00.002Z,{symbol},1.234567890123456789,1.234567890123456790\n"
        f"2024-01-02T00:00:00.003Z,{symbol},1.10002,1.10004\n"
    )
    source = source_id(path)
    checked = await asyncio.to_thread(check_file, path, skip_bad_rows=False)
    path.write_text(f"ts,symbol,bid,ask\n2024-01-02T00:00:00.009Z,{symbol},9,10\n")

    report = await replay_file(bus, path, shards=1, window=100, skip_bad_rows=False, checked=checked)

    assert (report.rows, report.published, report.source) == (3, 3, source)
    stored = await stored_quotes(bus.js, {symbol})
    assert [(q.quote.id, str(q.quote.bid)) for q in stored] == [
        (f"{source}:2", "1.10001"),
        (f"{source}:3", "1.234567890123456789"),
        (f"{source}:4", "1.10002"),
    ]
    assert [q.subject for q in stored] == ["md.quotes.0.replay", f"md.quote.0.{symbol}", "md.quotes.0.replay"]
    assert len({q.seq for q in stored}) == 3
    assert all(spill.closed for spill in checked.spills)


async def test_replay_file_of_a_bad_row_publishes_nothing_not_even_the_rows_before_it(bus: Bus, tmp_path: Path) -> None:
    symbol = unique_symbol("BAD")
    path = tmp_path / "quotes.csv"
    good = "".join(f"2024-01-02T00:00:00.{i:03d}Z,{symbol},1.1,1.2\n" for i in range(1, 600))
    path.write_text(f"ts,symbol,bid,ask\n{good}2024-01-02T00:00:01Z,{symbol},1.3,1.2\n")

    with pytest.raises(BadRowError, match=":601: crossed quote"):
        await replay_file(bus, path, shards=1, window=100, skip_bad_rows=False)

    assert await stored_quotes(bus.js, {symbol}) == []
