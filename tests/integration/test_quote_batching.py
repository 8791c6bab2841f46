"""Natural batching of quotes (rrr.shared.bus.QuoteBatcher) and batches of acknowledged publishes, against a
real nats-server."""

from __future__ import annotations

from collections.abc import Awaitable

import pytest
from nats.aio.msg import Msg
from nats.js.errors import NoStreamResponseError

from rrr.shared import subjects
from rrr.shared.bus import Bus, QuoteBatcher
from rrr.shared.errors import InvalidSubjectError
from rrr.shared.messages import Quote, QuoteBatch, QuoteRow, market_data_decoder
from tests.support.factories import unique_id, unique_symbol
from tests.support.streams import count_quotes, stored_quotes
from tests.support.waiting import wait_until


async def _listen(bus: Bus, source: str) -> list[tuple[str, QuoteBatch]]:
    got: list[tuple[str, QuoteBatch]] = []

    async def _on(msg: Msg) -> None:
        batch = market_data_decoder.decode(msg.data)
        assert isinstance(batch, QuoteBatch)
        got.append((msg.subject, batch))

    await bus.nc.subscribe(f"md.quotes.*.{source}", cb=_on)
    await bus.nc.flush()
    return got


def _row(symbol: str, n: int) -> QuoteRow:
    return QuoteRow(f"{symbol}:{n}", symbol, 1_000 + n, 10_000 + n, 10_002 + n, 4)


async def test_quotes_made_in_one_turn_go_out_as_one_batch_per_shard_in_their_order(bus: Bus) -> None:
    source = unique_id("b").replace("-", "_").lower()[:30]
    got = await _listen(bus, source)
    zero, one = unique_symbol("BZ", shard=0, shards=2), unique_symbol("BO", shard=1, shards=2)
    batcher = QuoteBatcher(bus, source, 2, batch_id_prefix=f"{source}-run")
    rows = [_row(zero, 1), _row(one, 2), _row(zero, 3), _row(one, 4), _row(zero, 5)]
    for row in rows:
        batcher.add(row)
    await batcher.close()
    await wait_until(lambda: len(got) >= 2, 5, "two batches")

    assert sorted((subject, [r.id for r in batch.quotes]) for subject, batch in got) == [
        (subjects.quote_batch(0, source), [rows[0].id, rows[2].id, rows[4].id]),
        (subjects.quote_batch(1, source), [rows[1].id, rows[3].id]),
    ]
    assert (batcher.counters.quotes, batcher.counters.batches, batcher.counters.dropped) == (5, 2, 0)

    # A quote after a quiet spell goes out alone, at once.
    batcher.add(_row(zero, 6))
    await batcher.close()
    await wait_until(lambda: len(got) >= 3, 5, "a third batch")
    assert [r.id for r in got[2][1].quotes] == [f"{zero}:6"]
    assert len({batch.id for _, batch in got}) == 3


async def test_a_turn_of_more_quotes_than_a_batch_holds_goes_out_in_full_batches(bus: Bus) -> None:
    source = unique_id("m").replace("-", "_").lower()[:30]
    got = await _listen(bus, source)
    symbol = unique_symbol("BM")
    batcher = QuoteBatcher(bus, source, 1, batch_id_prefix=f"{source}-run", max_rows=4)
    for n in range(10):
        batcher.add(_row(symbol, n))
    await batcher.close()
    await wait_until(lambda: sum(len(b.quotes) for _, b in got) >= 10, 5, "ten quotes")
    assert [len(batch.quotes) for _, batch in got] == [4, 4, 2]
    assert [r.id for _, batch in got for r in batch.quotes] == [f"{symbol}:{n}" for n in range(10)]


@pytest.mark.parametrize("source", ["Sim", "a.b", "x>", ""])
def test_a_source_that_cannot_be_a_subject_token_is_refused_at_once(bus: Bus, source: str) -> None:
    with pytest.raises(InvalidSubjectError, match="source name"):
        QuoteBatcher(bus, source, 1, batch_id_prefix="p")


