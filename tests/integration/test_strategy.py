"""The strategy service against a real nats-server, checked against the exact reference on real quotes."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import msgspec
import nats.js.errors
import pytest
from nats.js.api import KeyValueConfig

from rrr.shared import subjects
from rrr.shared.bus import DLQ_REASON, MSG_ID, Bus
from rrr.shared.messages import (
    Quote,
    Signal,
    SubmitOrder,
    encode,
    market_data_decoder,
    order_command_decoder,
    signal_decoder,
)
from rrr.shared.watermark import Watermark
from rrr.strategy import app, loading, snapshots
from rrr.strategy.config import StrategyConfig
from rrr.strategy.engine import Engine
from rrr.strategy.sma_cross import SmaCross, SmaCrossParams
from tests.support.factories import unique_id, unique_symbol
from tests.support.reference import Cross, sma_cross
from tests.support.services import Heartbeats, running_service
from tests.support.streams import count, decode_all, stream_messages

EURUSD = Path(__file__).parents[1] / "data" / "eurusd_quotes_2020-01-01.csv"
FAST, SLOW = 5, 20


@dataclass(frozen=True)
class Row:
    ts_ns: int
    bid: str
    ask: str


def _rows(limit: int) -> list[Row]:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    out = []
    with EURUSD.open(newline="") as fh:
        for record in csv.DictReader(fh):
            delta = datetime.fromisoformat(record["ts"]) - epoch
            ts_ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
            out.append(Row(ts_ns, record["bid"], record["ask"]))
            if len(out) == limit:
                break
    return out


def _reference(rows: list[Row]) -> tuple[list[Cross[Fraction]], list[Cross[Fraction]]]:
    """The exact reference's signals (every cross) and orders (the crosses that change the target)."""
    crosses = list(sma_cross([(Fraction(row.bid), Fraction(row.ask)) for row in rows], fast=FAST, slow=SLOW))
    return crosses, [cross for cross in crosses if cross.order_qty]


def _display(value: Fraction) -> Decimal:
    # Rounded half-even to 10 places, as the signal carries it (round() on a Fraction is half-even).
    return Decimal(round(value * 10**10)).scaleb(-10)


def _quotes(symbol: str, rows: list[Row]) -> list[Quote]:
    run = unique_id("eurusd")
    return [
        Quote(
            id=f"{run}:{i + 2}",
            ts_event=row.ts_ns,
            ts_init=row.ts_ns,
            symbol=symbol,
            bid=Decimal(row.bid),
            ask=Decimal(row.ask),
        )
        for i, row in enumerate(rows)
    ]


async def _publish(bus: Bus, quotes: list[Quote], shards: int) -> None:
    stored = await bus.publish_persistent_many(bus.prepare(subjects.quote(q.symbol, shards), q) for q in quotes)
    assert stored == len(quotes)


def _check_orders(orders: list[SubmitOrder], expected: list[Cross[Fraction]], quotes: list[Quote]) -> None:
    assert [
        (
            o.id,
            o.strategy,
            o.symbol,
            o.side,
            Fraction(o.qty),
            o.order_type,
            o.quote_ts,
            o.quote_bid,
            o.quote_ask,
            o.ts_event,
        )
        for o in orders
    ] == [
        (
            f"sma_cross-{quotes[e.index].id}",
            "sma_cross",
            quotes[e.index].symbol,
            e.side,
            abs(e.order_qty),
            "market",
            quotes[e.index].ts_event,
            quotes[e.index].bid,
            quotes[e.index].ask,
            quotes[e.index].ts_event,
        )
        for e in expected
    ]


def _check_signals(signals: list[Signal], expected: list[Cross[Fraction]], quotes: list[Quote]) -> None:
    assert [(s.id, s.quote_id, s.symbol, s.direction, Fraction(s.target), s.fast, s.slow) for s in signals] == [
        (
            f"sma_cross:{quotes[e.index].id}",
            quotes[e.index].id,
            quotes[e.index].symbol,
            e.direction,
            e.target,
            _display(e.fast),
            _display(e.slow),
        )
        for e in expected
    ]


