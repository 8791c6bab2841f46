"""Consumers that own their stream position (no acknowledgements): nothing skipped, nothing handled twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from rrr.shared import subjects
from rrr.shared.bus import MARKET_DATA_STREAM, Bus, Consumer, Delivery
from rrr.shared.messages import MarketData, QuoteBatch, QuoteRow, market_data_decoder
from tests.support.factories import unique_id, unique_symbol
from tests.support.waiting import wait_until


async def test_a_slow_owner_whose_client_drops_messages_still_handles_each_once_in_stream_order(bus: Bus) -> None:
    source = unique_id("slow").replace("-", "_").lower()[:30]
    symbol = unique_symbol("SLOW")
    subject = subjects.quote_batch(0, source)
    sent = []
    for n in range(300):
        batch = QuoteBatch(
            id=f"{source}:{n}",
            ts_event=n,
            ts_init=n,
            source=source,
            quotes=[QuoteRow(f"{source}:{n}", symbol, n, 1, 2, 0)],
        )
        sent.append((await bus.publish_persistent(subject, batch)).seq)
    seen: list[int] = []

    async def _handle(batch: Sequence[Delivery[MarketData]]) -> None:
        seen.extend(d.seq for d in batch)
        # A slow handler (a busy database, say): the client's small queue overflows meanwhile.
        await asyncio.sleep(0.005)

    consumer: Consumer[MarketData] = Consumer(
        MARKET_DATA_STREAM, f"slow-{source}", subject, market_data_decoder, _handle,
        batch_size=4, start_seq=sent[0], shards=1, acks=False, pending_msgs_max=8,
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume(consumer, stop))
    try:
        await wait_until(
            lambda: len(set(seen)) >= len(sent), 60, "every message handled", watch=[task],
            describe=lambda: f"{len(seen)} handled, {len(set(seen))} distinct",
        )  # fmt: skip
    finally:
        stop.set()
        await task
    assert seen == sent
    assert bus.counters.slow_consumer_drops >= 1