async def test_a_persistent_publish_no_stream_captures_fails_at_once_and_leaves_nothing_pending(bus: Bus) -> None:
    items = [bus.prepare(f"nostream.{n}", _row_quote(n)) for n in range(3)]
    with pytest.raises(NoStreamResponseError):
        await bus.publish_persistent_many(items, ack_timeout_s=30)
    # Stored ones in the same call are acknowledged in order, with their stream sequences.
    acks = await bus.publish_persistent_acks([bus.prepare(subjects.quote("ACKS", 1), _row_quote(n)) for n in (1, 2)])
    assert [a.stream for a in acks] == ["RRR_MD", "RRR_MD"]
    assert acks[1].seq == acks[0].seq + 1
    assert bus._ack_mux is not None
    assert bus._ack_mux.pending == {}


def _row_quote(n: int) -> Quote:
    return _row("ACKS", n).to_quote(1)


async def test_a_burst_larger_than_the_streams_largest_message_is_stored_whole_in_batches_that_fit(
    bus: Bus,
) -> None:
    # 2,000 quotes with long ids in one turn: one batch would be over 200 KB, and the market-data stream
    # takes 64 KiB; a core publish of it would be refused by the stream without a word.
    source = unique_id("big").replace("-", "_").lower()[:30]
    symbol = unique_symbol("BIG")
    batcher = QuoteBatcher(bus, source, 1, batch_id_prefix=f"{source}-run")
    for n in range(2000):
        batcher.add(QuoteRow(f"{source}:{'x' * 60}:{n}", symbol, 1_000 + n, 10_000, 10_002, 4))
    await batcher.close()

    async def _stored() -> int:
        return await count_quotes(bus.js, [symbol])

    await wait_until(lambda: _at_least(_stored(), 2000), 10, "every quote in RRR_MD")
    assert batcher.counters.quotes == 2000
    assert batcher.counters.batches > 1
    assert [q.quote.id.rsplit(":", 1)[-1] for q in await stored_quotes(bus.js, [symbol])] == [
        str(n) for n in range(2000)
    ]


async def _at_least(count: Awaitable[int], least: int) -> bool:
    return await count >= least


async def test_quotes_made_while_a_batch_awaits_its_acknowledgement_wait_and_go_out_together_after_it(
    bus: Bus,
) -> None:
    source = unique_id("ack").replace("-", "_").lower()[:30]
    symbol = unique_symbol("ACK")
    got = await _listen(bus, source)
    batcher = QuoteBatcher(bus, source, 1, batch_id_prefix=f"{source}-run")
    batcher.add(_row(symbol, 0))
    # Polled every turn of the loop: the batch is published and its acknowledgement not back yet.
    await wait_until(lambda: batcher.in_flight, 5, "the first batch in flight", interval_s=0)
    for n in range(1, 10):
        batcher.add(_row(symbol, n))
    assert batcher.counters.batches == 0  # nothing acknowledged yet: the nine wait
    await batcher.close()

    assert (batcher.counters.batches, batcher.counters.quotes, batcher.in_flight) == (2, 10, 0)
    await wait_until(lambda: len(got) == 2, 5, "both batches on the bus")
    assert [[q.id for q in batch.quotes] for _, batch in got] == [
        [f"{symbol}:0"],
        [f"{symbol}:{n}" for n in range(1, 10)],
    ]


async def test_a_batch_the_stream_refuses_is_counted_dropped_not_sent(bus: Bus) -> None:
    # A batcher told the stream takes 1 MB (it takes 64 KiB): a 200 KB batch goes out whole, and is refused.
    source = unique_id("ref").replace("-", "_").lower()[:30]
    symbol = unique_symbol("REF")
    batcher = QuoteBatcher(bus, source, 1, batch_id_prefix=f"{source}-run", max_bytes=1_000_000)
    for n in range(2000):
        batcher.add(QuoteRow(f"{source}:{'x' * 60}:{n}", symbol, 1_000 + n, 10_000, 10_002, 4))
    await batcher.close()

    assert (batcher.counters.quotes, batcher.counters.batches, batcher.counters.dropped) == (0, 0, 2000)
    assert await count_quotes(bus.js, [symbol]) == 0