async def test_strategy_on_2000_real_quotes_sends_exactly_the_orders_of_the_exact_reference(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    rows = _rows(2000)
    expected_signals, expected_orders = _reference(rows)
    # The data must exercise the interesting cases: a first order of 1, then reversals of 2.
    assert len(expected_orders) > 20
    assert {abs(o.order_qty) for o in expected_orders} == {1, 2}
    symbol = unique_symbol("EURUSD")
    quotes = _quotes(symbol, rows)
    await _publish(bus, quotes, shards=1)

    async with running_service(app.run, StrategyConfig(nats_url=nats_url, heartbeat_ms=100), heartbeats) as strategy:
        counters = await strategy.wait_for_counter("handled", len(quotes))

    assert counters["handled"] == len(quotes)
    assert counters["published"] == len(expected_signals) + len(expected_orders)
    assert counters["symbols"] == 1
    orders = decode_all(
        await stream_messages(bus.js, "RRR_CMD", subjects.order_command(symbol, 1)), order_command_decoder
    )
    signals = decode_all(await stream_messages(bus.js, "RRR_SIG", subjects.signal(symbol, 1)), signal_decoder)
    _check_orders(orders, expected_orders, quotes)
    _check_signals(signals, expected_signals, quotes)
    # Each order names its triggering quote's place in the market-data stream, where execution prices it.
    for order in orders:
        stored = await bus.js.get_msg("RRR_MD", seq=order.quote_seq)
        assert f"sma_cross-{market_data_decoder.decode(stored.data or b'').id}" == order.id


async def test_strategy_with_two_shards_handles_only_the_symbols_of_its_own_shard(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    rows = _rows(800)
    expected_signals, expected_orders = _reference(rows)
    assert expected_orders
    owned = {shard: unique_symbol("EURUSD", shard=shard, shards=2) for shard in (0, 1)}
    quotes = {shard: _quotes(symbol, rows) for shard, symbol in owned.items()}
    # Shard 1's quotes are stored first: shard 0's instance must pass them over by subject.
    await _publish(bus, quotes[1], shards=2)
    await _publish(bus, quotes[0], shards=2)
    config = StrategyConfig(nats_url=nats_url, heartbeat_ms=100, shards=2, shard=0)

    async with running_service(app.run, config, heartbeats) as strategy:
        counters = await strategy.wait_for_counter("handled", len(rows))

    assert counters["handled"] == len(rows)
    assert counters["symbols"] == 1
    orders = decode_all(await stream_messages(bus.js, "RRR_CMD", f"cmd.order.*.{owned[0]}"), order_command_decoder)
    signals = decode_all(await stream_messages(bus.js, "RRR_SIG", f"sig.signal.*.{owned[0]}"), signal_decoder)
    assert subjects.order_command(owned[0], 2) == f"cmd.order.0.{owned[0]}"
    assert await count(bus.js, "RRR_CMD", subjects.order_command(owned[0], 2)) == len(expected_orders)
    _check_orders(orders, expected_orders, quotes[0])
    _check_signals(signals, expected_signals, quotes[0])
    assert await count(bus.js, "RRR_CMD", f"cmd.order.*.{owned[1]}") == 0
    assert await count(bus.js, "RRR_SIG", f"sig.signal.*.{owned[1]}") == 0


async def test_strategy_restarted_mid_stream_sends_the_same_orders_as_an_uninterrupted_run(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    rows = _rows(1000)
    _, expected_orders = _reference(rows)
    symbol = unique_symbol("EURUSD")
    quotes = _quotes(symbol, rows)
    config = StrategyConfig(nats_url=nats_url, heartbeat_ms=100)

    for part in (quotes[:500], quotes[500:]):
        await _publish(bus, part, shards=1)
        async with running_service(app.run, config, heartbeats) as strategy:
            await strategy.wait_for_counter("handled", len(part))

    orders = decode_all(
        await stream_messages(bus.js, "RRR_CMD", subjects.order_command(symbol, 1)), order_command_decoder
    )
    _check_orders(orders, expected_orders, quotes)


async def test_strategy_given_the_same_quotes_again_after_a_restart_sends_no_second_signal_or_order(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    rows = _rows(600)
    expected_signals, expected_orders = _reference(rows)
    symbol = unique_symbol("EURUSD")
    quotes = _quotes(symbol, rows)
    config = StrategyConfig(nats_url=nats_url, heartbeat_ms=100)
    await _publish(bus, quotes, shards=1)
    async with running_service(app.run, config, heartbeats) as strategy:
        await strategy.wait_for_counter("handled", len(quotes))
    # The same quotes stored in the stream a second time, as after JetStream's de-duplication window: under
    # other Nats-Msg-Ids, so that the stream takes them. The first half first, then all of them.
    for copy, again in enumerate((quotes[:300], quotes)):
        for quote in again:
            await bus.js.publish(subjects.quote(symbol, 1), encode(quote), headers={MSG_ID: f"{quote.id}:{copy}"})
    async with running_service(app.run, config, heartbeats) as strategy:
        counters = await strategy.wait_for_counter("handled", 300 + len(quotes))

    assert counters["stale_skipped"] == 300 + len(quotes)
    assert counters.get("published", 0) == 0
    signals = decode_all(await stream_messages(bus.js, "RRR_SIG", subjects.signal(symbol, 1)), signal_decoder)
    orders = decode_all(
        await stream_messages(bus.js, "RRR_CMD", subjects.order_command(symbol, 1)), order_command_decoder
    )
    _check_signals(signals, expected_signals, quotes)
    _check_orders(orders, expected_orders, quotes)


async def test_strategy_state_larger_than_a_message_is_snapshotted_and_restored_exactly(bus: Bus) -> None:
    # 10,000 symbols (the default cap) with a full window each: a snapshot of about 1.6 MB, more than
    # nats-server takes in one message (1 MiB).
    params = SmaCrossParams(fast=FAST, slow=SLOW)
    rows = _rows(SLOW)
    books: dict[str, SmaCross] = {}
    watermarks: dict[str, Watermark] = {}
    for i in range(10_000):
        symbol = f"S{i}"
        book = books[symbol] = SmaCross(params)
        for row in rows:
            book.on_decimal_quote(Decimal(row.bid), Decimal(row.ask))
        watermarks[symbol] = Watermark(ts=rows[-1].ts_ns, ids=[f"{unique_id('quote')}:{i}"])
    name = snapshots.name("sma_cross", 0, 1)
    engine = Engine([loading.spec("sma_cross", "sma_cross", {"fast": FAST, "slow": SLOW})])
    engine.runner("sma_cross").strategy.books = books  # type: ignore[attr-defined]
    engine.watermarks.update(watermarks)
    assert len(snapshots.encode_engine(1234, engine)) > 1024 * 1024
    saver = snapshots.Saver(bus, name, snapshots.legacy_key("sma_cross", 0, 1), every_s=1)

    assert await saver.save(1234, lambda: snapshots.encode_engine(1234, engine))

    again = Engine([loading.spec("sma_cross", "sma_cross", {"fast": FAST, "slow": SLOW})])
    seq, _ = await snapshots.load(bus, name, "none", again)
    restored: dict[str, SmaCross] = again.runner("sma_cross").strategy.books  # type: ignore[attr-defined]
    marks = again.watermarks
    assert seq == 1234
    assert {s: b.state() for s, b in restored.items()} == {s: b.state() for s, b in books.items()}
    assert marks == watermarks
    assert saver.failures == 0


async def test_strategy_restored_from_a_snapshot_of_the_earlier_key_value_format_continues_exactly_and_moves_it(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    rows = _rows(1000)
    _, expected_orders = _reference(rows)
    symbol = unique_symbol("EURUSD")
    quotes = _quotes(symbol, rows)
    await _publish(bus, quotes, shards=1)
    # What an earlier version saved after the first 500 quotes: one entry in the key-value bucket, in the
    # format of then (strategy_snapshot.v1, the window as Decimal sums).
    params = SmaCrossParams(fast=FAST, slow=SLOW)
    book = SmaCross(params)
    for quote in quotes[:500]:
        book.on_decimal_quote(quote.bid, quote.ask)
    state = book.state()
    stored = await stream_messages(bus.js, "RRR_MD", subjects.quote(symbol, 1))
    legacy = await bus.js.create_key_value(KeyValueConfig(bucket=snapshots.LEGACY_BUCKET, history=1))
    key = snapshots.legacy_key("sma_cross", 0, 1)
    mark = Watermark(ts=quotes[499].ts_event, ids=[quotes[499].id])
    v1 = snapshots.SnapshotV1(
        seq=stored[499].seq,
        strategy="sma_cross",
        fast=FAST,
        slow=SLOW,
        qty=params.qty,
        books={
            symbol: snapshots.SmaCrossStateV1(
                window=[quote.bid + quote.ask for quote in quotes[500 - SLOW : 500]],
                prev_relation=state.prev_relation,
                target=state.target,
                quotes_seen=500,
            )
        },
        watermarks={symbol: mark},
    )
    await legacy.put(key, msgspec.msgpack.encode(v1))

    async with running_service(app.run, StrategyConfig(nats_url=nats_url, heartbeat_ms=100), heartbeats) as strategy:
        await strategy.wait_for_counter("handled", 500)

    orders = decode_all(
        await stream_messages(bus.js, "RRR_CMD", subjects.order_command(symbol, 1)), order_command_decoder
    )
    _check_orders(orders, [e for e in expected_orders if e.index >= 500], quotes)
    # Saved in the new format, and the older entry gone: it is never read again.
    assert await bus.load_snapshot(snapshots.name("sma_cross", 0, 1))
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await legacy.get(key)


async def _dead_letter_reasons(bus: Bus, subject: str) -> list[str]:
    return [m.headers[DLQ_REASON] for m in await stream_messages(bus.js, "RRR_DLQ", f"dlq.{subject}")]


async def test_strategy_beyond_its_symbol_cap_refuses_each_new_symbols_quotes_on_their_own_and_never_grows(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    rows = _rows(100)
    _, expected_orders = _reference(rows)
    symbols = [unique_symbol(f"CAP{i}") for i in range(5)]
    quotes = {symbol: _quotes(symbol, rows) for symbol in symbols}
    # Interleaved: the first three symbols to arrive fill the cap.
    await _publish(bus, [quotes[symbol][i] for i in range(len(rows)) for symbol in symbols], shards=1)
    config = StrategyConfig(nats_url=nats_url, heartbeat_ms=100, max_symbols=3)

    async with running_service(app.run, config, heartbeats) as strategy:
        counters = await strategy.wait_for_counters(
            lambda c: c.get("handled", 0) == 300 and c.get("dead_lettered", 0) == 200, "300 handled, 200 refused"
        )

    assert (counters["symbols"], counters["symbols_refused"]) == (3, 200)
    for symbol in symbols[:3]:
        orders = decode_all(
            await stream_messages(bus.js, "RRR_CMD", subjects.order_command(symbol, 1)), order_command_decoder
        )
        _check_orders(orders, expected_orders, quotes[symbol])
    for symbol in symbols[3:]:
        assert await count(bus.js, "RRR_CMD", subjects.order_command(symbol, 1)) == 0
        assert await count(bus.js, "RRR_SIG", subjects.signal(symbol, 1)) == 0
        reasons = await _dead_letter_reasons(bus, subjects.quote(symbol, 1))
        assert len(reasons) == len(rows)
        assert reasons[0] == (
            f"strategy: symbol {symbol} refused: expected at most 3 symbols per instance (--max-symbols, "
            "RRR_STRATEGY_MAX_SYMBOLS), and this instance holds 3 already (after 1 attempts)"
        )

    # Restored from its snapshot, it holds three symbols still: a sixth is refused too.
    late = unique_symbol("CAP5")
    await _publish(bus, _quotes(late, rows[:10]), shards=1)
    async with running_service(app.run, config, heartbeats) as strategy:
        counters = await strategy.wait_for_counter("symbols_refused", 10)
    assert counters["symbols"] == 3
    assert len(await _dead_letter_reasons(bus, subjects.quote(late, 1))) == 10


async def test_strategy_with_its_symbols_listed_refuses_the_quotes_of_any_other(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    rows = _rows(30)
    listed, other = unique_symbol("LISTED"), unique_symbol("OTHER")
    await _publish(bus, _quotes(listed, rows) + _quotes(other, rows), shards=1)
    config = StrategyConfig(nats_url=nats_url, heartbeat_ms=100, symbols=(listed,))

    async with running_service(app.run, config, heartbeats) as strategy:
        counters = await strategy.wait_for_counter("dead_lettered", len(rows))

    assert (counters["handled"], counters["symbols"], counters["symbols_refused"]) == (len(rows), 1, len(rows))
    reasons = await _dead_letter_reasons(bus, subjects.quote(other, 1))
    assert "expected one of the 1 symbols of --symbols (RRR_STRATEGY_SYMBOLS)" in reasons[0]


async def test_strategies_listed_in_a_file_trade_side_by_side_and_one_that_fails_stops_alone(
    nats_url: str, bus: Bus, heartbeats: Heartbeats, tmp_path: Path
) -> None:
    rows = _rows(1500)
    _, expected_orders = _reference(rows)
    symbol = unique_symbol("EURUSD")
    quotes = _quotes(symbol, rows)
    await _publish(bus, quotes, shards=1)
    strategies = tmp_path / "strategies.toml"
    strategies.write_text(
        f'name = "desk_{unique_id("x").split("-")[1]}"\n'
        '[[strategy]]\nid = "bad"\nclass = "tests.support.strategies:RaisesAfter"\n'
        '[[strategy]]\nid = "sma_cross"\nclass = "sma_cross"\n'
        '[[strategy]]\nid = "mr"\nclass = "mean_reversion"\nparams = { window = 30, entry = 1.5 }\n'
        f'symbols = ["{symbol}"]\n'
    )
    config = StrategyConfig(nats_url=nats_url, heartbeat_ms=100, config=str(strategies))

    async with running_service(app.run, config, heartbeats) as strategy:
        counters = await strategy.wait_for_counter("handled", len(quotes))

    assert (counters["strategies"], counters["strategies_stopped"], counters["strategies_failed"]) == (3, 1, 1)
    orders = decode_all(
        await stream_messages(bus.js, "RRR_CMD", subjects.order_command(symbol, 1)), order_command_decoder
    )
    # sma_cross sends exactly what it sends alone; mean_reversion its own orders, under its own id.
    _check_orders([o for o in orders if o.strategy == "sma_cross"], expected_orders, quotes)
    assert {o.strategy for o in orders} == {"sma_cross", "mr"}
    assert all(o.id.startswith("mr-") for o in orders if o.strategy == "mr")
