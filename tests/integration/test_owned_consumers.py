"""Consumers that own their stream position (no acknowledgements): nothing skipped, nothing handled twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nats.aio.msg import Msg

from rrr.shared import subjects
from rrr.shared.bus import DLQ_SUBJECT, MARKET_DATA_STREAM, Bus, Consumer, Delivery, Rejected
from rrr.shared.errors import TransientError
from rrr.shared.messages import MarketData, QuoteBatch, QuoteRow, market_data_decoder
from tests.support.factories import unique_id, unique_symbol
from tests.support.streams import stream_messages
from tests.support.waiting import wait_until


async def test_a_slow_owner_behind_a_backlog_handles_each_message_once_in_stream_order_and_drops_none(
    bus: Bus,
) -> None:
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
        # A slow handler (a busy database, say): the backlog waits on the client, held back by flow control.
        await asyncio.sleep(0.005)

    consumer: Consumer[MarketData] = Consumer(
        MARKET_DATA_STREAM, f"slow-{source}", subject, market_data_decoder, _handle,
        batch_size=4, start_seq=sent[0], shards=1, acks=False,
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
    assert bus.counters.slow_consumer_drops == 0


class _DeadLetterOutageBus(Bus):
    """A bus whose first dead letter meets an outage of the dead-letter stream (TransientError)."""

    failures = 1

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        if self.failures:
            self.failures -= 1
            raise TransientError("the dead-letter stream is away (a test's outage)")
        await super().dead_letter(msg, reason)


async def test_a_refusal_stored_after_an_outage_never_runs_the_handler_twice(nats_url: str, bus: Bus) -> None:
    source = unique_id("dlq").replace("-", "_").lower()[:30]
    symbol = unique_symbol("DLQO")
    subject = subjects.quote_batch(0, source)
    row = QuoteRow(f"{source}:1", symbol, 1, 1, 2, 0)
    seq = (await bus.publish_persistent(subject, QuoteBatch(id=f"{source}:1", ts_event=1, ts_init=1,
                                                            source=source, quotes=[row]))).seq  # fmt: skip
    calls: list[int] = []

    async def _refuse_all(batch: Sequence[Delivery[MarketData]]) -> list[Rejected]:
        calls.extend(d.seq for d in batch)
        return [Rejected(d, "refused by the test", retry=False) for d in batch]

    consumer: Consumer[MarketData] = Consumer(
        MARKET_DATA_STREAM, f"dlqo-{source}", subject, market_data_decoder, _refuse_all,
        start_seq=seq, shards=1, acks=False,
    )  # fmt: skip
    owner = await _DeadLetterOutageBus.connect(nats_url, service="test", name=unique_id("dlqo"))
    stop = asyncio.Event()
    task = asyncio.create_task(owner.consume(consumer, stop))
    try:
        await wait_until(lambda: owner.counters.dead_lettered >= 1, 30, "the dead letter stored", watch=[task])
    finally:
        stop.set()
        await task
        await owner.close()
    assert calls == [seq]
    assert (owner.counters.transient_errors, owner.counters.handler_rejected) == (1, 1)
    letters = [m for m in await stream_messages(bus.js, "RRR_DLQ") if m.headers.get(DLQ_SUBJECT) == subject]
    assert len(letters) == 1
